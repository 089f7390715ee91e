"""The control plane's FastAPI application."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from arena import __version__
from arena.api import battles, checkpoints, jobs, keys, leaderboard, openai, workers
from arena.controller import WorkerDirectory
from arena.db import make_engine
from arena.errors import ArenaError, RateLimited
from arena.gateway import Gateway
from arena.leaderboard import LeaderboardCache
from arena.settings import Settings, get_settings

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.resolved_database_url())
        directory = WorkerDirectory(
            engine=engine, expiry_s=settings.worker_expiry_s, cache_s=settings.routing_cache_s
        )
        gateway = Gateway(directory, timeout_s=settings.upstream_timeout_s)
        app.state.settings = settings
        app.state.engine = engine
        app.state.directory = directory
        app.state.gateway = gateway
        app.state.leaderboard_cache = LeaderboardCache(ttl_s=settings.leaderboard_cache_s)
        logger.info("control plane up (database %s)", engine.url.render_as_string())
        try:
            yield
        finally:
            await gateway.aclose()
            engine.dispose()

    app = FastAPI(
        title="Alpaca Arena",
        version=__version__,
        description="Control plane: checkpoint registry, workers, OpenAI-compatible gateway.",
        lifespan=lifespan,
    )
    for module in (checkpoints, workers, keys, openai):
        app.include_router(module.router)
    app.include_router(battles.router)
    app.include_router(battles.votes_router)
    app.include_router(leaderboard.router)
    app.include_router(jobs.router)

    @app.get("/health", tags=["health"])
    def health() -> dict:
        return {"status": "ok", "version": __version__}

    if settings.ui:
        _mount_ui(app)
    app.add_exception_handler(ArenaError, _arena_error)
    app.add_exception_handler(RateLimited, _rate_limited)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
    return app


def _mount_ui(app: FastAPI) -> None:
    """The Gradio UI at /ui; imported here so that ``import arena`` stays light."""
    from web.app import mount

    mount(app)


def error_body(message: str, *, error_type: str, code: str | None, param: str | None) -> dict:
    """The OpenAI error shape, used on every path so clients need one parser."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


async def _arena_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ArenaError)
    return JSONResponse(
        error_body(exc.message, error_type=exc.error_type, code=exc.code, param=exc.param),
        status_code=exc.status_code,
    )


async def _rate_limited(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RateLimited)
    response = await _arena_error(request, exc)
    response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        problems.append(f"{where or 'body'}: {err.get('msg')}")
    first = exc.errors()[0].get("loc", ()) if exc.errors() else ()
    param = ".".join(str(p) for p in first if p != "body") or None
    return JSONResponse(
        error_body(
            "invalid request: " + "; ".join(problems),
            error_type="invalid_request_error",
            code="invalid_request",
            param=param,
        ),
        status_code=400,
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(
        error_body(
            f"internal error: {type(exc).__name__}: {exc}",
            error_type="server_error",
            code="internal_error",
            param=None,
        ),
        status_code=500,
    )
