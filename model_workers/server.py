"""The model-worker HTTP server: OpenAI-compatible endpoints in front of one backend.

Routes parse the request and hand it to :class:`model_workers.serving.Worker`; the app's
lifespan starts and closes the backend. Every error leaves in the OpenAI error shape.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from model_workers.backends.base import (
    Backend,
    ModelSpec,
)
from model_workers.errors import WorkerError
from model_workers.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    HealthResponse,
    ModelList,
    ScoreRequestBody,
    ScoreResponse,
    TokenizeRequest,
    TokenizeResponse,
    error_body,
)
from model_workers.serving import Worker

logger = logging.getLogger(__name__)


def create_app(backend: Backend, specs: list[ModelSpec], *, backend_name: str) -> FastAPI:
    """The worker's FastAPI app; its lifespan starts and closes ``backend``."""
    worker = Worker(backend, specs, backend_name)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await backend.start()
        try:
            yield
        finally:
            await backend.close()

    app = FastAPI(title="Alpaca Arena model worker", lifespan=lifespan)
    app.state.worker = worker
    router = APIRouter(route_class=_LoggedRoute)

    @router.get("/health")
    async def health() -> HealthResponse:
        return worker.health()

    @router.get("/v1/models")
    async def models() -> ModelList:
        return worker.models()

    @router.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest) -> Any:
        return _respond(await worker.chat(body))

    @router.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest) -> Any:
        return _respond(await worker.complete(body))

    @router.post("/worker/score")
    async def score(body: ScoreRequestBody) -> ScoreResponse:
        return await worker.score(body)

    @router.post("/worker/tokenize")
    async def tokenize(body: TokenizeRequest) -> TokenizeResponse:
        return worker.tokenize(body)

    app.include_router(router)
    app.add_exception_handler(WorkerError, _worker_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    return app


def _respond(result: Any) -> Any:
    if isinstance(result, AsyncIterator):
        return StreamingResponse(result, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    return result


class _LoggedRoute(APIRoute):
    """Turns an unexpected exception into an OpenAI-shaped 500, logged with its traceback."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except (WorkerError, RequestValidationError, HTTPException):
                raise
            except Exception as exc:
                logger.exception("unexpected error in %s %s", request.method, request.url.path)
                return JSONResponse(error_body(f"internal error: {type(exc).__name__}: {exc}",
                                               type="server_error"), status_code=500)

        return route


async def _worker_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, WorkerError):  # registered for WorkerError only
        raise exc
    return JSONResponse(exc.to_openai(), status_code=exc.status_code)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """Request validation fails with 400 in the OpenAI shape (not FastAPI's 422)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    parts: list[str] = []
    param = None
    for error in errors:
        loc = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        param = param or loc or None
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        parts.append(f"{loc}: {message}" if loc else message)
    return JSONResponse(error_body("; ".join(parts) or "invalid request",
                                   type="invalid_request_error", param=param), status_code=400)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else str(exc)
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(error_body(str(detail), type=kind), status_code=status)

