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
└── UpstreamError                 502 upstream_error        an upstream call failed
    ├── UpstreamTimeoutError      504 upstream_timeout      no answer in time
    ├── UpstreamHTTPError         502                       it answered with an error status
    ├── UpstreamConnectError      502                       it could not be reached
    ├── UpstreamProtocolError     502                       its answer is not in the expected format
    └── UnsendableRequest         502                       the request cannot be put into its format

A GatewayError's ``message`` is what the client reads, through each API's envelope. Providers raise
the upstream failures with a ``detail`` for the log (``str(exc)``: redacted of keys, but upstream
text) and the class's short public message for the client; the dispatcher decides which error a
client finally gets (a rejected request becomes an InvalidRequestError). Errors of configuration
and offline tools (PolicyError, ArtifactError, ReplayError, NoLedger) go to the operator, not here.
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
    "UnsendableRequest",
    "UnsupportedMediaTypeError",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamHTTPError",
    "UpstreamProtocolError",
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
    """``detail`` (positional) is for the log; the client reads ``message``: the class's public
    message unless the dispatcher words one itself."""

    status_code = 502
    error_type = "upstream_error"
    default_code = "upstream_error"
    public_message = "the upstream call failed"
    kind = "error"  # the ledger's error_type for a call that failed this way
    retryable = True

    def __init__(
        self,
        detail: str | None = None,
        *,
        message: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or self.public_message, code=code, headers=headers)
        self.detail = detail or self.message

    def __str__(self) -> str:
        return self.detail


class UpstreamTimeoutError(UpstreamError):
    status_code = 504
    default_code = "upstream_timeout"
    public_message = "the upstream model timed out"
    kind = "timeout"


class UpstreamHTTPError(UpstreamError):
    def __init__(self, status: int, detail: str, retry_after: float | None = None, said: str | None = None) -> None:
        super().__init__(f"upstream answered {status}: {detail}", message=f"the upstream answered {status}")
        self.status = status
        # What a client may read of a 4xx: the message of the upstream's JSON error object, redacted
        # by the provider; None for a text or HTML body (a proxy's page, a traceback).
        self.said = said
        self.retry_after = retry_after
        self.kind = f"http_{status}"
        # 408/409/429 and 5xx are worth another try; other 4xx will fail the same way again.
        self.retryable = status in (408, 409, 429) or status >= 500


class UpstreamConnectError(UpstreamError):
    public_message = "the upstream could not be reached"
    kind = "connecterror"


class UpstreamProtocolError(UpstreamError):
    public_message = "the upstream answered in an unexpected format"
    kind = "protocolerror"


class UnsendableRequest(UpstreamError):
    """The request cannot be put into this provider's format (found before anything was sent):
    the request's fault, never the deployment's."""

    # litellm's reasons can quote an upstream's answer: the client gets the kind, the log the reason
    public_message = "its provider cannot take this request"
    kind = "unsendablerequest"
    retryable = False
