"""/v1/images/embeddings: image vectors in the same space as the model's text vectors."""

from __future__ import annotations

import asyncio
import copy

from fastapi import APIRouter, Request

from modelcache.service.state import get_state
from modelcache.service.engines.images import decode_image
from modelcache.service.errors import ApiError
from modelcache.service.routes.common import find_model
from modelcache.service.routes.embeddings import encode
from modelcache.service.routes.uploads import IMAGE_BODY, read_images

router = APIRouter(tags=["images"])

BODY = copy.deepcopy(IMAGE_BODY)
BODY["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]["encoding_format"] = {
    "type": "string", "enum": ["float", "base64"]}  # fmt: skip
BODY["requestBody"]["content"]["application/json"]["schema"]["properties"]["encoding_format"] = {
    "type": "string", "enum": ["float", "base64"]}  # fmt: skip


@router.post("/v1/images/embeddings", openapi_extra=BODY)
async def image_embeddings(request: Request) -> dict:
    state = get_state(request)
    upload = await read_images(request, file_fields=("file", "files"), json_field="input")
    model = upload.fields.get("model")
    entry = find_model(state, model if isinstance(model, str) else None, "image-embedding")
    fmt = upload.fields.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise ApiError(400, "'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    images = await asyncio.to_thread(lambda: [decode_image(data) for data in upload.images])
    vectors = await state.runner(entry).call(entry.engine.embed_images, images)
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encode(v, fmt)} for i, v in enumerate(vectors)],
        "model": entry.id,
    }
