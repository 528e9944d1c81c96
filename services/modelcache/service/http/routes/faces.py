"""/v1/faces/detect: boxes, five landmarks and scores (YuNet through OpenCV)."""

from __future__ import annotations

import copy

from fastapi import APIRouter, Request

from modelcache.service.http.disconnect import unless_disconnected
from modelcache.service.http.errors import ApiError
from modelcache.service.http.routes.common import ERRORS, find_model
from modelcache.service.http.routes.uploads import IMAGE_BODY, number, read_images
from modelcache.service.http.state import get_state

router = APIRouter(tags=["faces"])

LANDMARKS = ("right_eye", "left_eye", "nose_tip", "right_mouth_corner", "left_mouth_corner")
PARAMS = {
    "score_threshold": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.9},
    "nms_threshold": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.3},
    "top_k": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 5000},
}
BODY = copy.deepcopy(IMAGE_BODY)
for content in BODY["requestBody"]["content"].values():
    content["schema"]["properties"].update(PARAMS)


@router.post("/v1/faces/detect", openapi_extra=BODY, responses=ERRORS)
async def detect(request: Request) -> dict:
    state = get_state(request)
    upload = await read_images(request, file_fields=("file",), json_field="input")
    if len(upload.images) != 1:
        raise ApiError(400, "send exactly one image", param="file")
    entry = find_model(state, upload.model(), "face-detection")
    score = number(upload.fields, "score_threshold", 0.9, 0.0, 1.0)
    nms = number(upload.fields, "nms_threshold", 0.3, 0.0, 1.0)
    top_k = int(number(upload.fields, "top_k", 5000, 1, 10000, integer=True))
    options = {"score_threshold": score, "nms_threshold": nms, "top_k": top_k}
    faces, width, height = await unless_disconnected(
        request.receive, state.handle(entry).detect(upload.images[0], options)
    )
    return {
        "object": "list",
        "model": entry.id,
        "width": width,
        "height": height,
        "data": [
            {
                "box": {
                    "x": round(f.x, 2),
                    "y": round(f.y, 2),
                    "width": round(f.width, 2),
                    "height": round(f.height, 2),
                },
                "landmarks": {
                    name: [round(p[0], 2), round(p[1], 2)] for name, p in zip(LANDMARKS, f.landmarks, strict=True)
                },
                "score": round(f.score, 4),
            }
            for f in faces
        ],
    }
