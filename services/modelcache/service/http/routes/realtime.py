"""OpenAI's Realtime API for transcription over a WebSocket: ``/v1/realtime?intent=transcription``.

The client appends PCM16 audio (24 kHz, mono, little-endian, base64), and either commits
it itself or lets the server's voice activity detection (Silero, ``engines/vad.py``) commit
each phrase when a silence ends it. Every committed item is transcribed by the session's
speech-to-text model through the same queue, deadline and worker as an HTTP request
(streamed: a ``delta`` per decoded segment, then ``completed``), one item after the other.

Bounds: ``MODELCACHE_REALTIME_SESSIONS`` at once (one more is told so and closed with 1013),
``MODELCACHE_REALTIME_BUFFER_SECONDS`` of audio not transcribed yet (uncommitted, or committed
and waiting for the model), ``MODELCACHE_REALTIME_IDLE_SECONDS`` without a message while no
item waits for its transcript. A wrong key is refused before the handshake (401). Bad input
gets an ``error`` event and the session goes on.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import io
import json
import logging
import uuid
import wave
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from modelcache.service.engines.base import Deltas, Transcript
from modelcache.service.http.errors import ApiError, error_response, fault
from modelcache.service.http.routes.common import find_model
from modelcache.service.http.state import State

router = APIRouter(tags=["realtime"])
log = logging.getLogger(__name__)

RATE = 24_000  # OpenAI's pcm16: 24 kHz, mono, 16-bit little-endian
BYTES_PER_MS = RATE * 2 // 1000
LAG_MS = 100  # the VAD decides a window after it is complete: keep that much more before a phrase
# a message longer than this gets an error event and the session goes on (8 MiB of base64 is
# 131 s of audio); one over uvicorn's own limit (16 MiB) ends the connection with close code 1009
MAX_MESSAGE = 8 * 2**20
PROTOCOL_KEY = "openai-insecure-api-key."  # how browsers pass the key (no headers on a WebSocket)


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class Gone(Exception):
    """The client went away: nothing can be sent to it any more (kept apart from a model's
    own failures, some of which are RuntimeErrors too)."""


class Refused(Exception):
    """Bad input on the socket: answered with an ``error`` event; the session goes on."""

    def __init__(self, message: str, code: str, param: str | None = None, event_id: str | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.param, self.event_id = message, code, param, event_id


def wav_bytes(pcm16: bytes) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm16)
    return out.getvalue()


class Session:
    def __init__(self, ws: WebSocket, state: State) -> None:
        self.ws, self.state = ws, state
        self.id = _id("sess")
        self.model: str | None = None
        self.language: str | None = None
        self.prompt: str | None = None
        self.turn: dict[str, Any] | None = {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 500,
        }
        self.detector: Any = None
        self.buffer = bytearray()  # audio not committed yet
        self.buffer_ms = 0  # the stream time of buffer[0]
        self.speech: tuple[str, int] | None = None  # (item id, start ms) of the phrase going on
        self.previous: str | None = None
        # committed items, each with the model, language and prompt of the session when committed
        self.items: asyncio.Queue[tuple[str, bytes, tuple[str | None, str | None, str | None]] | None] = asyncio.Queue()
        self.queued = 0  # bytes of committed audio not transcribed yet
        self.pending = 0  # items committed and not answered yet (the session is not idle)
        self.active_at = asyncio.get_running_loop().time()  # the last message, or the last item answered
        self.send_lock = asyncio.Lock()
        self.limit = int(state.settings.realtime_buffer_seconds * 1000) * BYTES_PER_MS

    # --- sending --------------------------------------------------------------------------

    async def send(self, event: dict) -> None:
        text = json.dumps({"event_id": _id("event"), **event}, ensure_ascii=False)
        async with self.send_lock:
            try:
                await self.ws.send_text(text)
            except (WebSocketDisconnect, RuntimeError, OSError) as exc:
                raise Gone from exc

    async def error(self, message: str, code: str, param: str | None = None, event_id: str | None = None) -> None:
        kind = "invalid_request_error" if code not in ("server_error", "timeout") else "server_error"
        await self.send(
            {
                "type": "error",
                "error": {"type": kind, "code": code, "message": message, "param": param, "event_id": event_id},
            }
        )

    def description(self) -> dict:
        return {
            "id": self.id,
            "object": "realtime.transcription_session",
            "input_audio_format": "pcm16",
            "input_audio_transcription": {"model": self.model, "language": self.language, "prompt": self.prompt or ""},
            "turn_detection": self.turn,
            "input_audio_noise_reduction": None,
            "include": None,
        }

    # --- client events --------------------------------------------------------------------

    async def handle(self, raw: str) -> None:
        try:
            event = json.loads(raw)
        except ValueError:
            raise Refused("the message is not JSON", "invalid_json") from None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise Refused("an event is a JSON object with a 'type'", "invalid_event", "type")
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        kind = event["type"]
        try:
            if kind == "transcription_session.update":
                await self.update(event.get("session"))
            elif kind == "input_audio_buffer.append":
                await self.append(event.get("audio"))
            elif kind == "input_audio_buffer.commit":
                await self.commit_all()
            elif kind == "input_audio_buffer.clear":
                self.drop_until(self.buffer_ms + len(self.buffer) // BYTES_PER_MS)
                self.buffer.clear()
                self.speech = None
                if self.detector is not None:  # a phrase under way is forgotten with its audio
                    self.detector.speech_start = self.detector.silence_since = None
                await self.send({"type": "input_audio_buffer.cleared"})
            else:
                raise Refused(f"unknown event type {kind!r}", "invalid_event", "type")
        except Refused as exc:
            exc.event_id = exc.event_id or event_id
            raise

    async def update(self, session: Any) -> None:
        if not isinstance(session, dict):
            raise Refused("transcription_session.update needs a 'session' object", "invalid_value", "session")
        fmt = session.get("input_audio_format", "pcm16")
        if fmt != "pcm16":
            raise Refused(
                f"input_audio_format must be 'pcm16' (24 kHz, mono, 16-bit), not {fmt!r}",
                "invalid_value",
                "session.input_audio_format",
            )
        transcription = session.get("input_audio_transcription")
        if transcription is not None:
            if not isinstance(transcription, dict):
                raise Refused(
                    "input_audio_transcription must be an object", "invalid_value", "session.input_audio_transcription"
                )
            model = transcription.get("model", self.model)
            try:
                entry = find_model(self.state, model, "speech-to-text")
            except ApiError as exc:
                raise Refused(
                    exc.message, exc.code or "invalid_value", "session.input_audio_transcription.model"
                ) from None
            language = transcription.get("language") or None
            if language is not None and not (
                isinstance(language, str) and 2 <= len(language) <= 3 and language.isalpha()
            ):
                raise Refused(
                    f"language must be an ISO-639-1 code such as 'en', not {language!r}",
                    "invalid_value",
                    "session.input_audio_transcription.language",
                )
            prompt = transcription.get("prompt") or None
            if prompt is not None and not isinstance(prompt, str):
                raise Refused("prompt must be text", "invalid_value", "session.input_audio_transcription.prompt")
            self.model, self.language, self.prompt = entry.id, language, prompt
        if "turn_detection" in session:
            self.turn = turn_options(session["turn_detection"])
            self.detector, self.speech = None, None
        await self.send({"type": "transcription_session.updated", "session": self.description()})

    async def append(self, audio: Any) -> None:
        if not isinstance(audio, str):
            raise Refused("input_audio_buffer.append needs 'audio': base64 of PCM16 audio", "invalid_value", "audio")
        try:
            pcm = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise Refused("'audio' is not valid base64", "invalid_value", "audio") from None
        if len(pcm) % 2:
            raise Refused("'audio' must be 16-bit PCM: an even number of bytes", "invalid_value", "audio")
        if len(self.buffer) + self.queued + len(pcm) > self.limit:
            waiting = (
                f" ({self.queued / (RATE * 2):.1f} s of it committed, waiting for the model)" if self.queued else ""
            )
            raise Refused(
                f"a session holds at most {self.state.settings.realtime_buffer_seconds:g} s of audio not transcribed "
                f"yet{waiting} (MODELCACHE_REALTIME_BUFFER_SECONDS): commit or clear it; this piece was dropped",
                "input_audio_buffer_full",
                "audio",
            )
        self.buffer += pcm
        if self.turn is None:
            return
        if self.detector is None:
            from modelcache.service.engines.vad import TurnDetector, TurnOptions

            options = TurnOptions(**{k: v for k, v in self.turn.items() if k != "type"})
            self.detector = await asyncio.to_thread(TurnDetector, options)
            self.detector.done_ms = self.buffer_ms + (len(self.buffer) - len(pcm)) / BYTES_PER_MS
        for turn in await asyncio.to_thread(self.detector.feed, pcm):
            if turn.end_ms is None:
                self.speech = (_id("item"), turn.start_ms)
                await self.send(
                    {
                        "type": "input_audio_buffer.speech_started",
                        "audio_start_ms": turn.start_ms,
                        "item_id": self.speech[0],
                    }
                )
            elif self.speech is not None:
                item_id, start = self.speech
                self.speech = None
                await self.send(
                    {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": turn.end_ms, "item_id": item_id}
                )
                await self.commit(item_id, start, turn.end_ms)  # with the silence that ended it, as OpenAI's
        if self.speech is None:  # silence: keep only what a phrase starting now would take before it
            keep = (int(self.turn.get("prefix_padding_ms", 300)) + LAG_MS) * BYTES_PER_MS
            self.drop_until(self.buffer_ms + (len(self.buffer) - keep) // BYTES_PER_MS)

    def drop_until(self, ms: float) -> None:
        cut = int(max(0.0, ms - self.buffer_ms)) * BYTES_PER_MS
        if cut > 0:
            del self.buffer[:cut]
            self.buffer_ms += cut // BYTES_PER_MS

    async def commit_all(self) -> None:
        if not self.buffer:
            raise Refused(
                "the audio buffer is empty: append audio before committing", "input_audio_buffer_commit_empty"
            )
        item_id = self.speech[0] if self.speech else _id("item")
        self.speech = None
        await self.commit(item_id, self.buffer_ms, self.buffer_ms + len(self.buffer) // BYTES_PER_MS)

    async def commit(self, item_id: str, start_ms: float, end_ms: float) -> None:
        begin = int(max(0.0, start_ms - self.buffer_ms)) * BYTES_PER_MS
        end = int(max(0.0, end_ms - self.buffer_ms)) * BYTES_PER_MS
        audio = bytes(self.buffer[begin:end])
        self.drop_until(end_ms)
        await self.send({"type": "input_audio_buffer.committed", "previous_item_id": self.previous, "item_id": item_id})
        self.previous = item_id
        self.queued += len(audio)
        self.pending += 1
        await self.items.put((item_id, audio, (self.model, self.language, self.prompt)))

    # --- transcription, one item after the other --------------------------------------------

    async def transcribe_items(self) -> None:
        while (item := await self.items.get()) is not None:
            item_id, audio, settings = item
            try:
                await self.transcribe(item_id, audio, *settings)
            finally:
                self.queued -= len(audio)
                self.pending -= 1
                self.active_at = asyncio.get_running_loop().time()

    async def transcribe(
        self, item_id: str, audio: bytes, model: str | None, language: str | None, prompt: str | None
    ) -> None:
        base = {"item_id": item_id, "content_index": 0}
        try:
            entry = find_model(self.state, model, "speech-to-text")
            options = {
                "task": "transcribe",
                "language": language,
                "prompt": prompt,
                "temperature": 0.0,
                "word_timestamps": False,
            }
            deltas = Deltas()
            items = self.state.handle(entry).transcribe_stream(wav_bytes(audio), options)
            async with aclosing(items):
                async for part in items:
                    if isinstance(part, Transcript):
                        rest = deltas.rest(part.text)
                        if rest:
                            await self.send(
                                {"type": "conversation.item.input_audio_transcription.delta", **base, "delta": rest}
                            )
                        seconds = round(len(audio) / (RATE * 2), 3)  # what was transcribed
                        await self.send(
                            {
                                "type": "conversation.item.input_audio_transcription.completed",
                                **base,
                                "transcript": part.text,
                                "usage": {"type": "duration", "seconds": seconds},
                            }
                        )
                    elif delta := deltas.add(part.text):
                        await self.send(
                            {"type": "conversation.item.input_audio_transcription.delta", **base, "delta": delta}
                        )
        except Gone:
            raise
        except Exception as exc:  # the item fails (a ModelFailed is a RuntimeError too); the session goes on
            status, message, code = fault(exc)
            await self.send(
                {
                    "type": "conversation.item.input_audio_transcription.failed",
                    **base,
                    "error": {
                        "type": "invalid_request_error" if status < 500 else "server_error",
                        "code": code or "transcription_failed",
                        "message": message,
                    },
                }
            )


def turn_options(value: Any) -> dict[str, Any] | None:
    """``turn_detection``: null (the client commits) or a ``server_vad`` object."""
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") != "server_vad":
        raise Refused(
            "turn_detection must be null or an object with type 'server_vad'", "invalid_value", "session.turn_detection"
        )
    out: dict[str, Any] = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500}
    bounds = {"threshold": (0.0, 1.0), "prefix_padding_ms": (0, 10_000), "silence_duration_ms": (0, 10_000)}
    for key, given in value.items():
        if key in ("type", "create_response", "interrupt_response"):
            continue
        if key not in bounds:
            raise Refused(f"turn_detection: unknown field {key!r}", "invalid_value", f"session.turn_detection.{key}")
        low, high = bounds[key]
        if isinstance(given, bool) or not isinstance(given, (int, float)) or not low <= given <= high:
            raise Refused(
                f"turn_detection.{key} must be a number from {low} to {high}",
                "invalid_value",
                f"session.turn_detection.{key}",
            )
        out[key] = float(given) if key == "threshold" else int(given)
    return out


def _authorized(ws: WebSocket, key: str | None) -> bool:
    if key is None:
        return True
    scheme, _, given = ws.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key.encode()):
        return True
    for protocol in _protocols(ws):
        if protocol.startswith(PROTOCOL_KEY) and hmac.compare_digest(
            protocol[len(PROTOCOL_KEY) :].encode(), key.encode()
        ):
            return True
    return False


def _protocols(ws: WebSocket) -> list[str]:
    return [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]


async def _refuse(session: Session, message: str, code: str, param: str | None, close_code: int) -> None:
    """An ``error`` event, then the socket closed (unless the client is gone already)."""
    try:
        await session.error(message, code, param)
        await session.ws.close(code=close_code)
    except (Gone, WebSocketDisconnect, RuntimeError, OSError):
        pass


@router.websocket("/v1/realtime")
async def realtime(ws: WebSocket) -> None:
    state: State = ws.app.state.modelcache
    subprotocol = "realtime" if "realtime" in _protocols(ws) else None
    if not _authorized(ws, state.api_key):
        why = "missing or invalid API key (send 'Authorization: Bearer <key>')"
        # as the HTTP routes answer: 401 with OpenAI's error body. uvicorn's websockets-sansio
        # protocol then logs "ASGI callable returned without completing handshake" although the
        # client got the 401 (its bug; Kludex/uvicorn pull request #3138 fixes it)
        if "websocket.http.response" in ws.scope.get("extensions", {}):
            denial = error_response(401, why, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
            await ws.send_denial_response(denial)
        else:  # a server without the denial extension turns this into a 403
            await ws.close(code=1008, reason=why)
        return
    await ws.accept(subprotocol=subprotocol)
    session = Session(ws, state)
    intent = ws.query_params.get("intent", "transcription")
    if intent != "transcription":
        why = f"only intent=transcription is served here, not {intent!r}"
        await _refuse(session, why, "unsupported_intent", "intent", 1008)
        return
    if state.realtime_sessions >= state.settings.realtime_sessions:
        limit = state.settings.realtime_sessions
        why = f"the service holds {limit} realtime sessions already (MODELCACHE_REALTIME_SESSIONS); try again later"
        if limit == 0:
            why = "realtime sessions are turned off here (MODELCACHE_REALTIME_SESSIONS=0)"
        await _refuse(session, why, "session_limit_reached", None, 1013)
        return
    state.realtime_sessions += 1
    worker = asyncio.create_task(session.transcribe_items())
    receiving: asyncio.Future | None = None  # the client's next message
    try:
        try:
            session.model = find_model(state, ws.query_params.get("model"), "speech-to-text").id
        except ApiError as exc:
            await _refuse(session, exc.message, exc.code or "invalid_value", "model", 1008)
            return
        await session.send({"type": "transcription_session.created", "session": session.description()})
        idle = state.settings.realtime_idle_seconds
        loop = asyncio.get_running_loop()
        while True:
            # idle: no message for `idle` seconds, counted from the last one or from the last
            # item answered, whichever is later; never while an item waits for its transcript
            # (the receive goes on across these checks: no message is lost to a timeout)
            receiving = receiving or asyncio.ensure_future(ws.receive())
            wait = idle if session.pending else session.active_at + idle - loop.time()
            if wait <= 0:
                await session.error(
                    f"no message for {idle:g} s (MODELCACHE_REALTIME_IDLE_SECONDS): the session is closed",
                    "session_idle",
                )
                await ws.close(code=1000, reason="idle")
                return
            done, _ = await asyncio.wait({receiving}, timeout=wait)
            if not done:
                continue
            message, receiving = receiving.result(), None
            session.active_at = loop.time()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await session.error("send events as JSON text messages, not binary ones", "invalid_event")
                continue
            if len(text) > MAX_MESSAGE:
                why = f"a message may hold at most {MAX_MESSAGE // 2**20} MiB: send the audio in smaller appends"
                await session.error(why, "message_too_large")
                continue
            try:
                await session.handle(text)
            except Refused as exc:
                await session.error(exc.message, exc.code, exc.param, exc.event_id)
    except (Gone, WebSocketDisconnect):  # the client went away
        pass
    except Exception:  # a fault of the service: said, logged, and the session is ended
        log.exception("realtime session %s failed", session.id)
        await _refuse(session, "internal error: the session is closed", "server_error", None, 1011)
    finally:
        state.realtime_sessions -= 1
        if receiving is not None:
            receiving.cancel()
        worker.cancel()  # an item being transcribed is stopped in the model, as for a client gone
        try:
            await worker
        except (asyncio.CancelledError, Exception):
            pass
