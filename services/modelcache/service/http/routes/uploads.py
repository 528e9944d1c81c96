"""Image inputs: multipart uploads or JSON with base64 strings (never URLs: the service is offline)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile

from modelcache.service.http.errors import ApiError
from modelcache.service.http.routes.common import decode_base64

MAX_IMAGES = 256


@dataclass
class ImageRequest:
    images: list[bytes]
    fields: dict[str, Any] = field(default_factory=dict)

    def model(self) -> str | None:
        """The ``model`` field: None when left out; anything but a string is refused."""
        value = self.fields.get("model")
        if value is not None and not isinstance(value, str):
            raise ApiError(400, "'model' must be a string (a model id)", param="model")
        return value


async def read_images(request: Request, *, file_fields: tuple[str, ...], json_field: str) -> ImageRequest:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form()
        images, fields = [], {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key not in file_fields:
                    raise ApiError(400, f"unexpected file field '{key}'; use {' or '.join(file_fields)}", param=key)
                data = await value.read()
                if not data:
                    raise ApiError(400, f"the uploaded '{key}' is empty", param=key, code="empty_file")
                images.append(data)
            elif key in fields:
                raise ApiError(400, f"'{key}' is given more than once", param=key)
            else:
                fields[key] = value
        return ImageRequest(_bounded(images, file_fields[0]), fields)
    if kind == "application/json":
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        given = body.get(json_field)
        items = [given] if isinstance(given, str) else given
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise ApiError(400, f"'{json_field}' must be a base64 string or a list of them", param=json_field)
        images = [decode_base64(v, param=json_field) for v in items]
        fields = {k: v for k, v in body.items() if k != json_field}
        return ImageRequest(_bounded(images, json_field), fields)
    raise ApiError(
        415, "send multipart/form-data (file uploads) or application/json (base64)", code="unsupported_media"
    )


def _bounded(images: list[bytes], param: str) -> list[bytes]:
    if not images:
        raise ApiError(400, f"no image given ('{param}')", param=param)
    if len(images) > MAX_IMAGES:
        raise ApiError(400, f"at most {MAX_IMAGES} images per request", param=param)
    return images


def number(fields: dict, name: str, default: float, low: float, high: float, *, integer: bool = False) -> float:
    value = fields.get(name, default)
    try:
        number = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        number = float("nan")
    if not (low <= number <= high) or (integer and not float(number).is_integer()):
        kind = "an integer" if integer else "a number"
        raise ApiError(400, f"'{name}' must be {kind} between {low:g} and {high:g}", param=name)
    return number


IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"}},
                        "model": {"type": "string", "description": "a model id; empty or left out: the only one"},
                    },
                    "required": ["file"],
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "input": {
                            "description": "base64 image bytes (or a data: URL), or a list of them",
                            "oneOf": [
                                {"type": "string", "minLength": 4, "pattern": "^[A-Za-z0-9+/=:;,._-]+$"},
                                {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {"type": "string", "minLength": 4, "pattern": "^[A-Za-z0-9+/=:;,._-]+$"},
                                },
                            ],
                        },
                        "model": {"type": "string", "description": "a model id; empty or left out: the only one"},
                    },
                    "required": ["input"],
                }
            },
        },
        "required": True,
    }
}
