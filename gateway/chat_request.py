"""Reading and checking a chat-completions request body.

The body is validated for the fields the gateway itself relies on, with errors that name the
field; everything else (tools, response_format, stop, n, temperature, ...) is passed through
unchanged. Keys that would let a client steer where or how we call the provider are refused.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect, Request

from gateway.errors import ClientGoneError, InvalidRequestError, PayloadTooLargeError
from gateway.policy.loader import format_loc

__all__ = ["ChatRequest", "FORBIDDEN_KEYS", "parse_chat_request", "read_json_body"]

# Never taken from a request: upstream addresses, credentials and headers come from the policy
# and the environment only.
FORBIDDEN_KEYS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "extra_headers",
        "headers",
        "custom_llm_provider",
        "organization",
        "aws_access_key_id",
        "aws_secret_access_key",
        "vertex_credentials",
        "metadata_api_key",
    }
)


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=256)
    messages: list[_Message] = Field(min_length=1)
    stream: bool = False
    stream_options: _StreamOptions | None = None
    n: int | None = Field(default=None, ge=1, le=16)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


async def read_json_body(request: Request, max_bytes: int) -> dict[str, Any]:
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


def parse_chat_request(body: dict[str, Any]) -> ChatRequest:
    for key in body:
        if key in FORBIDDEN_KEYS:
            raise InvalidRequestError(
                f"`{key}` cannot be set by a request: upstreams and credentials come from the gateway's policy",
                param=key,
                code="forbidden_parameter",
            )
    try:
        return ChatRequest.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = format_loc(err["loc"])
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise InvalidRequestError(f"{loc}: {err['msg']}{more}", param=loc) from exc
