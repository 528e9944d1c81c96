"""Streamed transcription (``stream=true``: OpenAI's transcript.text.delta/done events) and
long audio cut at silences (``chunking_strategy``), on both engines with real Whisper tiny.en,
through the official openai client where it has the call."""

from __future__ import annotations

import io
import json
import time

import httpx2
import numpy as np
import pytest

from tests.service.test_pressure import assert_work_stops, tiled, worker_pid
from tests.support.openai_schema import validate
from tests.support.service import Service, counter, start_service
from tests.support.whisper_ckpt import speak, wer

openai = pytest.importorskip("openai")  # the dev extra
sf = pytest.importorskip("soundfile")

pytestmark = pytest.mark.slow  # the tests use `modelcache serve`

PHRASES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call me tomorrow morning.",
    "It is going to rain in the afternoon, so bring an umbrella.",
]


@pytest.fixture(params=["openai-whisper", "faster-whisper"])
def asr(request) -> Service:
    return request.getfixturevalue("server" if request.param == "openai-whisper" else "fw_server")


@pytest.fixture(scope="module")
def phrases(speech, tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, str, list[float]]:
    """The phrases spoken one after the other with 2 s of silence between them (WAV), their
    text, and where each phrase starts (seconds)."""
    folder = tmp_path_factory.mktemp("phrases")
    pieces, starts, at = [], [], 0.0
    for i, text in enumerate(PHRASES):
        audio, rate = sf.read(speak(text, folder / f"{i}.wav"), dtype="float32")
        starts.append(at)
        pieces += [audio, np.zeros(2 * rate, np.float32)]
        at += (len(audio) + 2 * rate) / rate
    out = io.BytesIO()
    sf.write(out, np.concatenate(pieces), 16_000, format="WAV", subtype="PCM_16")
    return out.getvalue(), " ".join(PHRASES), starts


def events(response: httpx2.Response) -> list[dict]:
    """The server-sent events of a stream, in order (``data:`` lines only)."""
    found = []
    for block in response.text.split("\n\n"):
        lines = [line for line in block.splitlines() if line]
        if lines:
            assert all(line.startswith("data: ") for line in lines), block
            found.append(json.loads("".join(line[len("data: ") :] for line in lines)))
    return found


def post(service: Service, audio: bytes, route: str = "transcriptions", **data) -> httpx2.Response:
    return httpx2.post(
        f"{service.url}/v1/audio/{route}",
        files={"file": ("speech.wav", audio)},
        data={"model": "whisper-1", **data},
        timeout=300,
    )


def assert_stream_matches(service: Service, audio: bytes, route: str = "transcriptions", **data) -> list[dict]:
    """Deltas that add up to the done text, which is the unstreamed answer's text."""
    streamed = post(service, audio, route, stream="true", **data)
    assert streamed.status_code == 200, streamed.text
    assert streamed.headers["content-type"].startswith("text/event-stream")
    got = events(streamed)
    kinds = [e["type"] for e in got]
    assert kinds[-1] == "transcript.text.done" and set(kinds[:-1]) == {"transcript.text.delta"}, kinds
    done = got[-1]
    assert "".join(e["delta"] for e in got[:-1]) == done["text"]
    for event in got:  # OpenAI's own schemas of the stream events
        validate(event, "TranscriptTextDeltaEvent" if event["type"].endswith("delta") else "TranscriptTextDoneEvent")
    plain = post(service, audio, route, **data)
    assert plain.status_code == 200 and plain.json()["text"] == done["text"]
    validate(
        plain.json(),
        "CreateTranscriptionResponseJson" if route == "transcriptions" else "CreateTranslationResponseJson",
    )
    return got


def test_streamed_deltas_add_up_to_the_unstreamed_answer(asr: Service, speech, phrases) -> None:
    audio, text = speech
    got = assert_stream_matches(asr, audio)
    assert wer(text, got[-1]["text"]) <= 0.3
    assert_stream_matches(asr, audio, "translations")
    # speech to the last sample: its chunk ends at the recording's end (openai-whisper never
    # finished a clip that ends past its last mel frame)
    got = assert_stream_matches(asr, audio, chunking_strategy="auto")
    assert wer(text, got[-1]["text"]) <= 0.3
    # long audio cut at silences: a delta per phrase or more, before the done event
    audio, text, _starts = phrases
    got = assert_stream_matches(asr, audio, chunking_strategy="auto")
    assert len(got) - 1 >= len(PHRASES) and wer(text, got[-1]["text"]) <= 0.3


def test_the_official_client_iterates_the_stream(fw_server: Service, speech) -> None:
    audio, text = speech
    client = openai.OpenAI(base_url=f"{fw_server.url}/v1", api_key="unused", max_retries=0, timeout=120)
    stream = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", audio), stream=True)
    received = list(stream)
    assert [e.type for e in received][-1] == "transcript.text.done"
    deltas = [e.delta for e in received if e.type == "transcript.text.delta"]
    assert deltas and "".join(deltas) == received[-1].text and wer(text, received[-1].text) <= 0.3


def test_chunked_timestamps_stay_on_the_recording(asr: Service, phrases) -> None:
    """Cut at the silences, each phrase keeps its place in time: verbose_json, srt and vtt
    give the times of the whole recording, not of the chunks."""
    audio, text, starts = phrases
    client = openai.OpenAI(base_url=f"{asr.url}/v1", api_key="unused", max_retries=0, timeout=120)
    for strategy in ("auto", {"type": "server_vad", "threshold": 0.5, "silence_duration_ms": 800}):
        verbose = client.audio.transcriptions.create(
            model="whisper-1",
            file=("speech.wav", audio),
            response_format="verbose_json",
            timestamp_granularities=["segment", "word"],
            chunking_strategy=strategy,
        )
        assert wer(text, verbose.text) <= 0.3, verbose.text
        validate(verbose.model_dump(exclude_unset=True), "CreateTranscriptionResponseVerboseJson")
        times = [(s.start, s.end) for s in verbose.segments]
        assert all(a <= b for a, b in times) and times == sorted(times)
        assert times[-1][1] <= verbose.duration + 0.5
        for phrase, start in zip(PHRASES[1:], starts[1:], strict=True):
            first_word = phrase.split()[0].strip(".,").lower()
            word = next(w for w in verbose.words if w.start >= start - 0.5)
            assert word.word.strip(".,").lower() == first_word and abs(word.start - start) < 1.0, (word, start)
    srt = post(asr, audio, chunking_strategy="auto", response_format="srt").text
    last = srt.strip().split("\n\n")[-1].splitlines()[1]
    assert last.startswith(f"00:00:{int(starts[-1]) // 10}"), srt  # the last cue is at the last phrase


def test_server_vad_as_form_fields_or_json_and_bad_strategies(fw_server: Service, phrases) -> None:
    audio, text, _starts = phrases
    as_json = post(fw_server, audio, chunking_strategy=json.dumps({"type": "server_vad", "threshold": 0.6}))
    as_fields = post(
        fw_server, audio, **{"chunking_strategy[type]": "server_vad", "chunking_strategy[threshold]": "0.6"}
    )
    assert as_json.status_code == as_fields.status_code == 200 and as_json.json() == as_fields.json()
    assert wer(text, as_json.json()["text"]) <= 0.3
    for bad, param in [
        ("sometimes", "chunking_strategy"),
        (json.dumps({"type": "client_vad"}), "chunking_strategy"),
        (json.dumps({"type": "server_vad", "threshold": 2}), "chunking_strategy.threshold"),
        (json.dumps({"type": "server_vad", "silence_duration_ms": "long"}), "chunking_strategy.silence_duration_ms"),
        (json.dumps({"type": "server_vad", "padding": 3}), "chunking_strategy.padding"),
    ]:
        refused = post(fw_server, audio, chunking_strategy=bad)
        assert refused.status_code == 400, bad
        validate(refused.json(), "ErrorResponse")
        assert refused.json()["error"]["param"] == param and refused.json()["error"]["type"] == "invalid_request_error"
    for fmt in ("srt", "vtt", "verbose_json"):
        refused = post(fw_server, audio, stream="true", response_format=fmt)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "stream"
    silence = io.BytesIO()
    sf.write(silence, np.zeros(16_000 * 5, np.float32), 16_000, format="WAV", subtype="PCM_16")
    quiet = post(fw_server, silence.getvalue(), chunking_strategy="auto", response_format="verbose_json")
    assert quiet.status_code == 200 and quiet.json()["text"] == "" and quiet.json()["segments"] == []
    validate(quiet.json(), "CreateTranscriptionResponseVerboseJson")
    undecodable = post(fw_server, b"not audio at all", stream="true")  # refused before the stream begins
    assert undecodable.status_code == 415 and undecodable.json()["error"]["code"] == "unsupported_media"


def asr_id(service: Service) -> str:
    return httpx2.get(f"{service.url}/v1/models/whisper-1").json()["id"]


@pytest.fixture(scope="module")
def hurried(faster_whisper_volume: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    """faster-whisper with a 12 s deadline per request."""
    service = start_service(
        {**faster_whisper_volume, "MODELCACHE_REQUEST_TIMEOUT": "12"}, tmp_path_factory.mktemp("logs") / "hurried.log"
    )
    yield service
    service.stop()


def test_a_deadline_ends_the_stream_with_an_error_event(hurried: Service, speech) -> None:
    very_long = tiled(speech, 480)
    started = time.monotonic()
    response = post(hurried, very_long, stream="true", chunking_strategy="auto")
    assert response.status_code == 200 and time.monotonic() - started < 30
    got = events(response)
    assert got[0]["type"] == "transcript.text.delta"  # words came before the deadline
    assert got[-1]["type"] == "error" and got[-1]["error"]["code"] == "timeout", got[-1]
    validate({"error": got[-1]["error"]}, "ErrorResponse")
    assert "transcript.text.done" not in [e["type"] for e in got]
    assert counter(hurried, "modelcache_cancelled_total", reason="deadline") >= 1
    assert_work_stops(worker_pid(hurried, asr_id(hurried)))


def test_a_client_that_leaves_a_stream_stops_the_decoding(hurried: Service, speech) -> None:
    very_long = tiled(speech, 480)
    before = counter(hurried, "modelcache_cancelled_total", reason="disconnect")
    with httpx2.Client(timeout=30) as client:
        with client.stream(
            "POST",
            f"{hurried.url}/v1/audio/transcriptions",
            files={"file": ("long.wav", very_long)},
            data={"model": "whisper-1", "stream": "true", "chunking_strategy": "auto"},
        ) as response:
            assert response.status_code == 200
            first = next(response.iter_lines())
            assert first.startswith("data: ") and "transcript.text.delta" in first
    # the connection is closed with the decoding under way
    deadline = time.monotonic() + 10
    while counter(hurried, "modelcache_cancelled_total", reason="disconnect") == before:
        assert time.monotonic() < deadline, "the stream's decoding was not given up"
        time.sleep(0.2)
    assert_work_stops(worker_pid(hurried, asr_id(hurried)))
    ok = post(hurried, tiled(speech, 5))
    assert ok.status_code == 200  # the model serves the next request
