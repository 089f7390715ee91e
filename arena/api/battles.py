"""``/api/battles`` (end-user actions: no key, rate-limited) and ``/api/votes`` (admin import/export).

A message or a regeneration answers as server-sent events, one JSON object per ``data:`` line
(see :func:`arena.battles.run_turn`). Errors found before the stream starts (unknown battle,
closed battle, moderation) are ordinary JSON error responses.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from sqlmodel import Session

from arena import battles, votes
from arena.api.deps import get_session, get_settings, require
from arena.battles import BattlePolicy
from arena.models import BattleCreate, BattleMessage, BattlePublic, BattleRegenerate, VoteCast
from arena.settings import Settings

router = APIRouter(prefix="/api/battles", tags=["battles"])
votes_router = APIRouter(prefix="/api/votes", tags=["votes"])


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.post("", response_model=BattlePublic, status_code=201)
def create_battle(
    data: BattleCreate,
    request: Request,
    session: Session = Depends(get_session, scope="function"),
    settings: Settings = Depends(get_settings),
) -> BattlePublic:
    battle = battles.create_battle(
        session, data=data, served=request.app.state.directory.served_models(),
        policy=BattlePolicy.from_settings(settings), ip=client_ip(request),
    )
    return battles.to_public(battle)


@router.get("/{battle_id}", response_model=BattlePublic)
def show_battle(
    battle_id: str, session: Session = Depends(get_session, scope="function")
) -> BattlePublic:
    return battles.battle_state(session, battle_id=battle_id)


@router.post("/{battle_id}/messages")
async def send_message(
    battle_id: str,
    data: BattleMessage,
    request: Request,
    session: Session = Depends(get_session, scope="function"),
) -> StreamingResponse:
    """Both models answer ``content`` (text/event-stream); the turn is stored when both finish."""
    return await _turn(request, session, battle_id=battle_id, content=data.content,
                       max_tokens=data.max_tokens, temperature=data.temperature)


@router.post("/{battle_id}/regenerate")
async def regenerate(
    battle_id: str,
    request: Request,
    data: BattleRegenerate | None = None,
    session: Session = Depends(get_session, scope="function"),
) -> StreamingResponse:
    """Both models answer the last user message again; the new answers replace the old."""
    data = data or BattleRegenerate()
    return await _turn(request, session, battle_id=battle_id, content=None,
                       max_tokens=data.max_tokens, temperature=data.temperature)


@router.post("/{battle_id}/vote", response_model=BattlePublic)
def vote(
    battle_id: str,
    data: VoteCast,
    request: Request,
    session: Session = Depends(get_session, scope="function"),
    settings: Settings = Depends(get_settings),
) -> BattlePublic:
    """Vote once (a, b, tie, bothbad); the answer reveals the models. Committed before it returns."""
    return battles.cast_vote(session, battle_id=battle_id, choice=data.winner,
                             ip=client_ip(request), policy=BattlePolicy.from_settings(settings))


async def _turn(
    request: Request, session: Session, *, battle_id: str, content: str | None, max_tokens: int,
    temperature: float,
) -> StreamingResponse:
    settings: Settings = request.app.state.settings
    plan = await asyncio.to_thread(
        battles.plan_turn, session, battle_id=battle_id, content=content,
        max_tokens=max_tokens, temperature=temperature,
    )
    if settings.moderation_url and content is not None:
        await battles.moderate(content, url=settings.moderation_url,
                               api_key=settings.moderation_api_key)
    events = battles.run_turn(plan, gateway=request.app.state.gateway,
                              engine=request.app.state.engine,
                              policy=BattlePolicy.from_settings(settings))
    return StreamingResponse(_sse(events), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _sse(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async for event in events:
        yield b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n"


@votes_router.post("/import", dependencies=[Depends(require("admin"))])
def import_votes(
    records: list[Any], session: Session = Depends(get_session, scope="function")
) -> dict[str, int]:
    """Store a FastChat clean_battle log (validated whole first: a bad record imports nothing)."""
    return {"imported": votes.import_votes(session, records=records)}


@votes_router.get("/export", dependencies=[Depends(require("admin"))])
def export_votes(session: Session = Depends(get_session, scope="function")) -> list[dict[str, Any]]:
    """Every vote with model names, in FastChat's clean_battle format (flagged ones marked)."""
    return votes.export_votes(session)
