"""The helper that checks answers against OpenAI's published schemas (tests/support/openai_schema.py):
its data file is whole, and hand-made answers pass or fail as OpenAI's spec says."""

from __future__ import annotations

import json

import pytest

from tests.support.openai_schema import FILE, ROOTS, names, validate


def _refs(node: object) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def test_the_file_holds_every_schema_it_refers_to_and_says_where_it_came_from() -> None:
    data = json.loads(FILE.read_text())
    source = data["_source"]
    assert source["repository"] == "https://github.com/openai/openai-openapi"
    assert len(source["commit"]) == 40 and source["path"] == "openapi.json" and "MIT" in source["licence"]
    assert names() == sorted(k for k in data if not k.startswith("_"))
    assert set(ROOTS) <= set(names())
    refs = _refs({k: v for k, v in data.items() if k != "_source"})
    assert refs and all(r.startswith("#/components/schemas/") for r in refs)
    assert {r.rsplit("/", 1)[-1] for r in refs} <= set(names())


VERBOSE = {
    "task": "transcribe",  # not in the spec's schema; extra keys are allowed
    "language": "english",
    "duration": 4.2,
    "text": "Hello there.",
    "segments": [
        {
            "id": 0,
            "seek": 0,
            "start": 0.0,
            "end": 1.5,
            "text": " Hello there.",
            "tokens": [50363, 2425],
            "temperature": 0.0,
            "avg_logprob": -0.3,
            "compression_ratio": 0.9,
            "no_speech_prob": 0.01,
        }
    ],
    "words": [{"word": "Hello", "start": 0.0, "end": 0.5}, {"word": "there.", "start": 0.5, "end": 1.5}],
}


def test_verbose_transcriptions() -> None:
    validate(VERBOSE, "CreateTranscriptionResponseVerboseJson")
    validate({k: v for k, v in VERBOSE.items() if k != "words"}, "CreateTranslationResponseVerboseJson")
    segment = {k: v for k, v in VERBOSE["segments"][0].items() if k != "no_speech_prob"}
    with pytest.raises(AssertionError, match="at segments/0: 'no_speech_prob' is a required property"):
        validate({**VERBOSE, "segments": [segment]}, "CreateTranscriptionResponseVerboseJson")
    with pytest.raises(AssertionError, match="at words/1/start"):
        validate(
            {**VERBOSE, "words": [VERBOSE["words"][0], {"word": "x", "start": "0.5", "end": 1.0}]},
            "CreateTranscriptionResponseVerboseJson",
        )
    with pytest.raises(AssertionError, match=r"at \(top\): 'duration' is a required property"):
        validate({"language": "en", "text": ""}, "CreateTranscriptionResponseVerboseJson")


def test_json_answers_and_stream_events() -> None:
    validate({"text": "Hello."}, "CreateTranscriptionResponseJson")
    with pytest.raises(AssertionError, match="at text"):
        validate({"text": None}, "CreateTranslationResponseJson")
    any_event = "CreateTranscriptionResponseStreamEvent"
    validate({"type": "transcript.text.delta", "delta": " Hel"}, any_event)
    validate({"type": "transcript.text.done", "text": "Hello."}, any_event)
    with pytest.raises(AssertionError):
        validate({"type": "transcript.text.delta"}, any_event)


def test_errors() -> None:
    validate(
        {"error": {"message": "no", "type": "invalid_request_error", "param": "input[0]", "code": None}},
        "ErrorResponse",
    )
    with pytest.raises(AssertionError, match="at error/param"):
        validate(
            {"error": {"message": "no", "type": "invalid_request_error", "param": 3, "code": None}}, "ErrorResponse"
        )
    with pytest.raises(AssertionError, match="'error' is a required property"):
        validate({"message": "no"}, "ErrorResponse")
    with pytest.raises(KeyError, match="NoSuchSchema"):
        validate({}, "NoSuchSchema")
