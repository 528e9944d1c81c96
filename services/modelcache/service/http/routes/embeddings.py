"""OpenAI-compatible /v1/embeddings (text models, and the text tower of SigLIP/CLIP)."""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, StringConstraints, field_validator

from modelcache.service.engines.text import first_unknown, unknown_id
from modelcache.service.http.disconnect import unless_disconnected
from modelcache.service.http.errors import ApiError
from modelcache.service.http.routes.common import ERRORS, find_model
from modelcache.service.http.state import get_state

router = APIRouter(tags=["embeddings"])

MAX_INPUTS = 2048
MAX_CHARS = 100_000
MAX_IDS = 100_000  # token ids in one input (cut to the model's limit like a text)


Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_CHARS, pattern=r"\S")]
TokenIds = Annotated[list[Annotated[int, Field(ge=0, strict=True)]], Field(min_length=1, max_length=MAX_IDS)]


class EmbeddingRequest(BaseModel):
    input: (
        Text
        | Annotated[list[Text], Field(min_length=1, max_length=MAX_INPUTS)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_INPUTS)]
    ) = Field(
        description="a text, a list of texts, token ids in the model's vocabulary (a list of integers), "
        "or a list of such lists; every input is cut to the model's token limit"
    )
    model: str = Field(min_length=1, description="a model id from /v1/models")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(
        default=None,
        ge=1,
        description="the model's own size, or one of the Matryoshka sizes it declares (any smaller size where it "
        "declares is_matryoshka)",
    )
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _one_kind(cls, value):
        if (
            isinstance(value, list)
            and any(isinstance(v, str) for v in value)
            and not all(isinstance(v, str) for v in value)
        ):
            raise ValueError("a list of inputs holds texts only or token arrays only")
        return value


def inputs(body: EmbeddingRequest, entry) -> list[str | list[int]]:
    """The request's inputs: texts, or token ids checked against the model's vocabulary."""
    given: Any = body.input
    if isinstance(given, str):
        return [given]
    if all(isinstance(v, str) for v in given):
        return list(given)
    single = all(isinstance(v, int) for v in given)
    arrays: list[list[int]] = [given] if single else list(given)
    if entry.task != "text-embedding":
        raise ApiError(400, "token arrays are taken by text-embedding models only: send the text", param="input")
    vocab = entry.info.get("vocab_size")
    for i, ids in enumerate(arrays):
        bad = first_unknown(ids, vocab) if vocab is not None else None
        if bad is not None:
            where = f"input[{bad}]" if single else f"input[{i}][{bad}]"
            raise ApiError(400, unknown_id(where, ids[bad], vocab), param=where, code="invalid_value")
    return list(arrays)


def sized(vectors: np.ndarray, requested: int | None, entry) -> np.ndarray:
    """The vectors at the requested size: the model's own, or a Matryoshka size it declares."""
    dims = entry.info.get("dimensions")
    if requested is None or requested == dims:
        return vectors
    from modelcache.service.engines.text import shorten

    return shorten(vectors, requested, bool(entry.info.get("normalized", True)))


def check_dimensions(requested: int | None, entry) -> None:
    dims = entry.info.get("dimensions")
    sizes = entry.info.get("matryoshka_dimensions") or []
    if requested is None or requested == dims or requested in sizes:
        return
    if sizes == list(range(1, dims)):  # the model says any size will do (is_matryoshka)
        raise ApiError(
            400, f"this model gives at most {dims} dimensions; 'dimensions' must be 1 to {dims}", param="dimensions"
        )
    if sizes:
        allowed = ", ".join(str(d) for d in sorted({*sizes, dims}))
        raise ApiError(
            400,
            f"this model gives {allowed} dimensions; 'dimensions' must be one of them or left out",
            param="dimensions",
        )
    raise ApiError(
        400, f"this model gives {dims} dimensions; 'dimensions' must be {dims} or left out", param="dimensions"
    )


def encode(vector: np.ndarray, fmt: str) -> np.ndarray | str:
    """base64 of little-endian float32, or the float32 array itself (orjson writes it as numbers)."""
    if fmt == "base64":
        return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode()
    return np.ascontiguousarray(vector, dtype=np.float32)


def json_response(body: dict) -> Response:
    """One pass of orjson over the answer, arrays included (no per-float Python objects)."""
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


@router.post("/v1/embeddings", responses=ERRORS)
async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
    state = get_state(request)
    entry = find_model(state, body.model, ("text-embedding", "image-embedding"))
    texts = inputs(body, entry)  # the schema checked each one
    check_dimensions(body.dimensions, entry)
    vectors, tokens = await unless_disconnected(request.receive, state.handle(entry).embed(texts))
    vectors = sized(vectors, body.dimensions, entry)
    return json_response(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": encode(v, body.encoding_format)}
                for i, v in enumerate(vectors)
            ],
            "model": entry.id,
            "usage": {"prompt_tokens": int(sum(tokens)), "total_tokens": int(sum(tokens))},
        }
    )
