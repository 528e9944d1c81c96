"""OpenAI-compatible /v1/embeddings (text models, and the text tower of SigLIP/CLIP)."""

from __future__ import annotations

import base64
from typing import Annotated, Literal

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, StringConstraints, field_validator

from modelcache.service.http.disconnect import unless_disconnected
from modelcache.service.http.errors import ApiError
from modelcache.service.http.routes.common import ERRORS, find_model
from modelcache.service.http.state import get_state

router = APIRouter(tags=["embeddings"])

MAX_INPUTS = 2048
MAX_CHARS = 100_000


Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_CHARS, pattern=r"\S")]


class EmbeddingRequest(BaseModel):
    input: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_INPUTS)] = Field(
        description="a text, or a list of texts (token arrays are not supported: send the text)"
    )
    model: str = Field(min_length=1, description="a model id from /v1/models")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, description="only the model's own size is accepted")
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _no_token_arrays(cls, value):
        if isinstance(value, list) and value and all(isinstance(v, (int, list)) for v in value):
            raise ValueError("token arrays are not supported: send the text")
        return value


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
    texts = [body.input] if isinstance(body.input, str) else body.input  # the schema checked each one
    dims = entry.info.get("dimensions")
    if body.dimensions is not None and body.dimensions != dims:
        raise ApiError(
            400, f"this model gives {dims} dimensions; 'dimensions' must be {dims} or left out", param="dimensions"
        )
    vectors, tokens = await unless_disconnected(request.receive, state.handle(entry).embed(texts))
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
