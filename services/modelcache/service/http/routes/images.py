"""/v1/images/embeddings: image vectors in the same space as the model's text vectors."""

from __future__ import annotations

import copy

from fastapi import APIRouter, Request
from fastapi.responses import Response

from modelcache.service.http.disconnect import unless_disconnected
from modelcache.service.http.errors import ApiError
from modelcache.service.http.routes.common import ERRORS, find_model
from modelcache.service.http.routes.embeddings import encode, json_response
from modelcache.service.http.routes.uploads import IMAGE_BODY, read_images
from modelcache.service.http.state import get_state

router = APIRouter(tags=["images"])

BODY = copy.deepcopy(IMAGE_BODY)
BODY["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]["encoding_format"] = {
    "type": "string",
    "enum": ["float", "base64"],
}
BODY["requestBody"]["content"]["application/json"]["schema"]["properties"]["encoding_format"] = {
    "type": "string",
    "enum": ["float", "base64"],
}


@router.post("/v1/images/embeddings", openapi_extra=BODY, responses=ERRORS)
async def image_embeddings(request: Request) -> Response:
    state = get_state(request)
    upload = await read_images(request, file_fields=("file", "files"), json_field="input")
    entry = find_model(state, upload.model(), "image-embedding")
    fmt = upload.fields.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise ApiError(400, "'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    # decoded in the model's process, batched with other requests' images into one forward
    vectors = await unless_disconnected(request.receive, state.handle(entry).embed_images(upload.images))
    return json_response(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": encode(v, fmt)} for i, v in enumerate(vectors)],
            "model": entry.id,
        }
    )
