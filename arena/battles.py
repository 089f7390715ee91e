"""Battles: two models answer the same conversation side by side, a human votes, names are revealed.

Anonymity is a security property: until the vote, nothing this module hands out (public schema,
stream event, error message) names the models of an anonymous battle; they are "Model A" and
"Model B". A battle takes one vote, then it is closed. Answers that reveal a model's identity
(a word list plus the two models' names) keep the battle but flag it, so ratings can skip it.
Rate limits are counted from the rows' timestamps, so they hold across control-plane replicas.

Functions here know nothing of HTTP; the API router and the web UI call them alike.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select, update

from arena.db import session_scope
from arena.errors import (
    ArenaError,
    ClientError,
    Conflict,
    NotFound,
    NoWorkerAvailable,
    RateLimited,
    ServerError,
)
from arena.gateway import Gateway
from arena.models import Battle, BattleCreate, BattlePublic, Checkpoint, Vote, VoteChoice
from arena.settings import Settings

logger = logging.getLogger(__name__)

SIDES = ("a", "b")
ANONYMOUS_LABELS = ("Model A", "Model B")
WINNERS: dict[str, str] = {"a": "model_a", "b": "model_b", "tie": "tie", "bothbad": "tie (bothbad)"}
WINDOW_S = 60.0  # rate limits count the rows of the last minute


@dataclass(frozen=True)
class BattlePolicy:
    """The settings battles obey, gathered so domain functions take one argument for them."""

    weights: Mapping[str, float] = field(default_factory=dict)
    identity_words: Sequence[str] = ()
    battles_per_minute: int = 20
    votes_per_minute: int = 20

    @classmethod
    def from_settings(cls, settings: Settings) -> BattlePolicy:
        return cls(
            weights=settings.battle_weights,
            identity_words=tuple(settings.identity_words),
            battles_per_minute=settings.battles_per_minute,
            votes_per_minute=settings.votes_per_minute,
        )


# --- sampling, flagging, rate limits --------------------------------------------------------


def sample_pair(
    served: Mapping[str, int], *, weights: Mapping[str, float], rng: random.Random | None = None
) -> tuple[str, str]:
    """Two distinct models with a healthy worker, drawn by weight (default 1.0), random order."""
    rng = rng or random.Random()
    pool = {}
    for model, workers in served.items():
        weight = weights.get(model, 1.0)
        if workers > 0 and math.isfinite(weight) and weight > 0:
            pool[model] = weight
    if len(pool) < 2:
        raise NoWorkerAvailable("need at least two models with a healthy worker for a battle")
    first = _draw(pool, rng)
    del pool[first]
    return first, _draw(pool, rng)


def _draw(pool: Mapping[str, float], rng: random.Random) -> str:
    names = sorted(pool)
    return rng.choices(names, weights=[pool[n] for n in names], k=1)[0]


def identity_word(texts: Iterable[str], words: Iterable[str]) -> str | None:
    """The longest of ``words`` found in ``texts`` as a whole word, any case; None if none is."""
    joined = "\n".join(texts)
    for word in sorted(words, key=lambda w: len(w.strip()), reverse=True):
        if word.strip() and re.search(
            r"(?<!\w)" + re.escape(word.strip()) + r"(?!\w)", joined, flags=re.IGNORECASE
        ):
            return word.strip()
    return None


def check_rate(
    session: Session, *, table: type[Battle] | type[Vote], limit: int, session_id: str, ip: str,
    now: float,
) -> None:
    """Refuse (429) when this session or this address made ``limit`` rows in the last minute."""
    what = "battles" if table is Battle else "votes"
    for column, value, who in (
        (table.session_id, session_id, "this session"),
        (table.ip, ip, "this address"),
    ):
        count, oldest = session.exec(  # type: ignore[call-overload]
            select(func.count(), func.min(table.tstamp)).where(
                col(column) == value, col(table.tstamp) > now - WINDOW_S
            )
        ).one()
        if count >= limit:
            retry = max(1, math.ceil(oldest + WINDOW_S - now))
            raise RateLimited(
                f"too many {what}: {who} may make {limit} {what} a minute; "
                f"try again in {retry} s",
                retry_after_s=retry,
            )


def guess_language(text: str) -> str:
    """A script-based guess, enough to split a leaderboard by language (Latin: English)."""
    for name, pattern in (
        ("Japanese", r"[\u3040-\u30ff]"),
        ("Korean", r"[\uac00-\ud7af]"),
        ("Chinese", r"[\u4e00-\u9fff]"),
        ("Russian", r"[\u0400-\u04ff]"),
    ):
        if re.search(pattern, text):
            return name
    return "English" if re.search(r"[A-Za-z]", text) else "unknown"


# --- battle life cycle -----------------------------------------------------------------------


def create_battle(
    session: Session, *, data: BattleCreate, served: Mapping[str, int], policy: BattlePolicy,
    ip: str, now: float | None = None, rng: random.Random | None = None,
) -> Battle:
    """Start a battle: two sampled models (anonymous) or the two the user named."""
    now = time.time() if now is None else now
    check_rate(session, table=Battle, limit=policy.battles_per_minute,
               session_id=data.session_id, ip=ip, now=now)
    if data.mode == "anonymous":
        if data.model_a or data.model_b:
            raise ClientError("an anonymous battle picks its own models; leave model_a/model_b out",
                              param="mode")
        model_a, model_b = sample_pair(served, weights=policy.weights, rng=rng)
    else:
        for param, name in (("model_a", data.model_a), ("model_b", data.model_b)):
            if not name:
                raise ClientError(f"a named battle needs {param}", param=param)
            if served.get(name, 0) <= 0:
                raise ClientError(f"no healthy worker is serving model {name!r}", param=param)
        if data.model_a == data.model_b:
            raise ClientError("model_a and model_b must be different models", param="model_b")
        model_a, model_b = str(data.model_a), str(data.model_b)
    battle = Battle(id=secrets.token_hex(16), mode=data.mode, model_a=model_a, model_b=model_b,
                    session_id=data.session_id, ip=ip, tstamp=now)
    session.add(battle)
    session.flush()
    return battle


def get_battle(session: Session, *, battle_id: str) -> Battle:
    battle = session.get(Battle, battle_id)
    if battle is None:
        raise NotFound(f"no battle with id {battle_id!r}", param="battle_id")
    return battle


def to_public(battle: Battle, vote: Vote | None = None) -> BattlePublic:
    """The client's view: names only in named mode or after the vote."""
    revealed = battle.mode == "named" or battle.status == "voted"
    return BattlePublic(
        id=battle.id, mode=battle.mode, status=battle.status,
        models=[battle.model_a, battle.model_b] if revealed else list(ANONYMOUS_LABELS),
        model_a=battle.model_a if revealed else None,
        model_b=battle.model_b if revealed else None,
        turns=battle.turns,
        conversation_a=battle.conversation_a, conversation_b=battle.conversation_b,
        winner=vote.winner if vote else None,
        flagged=battle.flagged if battle.status == "voted" else None,
        flag_word=battle.flag_word if battle.status == "voted" else None,
    )


def battle_state(session: Session, *, battle_id: str) -> BattlePublic:
    battle = get_battle(session, battle_id=battle_id)
    vote = session.exec(select(Vote).where(Vote.battle_id == battle_id)).first()
    return to_public(battle, vote)


def cast_vote(
    session: Session, *, battle_id: str, choice: VoteChoice, ip: str, policy: BattlePolicy,
    now: float | None = None,
) -> BattlePublic:
    """Record the vote (once per battle), close the battle and reveal the names."""
    now = time.time() if now is None else now
    battle = get_battle(session, battle_id=battle_id)
    if battle.status == "voted":
        raise Conflict("this battle has already been voted on; start a new battle")
    if battle.turns == 0:
        raise ClientError("nothing to vote on yet: the battle has no answered message",
                          param="battle_id")
    check_rate(session, table=Vote, limit=policy.votes_per_minute,
               session_id=battle.session_id, ip=ip, now=now)
    # conditional update: of two racing votes (any replica) exactly one finds the battle open
    closed = session.exec(  # type: ignore[call-overload]
        update(Battle).where(col(Battle.id) == battle_id, col(Battle.status) == "open")
        .values(status="voted")
    )
    if closed.rowcount != 1:
        raise Conflict("this battle has already been voted on; start a new battle")
    vote = Vote(
        battle_id=battle.id, model_a=battle.model_a, model_b=battle.model_b,
        winner=WINNERS[choice], tstamp=now, anony=battle.mode == "anonymous",
        language=battle.language or "unknown", turn=battle.turns, flagged=battle.flagged,
        flag_word=battle.flag_word, source="arena", session_id=battle.session_id, ip=ip,
    )
    session.add(vote)
    session.flush()
    session.refresh(battle)
    return to_public(battle, vote)


# --- turns: both sides answer concurrently ---------------------------------------------------


@dataclass(frozen=True)
class TurnPlan:
    """Everything a turn needs once the request's session is gone (plain data only)."""

    battle_id: str
    models: tuple[str, str]
    labels: tuple[str, str]
    bases: tuple[list[dict[str, Any]], list[dict[str, Any]]]  # conversations as read
    prompts: tuple[list[dict[str, Any]], list[dict[str, Any]]]  # messages sent to each side
    max_tokens: int
    temperature: float
    secrets: dict[str, str]  # text that would reveal a model → what to show instead


def plan_turn(
    session: Session, *, battle_id: str, content: str | None, max_tokens: int, temperature: float,
) -> TurnPlan:
    """Check the battle can take a turn; ``content=None`` regenerates the last answers."""
    battle = get_battle(session, battle_id=battle_id)
    if battle.status != "open":
        raise Conflict("this battle is over (already voted); start a new battle")
    bases = (list(battle.conversation_a), list(battle.conversation_b))
    if content is None:
        if battle.turns == 0:
            raise ClientError("nothing to regenerate: the battle has no answered message")
        prompts = (bases[0][:-1], bases[1][:-1])
    else:
        if not content.strip():
            raise ClientError("the message is empty", param="content")
        user = {"role": "user", "content": content}
        prompts = (bases[0] + [user], bases[1] + [user])
    anonymous = battle.mode == "anonymous"
    labels = ANONYMOUS_LABELS if anonymous else (battle.model_a, battle.model_b)
    return TurnPlan(
        battle_id=battle.id, models=(battle.model_a, battle.model_b), labels=labels,
        bases=bases, prompts=prompts, max_tokens=max_tokens, temperature=temperature,
        secrets=_secrets(session, battle) if anonymous else {},
    )


def _secrets(session: Session, battle: Battle) -> dict[str, str]:
    """Names and registry paths of the two models, mapped to the side labels or '[hidden]'."""
    hidden = {battle.model_a: ANONYMOUS_LABELS[0], battle.model_b: ANONYMOUS_LABELS[1]}
    rows = session.exec(
        select(Checkpoint).where(col(Checkpoint.name).in_([battle.model_a, battle.model_b]))
    ).all()
    for row in rows:
        for path in (row.source, row.adapter, row.delta_base, row.materialized_path):
            if path and len(path) > 3:
                hidden.setdefault(path, "[hidden]")
    return hidden


def scrub(text: str, hidden: Mapping[str, str]) -> str:
    """Replace every hidden string (any case), longest first, by its stand-in."""
    for secret in sorted(hidden, key=len, reverse=True):
        text = re.sub(re.escape(secret), hidden[secret], text, flags=re.IGNORECASE)
    return text


def side_error(label: str, exc: BaseException, hidden: Mapping[str, str]) -> str:
    """A side's failure, naming only the side."""
    if isinstance(exc, ArenaError):
        detail = exc.message
    elif isinstance(exc, httpx.HTTPError):
        detail = f"the connection to its worker failed ({type(exc).__name__})"
    else:
        detail = f"internal error ({type(exc).__name__})"
    return f"{label} failed to answer: {scrub(detail, hidden)}"


async def run_turn(
    plan: TurnPlan, *, gateway: Gateway, engine: Engine, policy: BattlePolicy
) -> AsyncIterator[dict[str, Any]]:
    """Stream both sides concurrently as events; store the turn once both answered.

    Events: ``{"side", "delta"}``, ``{"side", "done", "finish_reason"}``, ``{"side", "error"}``,
    then ``{"done": true, "stored": bool, "turns"?: int, "error"?: str}``.
    """
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    answers: dict[str, list[str]] = {"a": [], "b": []}
    failed: set[str] = set()

    async def side(index: int) -> None:
        key = SIDES[index]
        finish: str | None = None
        try:
            async for piece in gateway.stream_chat(
                plan.models[index], plan.prompts[index],
                max_tokens=plan.max_tokens, temperature=plan.temperature,
            ):
                if piece.text:
                    answers[key].append(piece.text)
                    await queue.put({"side": key, "delta": piece.text})
                finish = piece.finish_reason or finish
            await queue.put({"side": key, "done": True, "finish_reason": finish})
        except Exception as exc:  # a side's boundary: report it under the side's label
            if not isinstance(exc, ArenaError | httpx.HTTPError):
                logger.exception("battle %s side %s failed", plan.battle_id, key)
            failed.add(key)
            await queue.put({"side": key, "error": side_error(plan.labels[index], exc, plan.secrets)})
        finally:
            await queue.put(None)

    tasks = [asyncio.create_task(side(i)) for i in range(2)]
    try:
        ended = 0
        while ended < 2:
            event = await queue.get()
            if event is None:
                ended += 1
            else:
                yield event
    finally:  # the client went away, or both ended: never leave a side running
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if failed:
        yield {"done": True, "stored": False}
        return
    try:
        turns = await asyncio.to_thread(
            _store_turn, engine, plan, ("".join(answers["a"]), "".join(answers["b"])), policy
        )
    except ClientError as exc:
        yield {"done": True, "stored": False, "error": exc.message}
        return
    yield {"done": True, "stored": True, "turns": turns}


def _store_turn(
    engine: Engine, plan: TurnPlan, answers: tuple[str, str], policy: BattlePolicy
) -> int:
    with session_scope(engine) as session:
        return store_turn(session, plan=plan, answers=answers, policy=policy)


def store_turn(
    session: Session, *, plan: TurnPlan, answers: tuple[str, str], policy: BattlePolicy
) -> int:
    """Append (or replace, on regenerate) the answers; flag the battle if they reveal a model."""
    battle = get_battle(session, battle_id=plan.battle_id)
    if battle.status != "open":
        raise Conflict("the battle was voted on while answering; the answers were not stored")
    if (battle.conversation_a, battle.conversation_b) != plan.bases:
        raise Conflict("the battle changed while answering (another message was sent); "
                       "the answers were not stored")
    conversations = [
        plan.prompts[i] + [{"role": "assistant", "content": answers[i]}] for i in range(2)
    ]
    battle.conversation_a, battle.conversation_b = conversations
    battle.turns = sum(1 for m in conversations[0] if m["role"] == "user")
    if battle.language is None:
        battle.language = guess_language(str(conversations[0][0]["content"]))
    if not battle.flagged:  # sticky: the voter has seen the revealing answer
        word = identity_word(answers, [*policy.identity_words, *plan.models])
        if word is not None:
            battle.flagged, battle.flag_word = True, word
    session.add(battle)
    session.flush()
    return battle.turns


# --- moderation --------------------------------------------------------------------------------


class ModerationUnavailable(ServerError):
    status_code = 503
    code = "moderation_unavailable"


async def moderate(text: str, *, url: str, api_key: str | None) -> None:
    """Refuse (400) a message the OpenAI-compatible moderation endpoint at ``url`` flags."""
    from openai import AsyncOpenAI, OpenAIError

    client = AsyncOpenAI(base_url=url, api_key=api_key or "unused", max_retries=1, timeout=30.0)
    try:
        result = await client.moderations.create(input=text)
    except OpenAIError as exc:
        raise ModerationUnavailable(f"the moderation service failed: {exc}") from exc
    finally:
        await client.close()
    if any(r.flagged for r in result.results):
        raise ClientError("message refused by moderation", param="content")
