"""OpenAI-compatible speech-to-text: /v1/audio/transcriptions and /v1/audio/translations."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from modelcache.service.engines.base import Transcript
from modelcache.service.http.disconnect import unless_disconnected
from modelcache.service.http.errors import ApiError
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
    options = {
        "task": task,
        "language": language,
        "prompt": prompt,
        "temperature": temperature,
        "word_timestamps": "word" in granularities,
    }
    # decoded and transcribed in the model's process; stopped within a token step if given up
    transcript = await unless_disconnected(request.receive, state.handle(entry).transcribe(data, options))
    return render(transcript, response_format, set(granularities))


Temperature = Annotated[float, Form(ge=0.0, le=1.0)]


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
) -> Response:
    return await _speech(
        request, "transcribe", file, model, language, prompt, response_format, temperature, timestamp_granularities
    )


@router.post("/v1/audio/translations", responses=ERRORS)
async def translations(
    request: Request,
    file: Annotated[UploadFile, File()],
    model: Annotated[str | None, Form()] = None,
    prompt: Annotated[str | None, Form()] = None,
    response_format: Annotated[Format, Form()] = "json",
    temperature: Temperature = 0.0,
) -> Response:
    return await _speech(request, "translate", file, model, None, prompt, response_format, temperature, [])
