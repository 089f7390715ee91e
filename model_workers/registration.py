"""The worker's client of the control plane: checkpoint lookup, registration, heartbeats.

The control plane's side of the contract:

- ``GET  /api/checkpoints/{name}`` → the registry entry (``source``, ``revision``, ``adapter``,
  ``gguf_file``, ``template``, ``materialized_path``, ``context_length``, ...).
- ``POST /api/workers`` (``Authorization: Bearer <api key>``) with ``{"address", "backend",
  "models", "queue_length"}`` → ``{"id", "heartbeat_interval_s", "expiry_s"}``.
- ``POST /api/workers/{id}/heartbeat`` with ``{"queue_length", "models"}`` → 200, or 404 when the
  controller has dropped the worker (it registers again).
- ``DELETE /api/workers/{id}`` at shutdown (best effort).

A controller that cannot be reached while the worker runs is logged and retried; the worker keeps
serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from model_workers.backends.base import ModelSpec

logger = logging.getLogger(__name__)

TIMEOUT_S = 10.0  # one controller call; the controller answers in milliseconds when healthy


class ControllerError(Exception):
    """The controller refused a call or answered something unusable (a configuration error)."""


@dataclass(slots=True)
class Registration:
    worker_id: str
    heartbeat_interval_s: float
    expiry_s: float


class ControllerClient:
    """Calls the control plane at ``url`` (its base URL, e.g. ``http://127.0.0.1:8000``)."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout_s: float = TIMEOUT_S,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout_s,
                                       transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> ControllerClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def fetch_checkpoint(self, name: str) -> ModelSpec:
        """The registry's entry for ``name`` as a :class:`ModelSpec`.

        A ``materialized_path`` (base + delta weights, merged by the control plane) replaces the
        source, its revision and GGUF file; ``context_length`` becomes ``max_model_len``.
        """
        response = await self._call("GET", f"/api/checkpoints/{name}")
        if response.status_code == 404:
            raise ControllerError(f"checkpoint {name} is not registered at {self.url}")
        entry = self._json(response, f"looking up checkpoint {name}")
        try:
            materialized = entry.get("materialized_path")
            return ModelSpec(
                name=entry["name"],
                source=materialized or entry["source"],
                revision=None if materialized else entry.get("revision"),
                adapter=entry.get("adapter"),
                gguf_file=None if materialized else entry.get("gguf_file"),
                template=entry.get("template") or "hf",
                max_model_len=entry.get("context_length"),
            )
        except KeyError as exc:
            raise ControllerError(
                f"the controller's entry for checkpoint {name} lacks {exc.args[0]!r}: {entry}"
            ) from exc

    async def list_checkpoints(self) -> list[dict[str, Any]]:
        """Every registry entry (``GET /api/checkpoints``)."""
        response = await self._call("GET", "/api/checkpoints")
        if response.status_code >= 400:
            raise ControllerError(f"listing checkpoints: controller {self.url} answered "
                                  f"{response.status_code}: {_detail(response)}")
        body = response.json()
        if not isinstance(body, list):
            raise ControllerError(f"listing checkpoints: controller {self.url} answered {body!r}")
        return body

    async def register(self, *, address: str, backend: str, models: list[str],
                       queue_length: int = 0) -> Registration:
        response = await self._call("POST", "/api/workers", json={
            "address": address, "backend": backend, "models": models,
            "queue_length": queue_length,
        })
        body = self._json(response, f"registering worker {address}")
        try:
            return Registration(str(body["id"]), float(body.get("heartbeat_interval_s", 2.0)),
                                float(body.get("expiry_s", 6.0)))
        except KeyError as exc:
            raise ControllerError(f"the controller's registration answer has no id: {body}") \
                from exc

    async def heartbeat(self, worker_id: str, *, queue_length: int, models: list[str]) -> bool:
        """False when the controller no longer knows the worker (it must register again)."""
        response = await self._call("POST", f"/api/workers/{worker_id}/heartbeat",
                                    json={"queue_length": queue_length, "models": models})
        if response.status_code == 404:
            return False
        self._json(response, f"heartbeat of worker {worker_id}")
        return True

    async def deregister(self, worker_id: str) -> None:
        """Leave the rotation; best effort (a failure is logged, the worker is going anyway)."""
        try:
            response = await self._call("DELETE", f"/api/workers/{worker_id}")
            if response.status_code >= 400 and response.status_code != 404:
                logger.warning("deregistering worker %s: controller answered %s %s",
                               worker_id, response.status_code, response.text[:200])
        except httpx.HTTPError as exc:
            logger.warning("deregistering worker %s at %s failed: %s", worker_id, self.url, exc)

    async def stay_registered(self, registration: Registration, *, address: str, backend: str,
                              models: list[str], queue_length: Callable[[], int]) -> None:
        """Heartbeat until cancelled, registering again when dropped; deregister at the end.

        Errors (controller down, 5xx) are logged and retried at the heartbeat interval.
        """
        current: Registration | None = registration
        try:
            while True:
                await asyncio.sleep(current.heartbeat_interval_s if current else
                                    registration.heartbeat_interval_s)
                try:
                    if current is not None and not await self.heartbeat(
                        current.worker_id, queue_length=queue_length(), models=models
                    ):
                        logger.warning("controller %s dropped worker %s; registering again",
                                       self.url, current.worker_id)
                        current = None
                    if current is None:
                        current = await self.register(address=address, backend=backend,
                                                      models=models, queue_length=queue_length())
                        logger.info("registered again at %s as worker %s", self.url,
                                    current.worker_id)
                except (httpx.HTTPError, ControllerError) as exc:
                    logger.warning("controller %s: %s; retrying", self.url, exc)
        finally:
            if current is not None:
                await self.deregister(current.worker_id)

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise httpx.TransportError(
                f"cannot reach the controller at {self.url} ({type(exc).__name__}: {exc})"
            ) from exc

    def _json(self, response: httpx.Response, doing: str) -> dict[str, Any]:
        if response.status_code >= 400:
            raise ControllerError(
                f"{doing}: controller {self.url} answered {response.status_code}: "
                f"{_detail(response)}"
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise ControllerError(f"{doing}: controller {self.url} answered non-JSON") from exc
        if not isinstance(body, dict):
            raise ControllerError(f"{doing}: controller {self.url} answered {body!r}")
        return body


def _detail(response: httpx.Response) -> str:
    """The message of an error answer: FastAPI's ``detail``, OpenAI's ``error.message`` or text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])
        if "detail" in body:
            return str(body["detail"])
    return str(body)[:500]
