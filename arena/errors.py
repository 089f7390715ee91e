"""Exceptions that say who is at fault; one handler turns them into JSON responses."""

from __future__ import annotations


class ArenaError(Exception):
    """Base class of the control plane's errors."""

    status_code = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class ClientError(ArenaError):
    """The request is wrong (HTTP 400)."""

    status_code = 400
    error_type = "invalid_request_error"


class ValidationFailed(ClientError):
    """A checkpoint (or other input) failed validation; nothing was stored."""

    code = "validation_failed"


class NotFound(ClientError):
    status_code = 404
    code = "not_found"


class Conflict(ClientError):
    status_code = 409
    code = "conflict"


class Unauthorized(ClientError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(ClientError):
    status_code = 403
    error_type = "permission_error"
    code = "forbidden"


class ServerError(ArenaError):
    """Something on our side failed (HTTP 5xx)."""


class NoWorkerAvailable(ServerError):
    """No healthy worker serves the model (HTTP 503)."""

    status_code = 503
    code = "no_worker_available"


class UpstreamFailed(ServerError):
    """Workers were tried and none answered (HTTP 502)."""

    status_code = 502
    code = "upstream_failed"


class RateLimited(ClientError):
    """Too many requests from one session or address (HTTP 429, with ``Retry-After``)."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: int, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.retry_after_s = retry_after_s
