"""The gateway's exception tree, mapped once to OpenAI's error envelope.

GatewayError                      500 server_error
├── InvalidRequestError           400 invalid_request_error
│   ├── ModelNotFoundError        404 model_not_found
│   ├── PayloadTooLargeError      413 request_too_large
│   └── UnsupportedMediaTypeError 415 unsupported_media_type
├── AuthenticationError           401 invalid_api_key
├── PermissionDeniedError         403 permission_denied
├── RateLimitError                429 rate_limit_exceeded
│   └── QuotaExceededError        429 insufficient_quota
├── ServiceUnavailableError       503 service_unavailable
├── ClientGoneError               499 client_closed_request (nobody is left to read it)
└── UpstreamError                 502 upstream_error
    └── UpstreamTimeoutError      504 upstream_timeout
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthenticationError",
    "ClientGoneError",
    "GatewayError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "ServiceUnavailableError",
    "UpstreamError",
    "UnsupportedMediaTypeError",
    "UpstreamTimeoutError",
    "envelope",
]


def envelope(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class GatewayError(Exception):
    status_code = 500
    error_type = "server_error"
    default_code: str | None = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = headers or {}

    def to_envelope(self) -> dict[str, Any]:
        return envelope(self.message, self.error_type, self.param, self.code)


class InvalidRequestError(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"
    default_code: str | None = None


class ModelNotFoundError(InvalidRequestError):
    status_code = 404
    default_code = "model_not_found"


class PayloadTooLargeError(InvalidRequestError):
    status_code = 413
    default_code = "request_too_large"


class UnsupportedMediaTypeError(InvalidRequestError):
    status_code = 415
    default_code = "unsupported_media_type"


class AuthenticationError(GatewayError):
    status_code = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(GatewayError):
    status_code = 403
    error_type = "invalid_request_error"
    default_code = "permission_denied"


class RateLimitError(GatewayError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class QuotaExceededError(RateLimitError):
    error_type = "insufficient_quota"
    default_code = "insufficient_quota"


class ServiceUnavailableError(GatewayError):
    status_code = 503
    error_type = "server_error"
    default_code = "service_unavailable"


class ClientGoneError(GatewayError):
    status_code = 499
    error_type = "invalid_request_error"
    default_code = "client_closed_request"


class UpstreamError(GatewayError):
    status_code = 502
    error_type = "upstream_error"
    default_code = "upstream_error"


class UpstreamTimeoutError(UpstreamError):
    status_code = 504
    default_code = "upstream_timeout"
