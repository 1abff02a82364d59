"""Reading a request's JSON body: size limit first, then one parse."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from gateway.errors import ClientGoneError, InvalidRequestError, PayloadTooLargeError, UnsupportedMediaTypeError

__all__ = ["read_json_body"]


async def read_json_body(request: Request, max_bytes: int) -> dict[str, Any]:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        # Browsers send text/plain and form bodies cross-origin without asking first: never parse them.
        raise UnsupportedMediaTypeError(f"send the body as JSON with `Content-Type: application/json` (got {media!r})")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLargeError(f"request body is {declared} bytes; the limit is {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLargeError(f"request body exceeds the limit of {max_bytes} bytes")
            chunks.append(chunk)
    except ClientDisconnect as exc:
        raise ClientGoneError("the client went away while sending its request") from exc
    raw = b"".join(chunks)
    if not raw:
        raise InvalidRequestError("request body is empty; expected a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object")
    return body
