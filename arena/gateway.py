"""The OpenAI-compatible gateway: forward a request to the least-loaded worker serving its model.

Bodies are forwarded as bytes (parsed once, only to read ``model`` and ``stream``), through one
pooled ``httpx.AsyncClient``. A connection failure before any byte came back is retried once on
another worker; the failed worker leaves rotation for every replica.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from arena.controller import Route, WorkerDirectory
from arena.errors import ClientError, UpstreamFailed

logger = logging.getLogger(__name__)

_HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}
_RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError)
ATTEMPTS = 2  # the first worker, then one other


@dataclass(frozen=True, slots=True)
class ChatPiece:
    """One piece of a streamed chat answer: new text, and the finish reason on the last."""

    text: str
    finish_reason: str | None = None


class Gateway:
    """Forwards OpenAI-style requests to workers picked by a :class:`WorkerDirectory`."""

    def __init__(self, directory: WorkerDirectory, *, timeout_s: float) -> None:
        self.directory = directory
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=5.0),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def forward(self, request: Request, *, worker_path: str) -> Response:
        """Forward ``request`` (a JSON body naming a ``model``) to ``worker_path`` on a worker."""
        body = await request.body()
        model, stream = _peek(body)
        response, route = await self._open(model, worker_path=worker_path, body=body)
        if stream and response.status_code == 200:
            return StreamingResponse(
                self._relay(response, route),
                status_code=200,
                media_type=response.headers.get("content-type", "text/event-stream"),
            )
        try:
            content = await response.aread()
        finally:
            await response.aclose()
            self.directory.end(route.worker_id)
        return Response(
            content=content,
            status_code=response.status_code,
            headers=_passthrough(response.headers),
        )

    async def _open(
        self, model: str, *, worker_path: str, body: bytes
    ) -> tuple[httpx.Response, Route]:
        """Send ``body`` to a worker serving ``model``; one retry elsewhere on a connection error.

        The caller owns the returned (streamed) response: it must close it and call
        ``directory.end(route.worker_id)``.
        """
        tried: set[str] = set()
        last_error: Exception | None = None
        for _ in range(ATTEMPTS):
            route = self.directory.pick(model, exclude=frozenset(tried))
            tried.add(route.worker_id)
            self.directory.begin(route.worker_id)
            upstream = self.client.build_request(
                "POST",
                route.address + worker_path,
                content=body,
                headers={"content-type": "application/json"},
            )
            try:
                response = await self.client.send(upstream, stream=True)
            except _RETRYABLE as exc:
                self.directory.end(route.worker_id)
                last_error = exc
                logger.warning("worker %s unreachable (%s); retrying elsewhere", route.address, exc)
                await asyncio.to_thread(self.directory.unreachable, route.worker_id)
                continue
            except BaseException:
                self.directory.end(route.worker_id)
                raise
            return response, route
        raise UpstreamFailed(
            f"no worker serving model {model!r} could be reached (last error: {last_error})",
            param="model",
        )

    async def stream_chat(
        self, model: str, messages: list[dict[str, Any]], *, max_tokens: int, temperature: float
    ) -> AsyncIterator[ChatPiece]:
        """Stream a chat completion from a worker serving ``model``: content deltas, then the end.

        Raises :class:`UpstreamFailed` with the worker's own message when it answers with an
        error (before or during the stream).
        """
        body = json.dumps({
            "model": model, "messages": messages, "max_tokens": max_tokens,
            "temperature": temperature, "stream": True,
        }).encode()
        response, route = await self._open(model, worker_path="/v1/chat/completions", body=body)
        try:
            if response.status_code != 200:
                raise UpstreamFailed(_error_message(await response.aread(), response.status_code))
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    return
                chunk = json.loads(data)
                if "error" in chunk:
                    raise UpstreamFailed(_error_message(data.encode(), 200))
                for choice in chunk.get("choices") or ():
                    delta = (choice.get("delta") or {}).get("content") or ""
                    finish = choice.get("finish_reason")
                    if delta or finish:
                        yield ChatPiece(text=delta, finish_reason=finish)
        finally:
            await response.aclose()
            self.directory.end(route.worker_id)

    async def _relay(self, response: httpx.Response, route: Route) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            logger.warning("stream from worker %s broke: %s", route.address, exc)
            error = {
                "error": {
                    "message": f"the worker serving this request failed mid-stream: {exc}",
                    "type": "server_error",
                    "param": None,
                    "code": "upstream_failed",
                }
            }
            yield f"data: {json.dumps(error)}\n\ndata: [DONE]\n\n".encode()
        finally:
            await response.aclose()
            self.directory.end(route.worker_id)


def _peek(body: bytes) -> tuple[str, bool]:
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise ClientError(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ClientError("the request body must be a JSON object")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise ClientError("'model' is required and must be a non-empty string", param="model")
    return model, bool(payload.get("stream", False))


def _passthrough(headers: httpx.Headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}


def _error_message(body: bytes, status: int) -> str:
    """The message of an OpenAI-shaped error body, else the body itself (shortened)."""
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body.decode(errors="replace")[:500]
    return f"HTTP {status}: {message}" if status != 200 else str(message)
