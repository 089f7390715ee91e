"""Errors a model worker reports. Each maps to an HTTP status and an OpenAI error ``type``."""

from __future__ import annotations


class WorkerError(Exception):
    """Base class: a failure on the worker's side (HTTP 500)."""

    status_code = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def to_openai(self) -> dict:
        """The OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class BadRequest(WorkerError):
    """The request is wrong (HTTP 400)."""

    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceeded(BadRequest):
    """Prompt plus ``max_tokens`` does not fit in the model's context window."""

    code = "context_length_exceeded"


class ModelNotFound(WorkerError):
    """The worker does not serve the model named in the request (HTTP 404)."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class BackendUnavailable(WorkerError):
    """The backend cannot be used here (not installed, upstream down): HTTP 503."""

    status_code = 503
    error_type = "server_error"
    code = "backend_unavailable"
