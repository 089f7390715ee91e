"""What the UI asks of the control plane, answered in-process from the app it is mounted in.

Battles, direct chat and the registry call the domain functions (``arena.battles``,
``arena.registry``, the gateway) with the app's own engine, worker directory and gateway, the
same way the API routes do. Everything else (leaderboard, evaluation results, jobs,
fine-tuning) goes through the app's own HTTP routes over an in-process ASGI transport (no
socket), so the UI shows exactly what the API serves and writes are checked by the same API
keys. Handlers run on the server's event loop; blocking database work goes to a thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from fastapi import FastAPI

from arena import battles, registry
from arena.battles import BattlePolicy
from arena.db import session_scope
from arena.errors import ArenaError, ServerError
from arena.models import BattleCreate, BattleMode, BattlePublic, VoteChoice

logger = logging.getLogger(__name__)

PlotKind = Literal["ratings", "win_fraction", "battle_count"]
PLOT_KINDS: tuple[PlotKind, ...] = ("ratings", "win_fraction", "battle_count")


class UiError(ServerError):
    """The UI could not get what it needed from the control plane's API."""


class ApiError(ArenaError):
    """The API refused or failed a request; ``message`` is the API's own."""

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class Caller:
    """Who is acting: the browser session (rate limits count per session and per address)."""

    session_id: str
    ip: str


class Backend:
    """The control plane as the UI sees it; reads ``app.state`` at call time (after startup)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    @property
    def _state(self) -> Any:
        return self.app.state

    def _policy(self) -> BattlePolicy:
        return BattlePolicy.from_settings(self._state.settings)

    # --- battles ---------------------------------------------------------------------------

    async def start_battle(
        self, caller: Caller, *, mode: BattleMode, model_a: str | None = None,
        model_b: str | None = None,
    ) -> BattlePublic:
        """A new battle; anonymous ones come back with the names hidden."""
        data = BattleCreate(mode=mode, model_a=model_a, model_b=model_b,
                            session_id=caller.session_id)

        def create() -> BattlePublic:
            with session_scope(self._state.engine) as session:
                battle = battles.create_battle(
                    session, data=data, served=self._state.directory.served_models(),
                    policy=self._policy(), ip=caller.ip,
                )
                return battles.to_public(battle)

        return await asyncio.to_thread(create)

    async def turn(
        self, battle_id: str, *, content: str | None, max_tokens: int = 256,
        temperature: float = 0.7,
    ) -> AsyncIterator[dict[str, Any]]:
        """Both sides answer (``content=None``: regenerate); the events of :func:`battles.run_turn`."""

        def plan() -> battles.TurnPlan:
            with session_scope(self._state.engine) as session:
                return battles.plan_turn(session, battle_id=battle_id, content=content,
                                         max_tokens=max_tokens, temperature=temperature)

        turn_plan = await asyncio.to_thread(plan)
        settings = self._state.settings
        if settings.moderation_url and content is not None:
            await battles.moderate(content, url=settings.moderation_url,
                                   api_key=settings.moderation_api_key)
        async for event in battles.run_turn(turn_plan, gateway=self._state.gateway,
                                            engine=self._state.engine, policy=self._policy()):
            yield event

    async def vote(self, caller: Caller, battle_id: str, choice: VoteChoice) -> BattlePublic:
        """Cast the battle's one vote; the answer names both models."""

        def cast() -> BattlePublic:
            with session_scope(self._state.engine) as session:
                return battles.cast_vote(session, battle_id=battle_id, choice=choice,
                                         ip=caller.ip, policy=self._policy())

        return await asyncio.to_thread(cast)

    # --- models and direct chat ------------------------------------------------------------

    async def served_models(self) -> dict[str, int]:
        """Model name → number of healthy workers serving it."""
        return await asyncio.to_thread(self._state.directory.served_models)

    async def checkpoints(self) -> list[dict[str, Any]]:
        """Registered checkpoints (with their parent's name) and whether a worker serves them."""

        def read() -> list[dict[str, Any]]:
            served = self._state.directory.served_models()
            with session_scope(self._state.engine) as session:
                rows = [registry.to_public(session, row)
                        for row in registry.list_checkpoints(session)]
            return [{**row.model_dump(), "served": served.get(row.name, 0) > 0} for row in rows]

        return await asyncio.to_thread(read)

    async def chat(
        self, model: str, messages: list[dict[str, Any]], *, max_tokens: int, temperature: float
    ) -> AsyncIterator[str]:
        """Stream a chat answer from ``model`` through the gateway: text pieces."""
        async for piece in self._state.gateway.stream_chat(
            model, messages, max_tokens=max_tokens, temperature=temperature
        ):
            if piece.text:
                yield piece.text

    # --- the HTTP API (the app's own routes, in-process) -----------------------------------

    def _client(self) -> httpx.AsyncClient:
        # raise_app_exceptions=False: a failing route answers 500 here, as it would over HTTP
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport,
                                 base_url="http://arena.local", timeout=60.0)

    async def _call(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                    json: Any = None, api_key: str | None = None) -> httpx.Response:
        """One request; empty query values are left out, a key becomes ``Authorization``."""
        key = (api_key or "").strip()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        query = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
        async with self._client() as client:
            response = await client.request(method, path, params=query, json=json,
                                            headers=headers)
        if response.status_code >= 500:
            logger.warning("%s %s failed: %s", method, path, _error_text(response))
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._call(method, path, **kwargs)
        if response.status_code >= 400:
            raise ApiError(_error_text(response), status_code=response.status_code)
        return response.json()

    async def _png(self, path: str, **params: Any) -> bytes | None:
        """A PNG route's image; None when it answers anything else (nothing to draw)."""
        response = await self._call("GET", path, params=params)
        if response.status_code != 200 or not response.headers.get(
            "content-type", ""
        ).startswith("image/"):
            return None
        return response.content

    # leaderboard and evaluation results

    async def leaderboard(self, *, reference: str | None = None) -> dict[str, Any]:
        """``GET /api/leaderboard``: ``{"rows": [...], "judge_reference", ...}``."""
        try:
            return await self._json("GET", "/api/leaderboard", params={"reference": reference})
        except ApiError as exc:
            raise UiError(f"the leaderboard is not available: {exc.message}") from None

    async def plot(self, kind: PlotKind) -> bytes | None:
        """``GET /api/leaderboard/plots/{kind}.png``; None when there is nothing to draw."""
        return await self._png(f"/api/leaderboard/plots/{kind}.png")

    async def runs(self, *, reference: str | None = None) -> dict[str, Any]:
        """``GET /api/runs``: evaluation runs, benchmark scores, judge ratios."""
        return await self._json("GET", "/api/runs", params={"reference": reference})

    async def judge_plot(self, *, reference: str | None = None) -> bytes | None:
        """``GET /api/runs/judge.png``: judge ratio per category against ``reference``."""
        return await self._png("/api/runs/judge.png", reference=reference)

    async def human_pairs(self, *, reference: str | None = None) -> list[dict[str, Any]] | None:
        """``GET /api/leaderboard/human``: win/tie/lose per pair; None where the route is
        missing (a 404 without our error body), so the UI can say "not available"."""
        response = await self._call("GET", "/api/leaderboard/human",
                                    params={"reference": reference})
        if response.status_code == 404 and not _is_api_error(response):
            return None
        if response.status_code >= 400:
            raise ApiError(_error_text(response), status_code=response.status_code)
        return list(response.json().get("pairs") or [])

    # jobs

    async def jobs(self, *, kind: str | None = None, state: str | None = None,
                   limit: int = 100) -> list[dict[str, Any]]:
        """``GET /api/jobs``, newest first."""
        return await self._json("GET", "/api/jobs",
                                params={"kind": kind, "state": state, "limit": limit})

    async def job(self, job_id: int) -> dict[str, Any]:
        return await self._json("GET", f"/api/jobs/{job_id}")

    async def job_events(self, job_id: int) -> list[dict[str, Any]]:
        return await self._json("GET", f"/api/jobs/{job_id}/events")

    async def job_metrics(self, job_id: int) -> list[dict[str, Any]]:
        """The loss curve: ``[{step, loss, learning_rate, tokens_per_s, tstamp}]``."""
        return await self._json("GET", f"/api/jobs/{job_id}/metrics")

    async def subjects_plot(self, job_id: int) -> bytes | None:
        """A finished benchmark run's accuracy per subject."""
        return await self._png(f"/api/jobs/{job_id}/subjects.png")

    async def cancel_job(self, job_id: int, *, api_key: str | None) -> dict[str, Any]:
        return await self._json("POST", f"/api/jobs/{job_id}/cancel", api_key=api_key)

    async def finetune(self, body: dict[str, Any], *, api_key: str | None) -> dict[str, Any]:
        """``POST /api/finetune``: the queued job, or :class:`ApiError` with the refusal."""
        return await self._json("POST", "/api/finetune", json=body, api_key=api_key)


def _is_api_error(response: httpx.Response) -> bool:
    try:
        return isinstance(response.json().get("error"), dict)
    except (ValueError, AttributeError):
        return False


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"
