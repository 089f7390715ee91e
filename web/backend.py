"""What the UI asks of the control plane, answered in-process from the app it is mounted in.

Battles, direct chat and the registry call the domain functions (``arena.battles``,
``arena.registry``, the gateway) with the app's own engine, worker directory and gateway, the
same way the API routes do. The leaderboard is read through the app's own ``/api/leaderboard``
routes over an in-process ASGI transport (no socket), so the UI shows exactly what the API
serves. Handlers run on the server's event loop; blocking database work goes to a thread.
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
from arena.errors import ServerError
from arena.models import BattleCreate, BattleMode, BattlePublic, VoteChoice

logger = logging.getLogger(__name__)

PlotKind = Literal["ratings", "win_fraction", "battle_count"]
PLOT_KINDS: tuple[PlotKind, ...] = ("ratings", "win_fraction", "battle_count")


class UiError(ServerError):
    """The UI could not get what it needed from the control plane's API."""


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

    # --- leaderboard (through the app's own routes) ----------------------------------------

    def _client(self) -> httpx.AsyncClient:
        # raise_app_exceptions=False: a failing route answers 500 here, as it would over HTTP
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport,
                                 base_url="http://arena.local", timeout=60.0)

    async def leaderboard(self) -> dict[str, Any]:
        """``GET /api/leaderboard``: ``{"rows": [...], ...}``."""
        async with self._client() as client:
            response = await client.get("/api/leaderboard")
        if response.status_code != 200:
            raise UiError(f"the leaderboard is not available: {_error_text(response)}")
        return response.json()

    async def plot(self, kind: PlotKind) -> bytes | None:
        """``GET /api/leaderboard/plots/{kind}.png``; None when there is nothing to draw."""
        async with self._client() as client:
            response = await client.get(f"/api/leaderboard/plots/{kind}.png")
        if response.status_code >= 500:
            logger.warning("plot %s failed: %s", kind, _error_text(response))
        if response.status_code != 200 or not response.headers.get(
            "content-type", ""
        ).startswith("image/"):
            return None
        return response.content


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"
