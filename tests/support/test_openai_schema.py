"""The OpenAI schema helper itself: valid answers pass, broken ones fail with the place named."""

from __future__ import annotations

import pytest

from tests.support.openai_schema import REALTIME_EVENTS, ROOTS, names, validate


def test_every_root_and_what_it_refers_to_is_kept() -> None:
    assert set(ROOTS) <= set(names())
    assert set(REALTIME_EVENTS.values()) <= set(ROOTS)


def test_embeddings_and_errors() -> None:
    good = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
        "model": "m",
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
    }
    validate(good, "CreateEmbeddingResponse")
    with pytest.raises(AssertionError, match="data/0/index"):
        validate(
            {**good, "data": [{"object": "embedding", "index": "zero", "embedding": [0.1]}]}, "CreateEmbeddingResponse"
        )
    validate({"error": {"message": "m", "type": "invalid_request_error", "param": None, "code": None}}, "ErrorResponse")
    with pytest.raises(AssertionError, match="message"):
        validate({"error": {"type": "invalid_request_error", "param": None, "code": None}}, "ErrorResponse")


def test_stream_events() -> None:
    validate({"type": "transcript.text.delta", "delta": "Hi"}, "TranscriptTextDeltaEvent")
    validate({"type": "transcript.text.done", "text": "Hi"}, "TranscriptTextDoneEvent")
    with pytest.raises(AssertionError):
        validate(
            {"type": "transcript.text.done", "text": "Hi", "usage": {"type": "duration", "seconds": 3}},
            "TranscriptTextDoneEvent",
        )
    with pytest.raises(KeyError):
        validate({}, "NoSuchSchema")
