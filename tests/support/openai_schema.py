"""OpenAI's published response schemas (openai/openai-openapi), the yardstick for the
service's answers: ``validate(instance, "CreateEmbeddingResponse")``.

The schemas live in ``openai_schemas.json`` beside this file: the response and event
schemas the service answers with, and every schema they refer to, taken from the spec's
``components.schemas`` with descriptions and examples left out (the file's ``_source``
says which commit). To take them again from a newer spec:

    python -m tests.support.openai_schema --refresh /path/to/openapi.json
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path

import jsonschema

FILE = Path(__file__).with_name("openai_schemas.json")
ROOTS = [  # what the service answers with
    "CreateEmbeddingResponse",
    "ErrorResponse",
    "CreateTranscriptionResponseJson",
    "CreateTranscriptionResponseVerboseJson",
    "CreateTranslationResponseJson",
    "CreateTranslationResponseVerboseJson",
    "TranscriptTextDeltaEvent",
    "TranscriptTextDoneEvent",
    "RealtimeServerEventConversationItemInputAudioTranscriptionCompleted",
    "RealtimeServerEventConversationItemInputAudioTranscriptionDelta",
    "RealtimeServerEventConversationItemInputAudioTranscriptionFailed",
    "RealtimeServerEventError",
    "RealtimeServerEventInputAudioBufferCleared",
    "RealtimeServerEventInputAudioBufferCommitted",
    "RealtimeServerEventInputAudioBufferSpeechStarted",
    "RealtimeServerEventInputAudioBufferSpeechStopped",
    "CreateTranscriptionResponseStreamEvent",  # any of the stream's events, by its "type"
    "RealtimeServerEventTranscriptionSessionUpdated",
    "RealtimeBetaServerEventTranscriptionSessionCreated",  # the spec has no GA "created" for transcription
]
#: the schema of each realtime server event, by its ``type``
REALTIME_EVENTS = {
    "conversation.item.input_audio_transcription.completed": ROOTS[8],
    "conversation.item.input_audio_transcription.delta": ROOTS[9],
    "conversation.item.input_audio_transcription.failed": ROOTS[10],
    "error": ROOTS[11],
    "input_audio_buffer.cleared": ROOTS[12],
    "input_audio_buffer.committed": ROOTS[13],
    "input_audio_buffer.speech_started": ROOTS[14],
    "input_audio_buffer.speech_stopped": ROOTS[15],
}


@cache
def _schemas() -> dict:
    data = json.loads(FILE.read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def names() -> list[str]:
    return sorted(_schemas())


def validate(instance: object, name: str) -> None:
    """Raise AssertionError, naming the failing place, unless ``instance`` is valid."""
    schemas = _schemas()
    if name not in schemas:
        raise KeyError(f"no schema {name!r} in {FILE.name}")
    root = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": schemas}}
    validator = jsonschema.Draft202012Validator(root)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top)"
        raise AssertionError(f"not a valid {name} at {where}: {first.message}")


def _refresh(spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    components = spec["components"]["schemas"]

    def refs(node, found: set[str]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str):
                    found.add(value.rsplit("/", 1)[-1])
                else:
                    refs(value, found)
        elif isinstance(node, list):
            for value in node:
                refs(value, found)

    def bare(node):
        if isinstance(node, dict):
            dropped = ("description", "example", "examples", "title")
            return {k: bare(v) for k, v in node.items() if k not in dropped and not k.startswith("x-")}
        if isinstance(node, list):
            return [bare(v) for v in node]
        return node

    todo, kept = list(ROOTS), set()
    while todo:
        name = todo.pop()
        if name not in kept:
            kept.add(name)
            found: set[str] = set()
            refs(components[name], found)
            todo += sorted(found - kept)
    old = json.loads(FILE.read_text()).get("_source", {})
    out = {"_source": {**old, "path": spec_path.name}, **{n: bare(components[n]) for n in sorted(kept)}}
    FILE.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--refresh":
        raise SystemExit("usage: python -m tests.support.openai_schema --refresh PATH/openapi.json")
    _refresh(Path(sys.argv[2]))
