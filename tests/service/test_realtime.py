"""OpenAI's Realtime transcription over a WebSocket, against a real `modelcache serve` with
real Whisper tiny.en (faster-whisper): sessions driven from WAV files by scripts/realtime-client,
server VAD and manual commits, every kind of bad input, and the bounds."""

from __future__ import annotations

import base64
import importlib.machinery
import importlib.util
import io
import json
import time
from pathlib import Path

import httpx2
import numpy as np
import pytest

from tests.conftest import ROOT
from tests.support.openai_schema import REALTIME_EVENTS, validate
from tests.support.service import Service, start_service
from tests.support.whisper_ckpt import speak, wer

websockets = pytest.importorskip("websockets")
sf = pytest.importorskip("soundfile")
from websockets.sync.client import connect  # noqa: E402

pytestmark = pytest.mark.slow  # the tests use `modelcache serve`

PHRASES = [
    "Please call me tomorrow morning.",
    "The quick brown fox jumps over the lazy dog.",
    "It is going to rain in the afternoon.",
]
KEY = "realtime-test-key"


def client_module():
    """scripts/realtime-client, the client users run, as a module."""
    loader = importlib.machinery.SourceFileLoader("realtime_client", str(ROOT / "scripts" / "realtime-client"))
    spec = importlib.util.spec_from_loader("realtime_client", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rt(faster_whisper_volume: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("rt")
    (folder / "key").write_text(KEY + "\n")
    env = {
        **faster_whisper_volume,
        "MODELCACHE_API_KEY_FILE": str(folder / "key"),
        "MODELCACHE_REALTIME_SESSIONS": "2",
        "MODELCACHE_REALTIME_IDLE_SECONDS": "3",
        "MODELCACHE_REALTIME_BUFFER_SECONDS": "20",
    }
    service = start_service(env, folder / "rt.log")
    yield service
    service.stop()


def ws_url(service: Service, query: str = "intent=transcription") -> str:
    return service.url.replace("http://", "ws://") + f"/v1/realtime?{query}"


@pytest.fixture(scope="module")
def phrases_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The phrases with 1.5 s of silence before, between and after them (16 kHz WAV)."""
    folder = tmp_path_factory.mktemp("rt-speech")
    silence = np.zeros(24_000, np.float32)
    pieces = [silence]
    for i, text in enumerate(PHRASES):
        audio, _rate = sf.read(speak(text, folder / f"{i}.wav"), dtype="float32")
        pieces += [audio, silence]
    path = folder / "phrases.wav"
    sf.write(path, np.concatenate(pieces), 16_000, subtype="PCM_16")
    return path


def test_a_session_with_server_vad_gives_each_phrase_in_order(rt: Service, phrases_wav: Path) -> None:
    client = client_module()
    events: list[dict] = []
    result = client.run_session(ws_url(rt), client.read_wav(phrases_wav), key=KEY, speed=3.0, on_event=events.append)
    assert result["errors"] == [] and result["committed"] == len(PHRASES), events
    # tiny.en on one short synthetic phrase at a time: a word or two may be wrong, never the order
    for said, heard in zip(PHRASES, result["transcripts"], strict=True):
        assert wer(said, heard) <= 0.5, (said, heard)
    assert wer(" ".join(PHRASES), " ".join(result["transcripts"])) <= 0.35
    kinds = [e["type"] for e in events]
    # OpenAI's schemas, for every event but the session's description: the spec's session
    # object requires an ephemeral client secret, which a self-hosted service does not issue
    for event in events:
        if event["type"] not in ("transcription_session.created", "transcription_session.updated"):
            validate(event, REALTIME_EVENTS[event["type"]])
    assert kinds[:2] == ["transcription_session.created", "transcription_session.updated"]
    assert events[1]["session"]["turn_detection"]["type"] == "server_vad"
    # per phrase: started, stopped, committed, deltas, completed; the deltas add up to the transcript
    items = [e["item_id"] for e in events if e["type"] == "input_audio_buffer.committed"]
    for item in items:
        mine = [e for e in events if e.get("item_id") == item]
        order = [e["type"] for e in mine]
        assert order[:3] == [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
        ], order
        assert order[-1] == "conversation.item.input_audio_transcription.completed"
        deltas = "".join(e["delta"] for e in mine if e["type"].endswith("transcription.delta"))
        assert deltas == mine[-1]["transcript"]
        started, stopped = mine[0]["audio_start_ms"], mine[1]["audio_end_ms"]
        assert 0 <= started < stopped
        # as OpenAI counts them: the item is the audio from audio_start_ms (with the prefix
        # padding) to audio_end_ms (with the silence that ended the phrase)
        assert abs(mine[-1]["usage"]["seconds"] - (stopped - started) / 1000) < 0.05
    committed = [e for e in events if e["type"] == "input_audio_buffer.committed"]
    assert committed[0]["previous_item_id"] is None
    assert [c["previous_item_id"] for c in committed[1:]] == items[:-1]
    assert all(e["event_id"].startswith("event_") for e in events)
    # the time from each phrase's end to its transcript (a figure for scripts/bench, not a
    # bound here: the machine running the tests may be busy with other work)
    assert len(result["latency_s"]) == len(PHRASES) and all(0 < s < 60 for s in result["latency_s"])


def test_a_manual_commit_transcribes_the_whole_buffer(rt: Service, phrases_wav: Path) -> None:
    client = client_module()
    result = client.run_session(ws_url(rt), client.read_wav(phrases_wav), key=KEY, manual=True, speed=0)
    assert result["committed"] == 1 and result["errors"] == []
    assert wer(" ".join(PHRASES), result["transcripts"][0]) <= 0.3, result["transcripts"]


def receive_until(ws, kind: str | tuple[str, ...], timeout: float = 30) -> list[dict]:
    got = []
    deadline = time.monotonic() + timeout
    while True:
        event = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        got.append(event)
        if event["type"] in ((kind,) if isinstance(kind, str) else kind):
            return got


def pcm(seconds: float) -> str:
    return base64.b64encode(bytes(int(seconds * 24_000) * 2)).decode()


def test_bad_input_gets_error_events_and_the_session_goes_on(rt: Service, phrases_wav: Path) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    with connect(ws_url(rt), additional_headers=headers) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "transcription_session.created"
        cases = [
            ("not json at all", "invalid_json", None),
            (json.dumps([1, 2]), "invalid_event", "type"),
            (json.dumps({"type": "response.create"}), "invalid_event", "type"),
            (json.dumps({"type": "input_audio_buffer.append", "audio": "***"}), "invalid_value", "audio"),
            (
                json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"abc").decode()}),
                "invalid_value",
                "audio",
            ),
            (json.dumps({"type": "input_audio_buffer.append"}), "invalid_value", "audio"),
            (json.dumps({"type": "input_audio_buffer.commit"}), "input_audio_buffer_commit_empty", None),
            (
                json.dumps({"type": "transcription_session.update", "session": {"input_audio_format": "g711_ulaw"}}),
                "invalid_value",
                "session.input_audio_format",
            ),
            (
                json.dumps(
                    {"type": "transcription_session.update", "session": {"turn_detection": {"type": "semantic"}}}
                ),
                "invalid_value",
                "session.turn_detection",
            ),
            (
                json.dumps(
                    {
                        "type": "transcription_session.update",
                        "session": {"turn_detection": {"type": "server_vad", "threshold": 7}},
                    }
                ),
                "invalid_value",
                "session.turn_detection.threshold",
            ),
            (
                json.dumps(
                    {
                        "type": "transcription_session.update",
                        "session": {"input_audio_transcription": {"model": "acme/none"}},
                    }
                ),
                "model_not_found",
                "session.input_audio_transcription.model",
            ),
            (
                json.dumps({"type": "input_audio_buffer.append", "audio": pcm(21), "event_id": "mine"}),
                "input_audio_buffer_full",
                "audio",
            ),
        ]
        for message, code, param in cases:
            ws.send(message)
            event = json.loads(ws.recv(timeout=10))
            assert event["type"] == "error", (message[:60], event)
            assert event["error"]["code"] == code and event["error"]["param"] == param, (message[:60], event)
            assert event["error"]["type"] == "invalid_request_error" and event["error"]["message"]
            validate(event, "RealtimeServerEventError")
        assert event["error"]["event_id"] == "mine"  # the client's event id comes back with its error
        ws.send(b"\x00\x01binary")
        assert json.loads(ws.recv(timeout=10))["error"]["code"] == "invalid_event"
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (9 * 2**20)}))
        assert json.loads(ws.recv(timeout=10))["error"]["code"] == "message_too_large"
        # after all that, the session still transcribes
        client = client_module()
        update = {
            "turn_detection": None,
            "input_audio_transcription": {"language": "en", "prompt": "A weather report."},
        }
        ws.send(json.dumps({"type": "transcription_session.update", "session": update}))
        session = json.loads(ws.recv(timeout=10))["session"]
        assert session["turn_detection"] is None
        assert session["input_audio_transcription"] == {
            "model": "Systran/faster-whisper-tiny.en",
            "language": "en",
            "prompt": "A weather report.",
        }
        audio = client.read_wav(phrases_wav)
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()}))
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        got = receive_until(ws, "conversation.item.input_audio_transcription.completed", timeout=60)
        assert wer(" ".join(PHRASES), got[-1]["transcript"]) <= 0.3
        # an item too short to hold any speech fails on its own, in OpenAI's shape
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x01\x00").decode()}))
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        failed = receive_until(ws, "conversation.item.input_audio_transcription.failed")[-1]
        validate(failed, REALTIME_EVENTS[failed["type"]])
        assert failed["error"]["code"] == "invalid_input" and "no samples" in failed["error"]["message"]
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": pcm(1)}))
        ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "input_audio_buffer.cleared"
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        assert json.loads(ws.recv(timeout=10))["error"]["code"] == "input_audio_buffer_commit_empty"
        # the bound (20 s here) counts committed audio still waiting for the model too
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": pcm(15)}))
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": pcm(10)}))
        got = receive_until(ws, "error")
        assert (
            got[-1]["error"]["code"] == "input_audio_buffer_full"
            and "waiting for the model" in got[-1]["error"]["message"]
        )
        answered = (
            "conversation.item.input_audio_transcription.completed",
            "conversation.item.input_audio_transcription.failed",
        )
        receive_until(ws, answered, timeout=60)  # silence: whatever the model makes of it
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": pcm(10)}))  # answered: room again
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "input_audio_buffer.committed"


def test_the_session_cap_idle_timeout_and_key(rt: Service) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    with (
        connect(ws_url(rt), additional_headers=headers) as first,
        connect(ws_url(rt), subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"]) as second,
    ):
        assert json.loads(first.recv(timeout=10))["type"] == "transcription_session.created"
        assert json.loads(second.recv(timeout=10))["type"] == "transcription_session.created"
        with connect(ws_url(rt), additional_headers=headers) as third:
            refusal = json.loads(third.recv(timeout=10))
            assert refusal["type"] == "error" and refusal["error"]["code"] == "session_limit_reached"
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                third.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        # nothing sent for 3 s (MODELCACHE_REALTIME_IDLE_SECONDS): told, then closed
        event = json.loads(first.recv(timeout=10))
        assert event["error"]["code"] == "session_idle"
    # a missing or wrong key: refused before the handshake, as the HTTP routes refuse it
    for headers, protocols in (
        (None, None),
        ({"Authorization": "Bearer wrong"}, None),
        (None, ["realtime", "openai-insecure-api-key.wrong"]),
    ):
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            with connect(ws_url(rt), additional_headers=headers, subprotocols=protocols):
                pass
        response = refused.value.response
        assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
        body = json.loads(bytes(response.body or b""))
        validate(body, "ErrorResponse")
        assert body["error"]["code"] == "invalid_api_key"
    with connect(ws_url(rt, "intent=conversation"), additional_headers={"Authorization": f"Bearer {KEY}"}) as other:
        assert json.loads(other.recv(timeout=10))["error"]["code"] == "unsupported_intent"
    # the HTTP routes serve as before, with the same key
    speech = io.BytesIO()
    sf.write(speech, np.zeros(16_000, np.float32), 16_000, format="WAV", subtype="PCM_16")
    answer = httpx2.post(
        f"{rt.url}/v1/audio/transcriptions",
        headers={"Authorization": f"Bearer {KEY}"},
        files={"file": ("s.wav", speech.getvalue())},
        timeout=60,
    )
    assert answer.status_code == 200
