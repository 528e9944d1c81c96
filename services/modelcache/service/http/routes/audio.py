"""OpenAI-compatible speech-to-text: /v1/audio/transcriptions and /v1/audio/translations."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from modelcache.service.engines.base import Deltas, Transcript
from modelcache.service.http.disconnect import unless_disconnected
from modelcache.service.http.errors import ApiError, error_event
from modelcache.service.http.routes.common import ERRORS, find_model, read_upload
from modelcache.service.http.state import get_state

router = APIRouter(tags=["audio"])

Format = Literal["json", "text", "srt", "verbose_json", "vtt"]


def _timestamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_srt(t: Transcript) -> str:
    blocks = [
        f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text.strip()}\n"
        for i, s in enumerate(t.segments, start=1)
    ]
    return "\n".join(blocks)


def to_vtt(t: Transcript) -> str:
    cues = [f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text.strip()}\n" for s in t.segments]
    return "WEBVTT\n\n" + "\n".join(cues)


def render(t: Transcript, fmt: str, granularities: set[str]) -> Response:
    if fmt == "text":
        return PlainTextResponse(t.text + "\n")
    if fmt == "srt":
        return PlainTextResponse(to_srt(t), media_type="application/x-subrip")
    if fmt == "vtt":
        return PlainTextResponse(to_vtt(t), media_type="text/vtt")
    if fmt == "json":
        return JSONResponse({"text": t.text})
    body: dict = {"task": t.task, "language": t.language, "duration": round(t.duration, 3), "text": t.text}
    if "segment" in granularities or not granularities:
        body["segments"] = [
            {
                "id": s.id,
                "seek": 0,
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text,
                "tokens": s.tokens,
                "temperature": s.temperature,
                "avg_logprob": s.avg_logprob,
                "compression_ratio": s.compression_ratio,
                "no_speech_prob": s.no_speech_prob,
            }
            for s in t.segments
        ]
    if "word" in granularities:
        body["words"] = [{"word": w.word.strip(), "start": round(w.start, 3), "end": round(w.end, 3)} for w in t.words]
    return JSONResponse(body)


VAD_FIELDS = {"threshold": (0.0, 1.0), "prefix_padding_ms": (0, 10_000), "silence_duration_ms": (0, 10_000)}


async def chunking(request: Request, value: str | None) -> dict[str, Any] | None:
    """``chunking_strategy``: unset (one block), ``"auto"``, or a ``server_vad`` object given
    as JSON or as bracketed form fields (``chunking_strategy[type]``, as OpenAI's clients
    send it); the VAD options the model's process uses, or None."""
    form = await request.form()
    fields = {k[len("chunking_strategy[") : -1]: v for k, v in form.multi_items() if k.startswith("chunking_strategy[")}
    if value is None and not fields:
        return None
    if value == "auto" and not fields:
        return {}
    raw: Any = fields
    if value is not None:
        try:
            raw = json.loads(value)
        except ValueError:
            raw = None
    if not isinstance(raw, dict) or raw.get("type") != "server_vad":
        raise ApiError(
            400,
            'chunking_strategy must be "auto" or an object {"type": "server_vad", "threshold", '
            '"prefix_padding_ms", "silence_duration_ms"}',
            param="chunking_strategy",
        )
    options: dict[str, Any] = {}
    for key, given in raw.items():
        if key == "type":
            continue
        if key not in VAD_FIELDS:
            raise ApiError(400, f"chunking_strategy: unknown field {key!r}", param=f"chunking_strategy.{key}")
        low, high = VAD_FIELDS[key]
        try:
            number = float(given)
        except (TypeError, ValueError):
            number = math.nan
        if not low <= number <= high or (isinstance(low, int) and not number.is_integer()):
            raise ApiError(
                400, f"chunking_strategy.{key} must be a number from {low} to {high}", param=f"chunking_strategy.{key}"
            )
        options[key] = number if isinstance(low, float) else int(number)
    return options


def sse(event: dict) -> bytes:
    return b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n"


async def stream_events(items: AsyncGenerator) -> AsyncGenerator[bytes, None]:
    """OpenAI's transcript stream: a ``transcript.text.delta`` per decoded segment, then one
    ``transcript.text.done`` (or an ``error`` event when the request fails on the way)."""
    deltas = Deltas()
    async with aclosing(items):
        try:
            async for item in items:
                if isinstance(item, Transcript):
                    rest = deltas.rest(item.text)
                    if rest:
                        yield sse({"type": "transcript.text.delta", "delta": rest})
                    # no usage: OpenAI's done event counts tokens in and out, which Whisper has no honest figure for
                    yield sse({"type": "transcript.text.done", "text": item.text})
                elif delta := deltas.add(item.text):
                    yield sse({"type": "transcript.text.delta", "delta": delta})
        except Exception as exc:  # a fault after the answer began: the stream ends with an error event
            yield sse(error_event(exc))


async def _speech(
    request: Request,
    task: str,
    file: UploadFile | None,
    model: str | None,
    language: str | None,
    prompt: str | None,
    response_format: str,
    temperature: float,
    granularities: list[str],
    stream: bool = False,
    chunking_strategy: str | None = None,
) -> Response:
    state = get_state(request)
    entry = find_model(state, model, "speech-to-text")
    data = await read_upload(file)
    unknown = set(granularities) - {"segment", "word"}
    if unknown:
        raise ApiError(
            400,
            f"timestamp_granularities[] must be 'segment' or 'word', not {sorted(unknown)}",
            param="timestamp_granularities[]",
        )
    if granularities and response_format != "verbose_json":
        raise ApiError(
            400, "timestamp_granularities[] needs response_format=verbose_json", param="timestamp_granularities[]"
        )
    if language is not None and not (2 <= len(language) <= 3 and language.isalpha()):
        raise ApiError(400, f"language must be an ISO-639-1 code such as 'en', not {language!r}", param="language")
    if stream and response_format not in ("json", "text"):
        raise ApiError(
            400,
            "stream=true answers with transcript.text.delta events: response_format must be json or text",
            param="stream",
        )
    options = {
        "task": task,
        "language": language,
        "prompt": prompt,
        "temperature": temperature,
        "word_timestamps": "word" in granularities,
        "chunking": await chunking(request, chunking_strategy),
    }
    handle = state.handle(entry)
    if stream:
        items = handle.transcribe_stream(data, options)
        first = await unless_disconnected(request.receive, anext(items))  # refusals before it are plain errors
        return StreamingResponse(
            stream_events(_prepend(first, items)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    # decoded and transcribed in the model's process; stopped within a token step if given up
    transcript = await unless_disconnected(request.receive, handle.transcribe(data, options))
    return render(transcript, response_format, set(granularities))


async def _prepend(first: Any, rest: AsyncGenerator) -> AsyncGenerator:
    async with aclosing(rest):
        yield first
        async for item in rest:
            yield item


Temperature = Annotated[float, Form(ge=0.0, le=1.0)]
Stream = Annotated[bool, Form(description="answer with server-sent transcript.text.delta/done events")]
Chunking = Annotated[
    str | None,
    Form(description='"auto", or a server_vad object as JSON: cut the audio at silences (Silero VAD)'),
]


@router.post("/v1/audio/transcriptions", responses=ERRORS)
async def transcriptions(
    request: Request,
    file: Annotated[UploadFile, File()],
    model: Annotated[str | None, Form()] = None,
    language: Annotated[str | None, Form()] = None,
    prompt: Annotated[str | None, Form()] = None,
    response_format: Annotated[Format, Form()] = "json",
    temperature: Temperature = 0.0,
    timestamp_granularities: Annotated[list[str], Form(alias="timestamp_granularities[]")] = [],  # noqa: B006
    stream: Stream = False,
    chunking_strategy: Chunking = None,
) -> Response:
    return await _speech(
        request,
        "transcribe",
        file,
        model,
        language,
        prompt,
        response_format,
        temperature,
        timestamp_granularities,
        stream,
        chunking_strategy,
    )


@router.post("/v1/audio/translations", responses=ERRORS)
async def translations(
    request: Request,
    file: Annotated[UploadFile, File()],
    model: Annotated[str | None, Form()] = None,
    prompt: Annotated[str | None, Form()] = None,
    response_format: Annotated[Format, Form()] = "json",
    temperature: Temperature = 0.0,
    stream: Stream = False,
    chunking_strategy: Chunking = None,
) -> Response:
    return await _speech(
        request, "translate", file, model, None, prompt, response_format, temperature, [], stream, chunking_strategy
    )
