"""``/api/leaderboard``: ratings, intervals and ranks as JSON, and their pictures as PNG.

Open to read. Every route takes the same query parameters (the filter, the method, the anchor);
a bad value is a 400 naming the parameter.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import ValidationError
from sqlmodel import Session

from arena import leaderboard
from arena.api.deps import get_session, get_settings
from arena.errors import ClientError
from arena.leaderboard import LeaderboardCache, LeaderboardPublic
from arena.ratings import RatingFilter
from arena.settings import Settings

router = APIRouter(prefix="/api/leaderboard", tags=["leaderboard"])


def board_query(
    settings: Settings = Depends(get_settings),
    anonymous_only: bool = Query(True, description="Only votes cast before the names showed."),
    language: str | None = Query(None, description="Only votes in this language (any case)."),
    min_turns: int = Query(1, description="Only battles with at least this many turns."),
    exclude_flagged: bool = Query(True, description="Leave out flagged votes."),
    since: str | None = Query(None, description="Votes at or after: unix seconds or ISO 8601."),
    until: str | None = Query(None, description="Votes before: unix seconds or ISO 8601."),
    method: str = Query("bootstrap", description="bootstrap | sandwich (intervals)."),
    rounds: int | None = Query(None, description="Bootstrap rounds (default 1000, at most 10000)."),
    seed: int = Query(0, description="Bootstrap seed."),
    anchor: str | None = Query(None, description="MODEL:RATING, e.g. vicuna-7b:1000."),
    reference: str | None = Query(
        None, description="Judge-ratio column against this checkpoint (default: "
        "ARENA_LEADERBOARD_REFERENCE, else the most judged reference)."),
) -> dict[str, Any]:
    """The query parameters as `arena.leaderboard.leaderboard` keyword arguments."""
    fields: dict[str, Any] = {"anonymous_only": anonymous_only, "language": language, "min_turns": min_turns,
              "exclude_flagged": exclude_flagged, "since": _time(since, "since"),
              "until": _time(until, "until")}  # fmt: skip
    try:
        flt = RatingFilter(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        param = str(error["loc"][0]) if error["loc"] else "until"  # the since < until check
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ClientError(f"{param}: {message}", param=param) from None
    return {
        "filter": flt,
        "method": method,
        "rounds": settings.leaderboard_rounds if rounds is None else rounds,
        "seed": seed,
        "anchor": None if anchor is None else leaderboard.parse_anchor(anchor),
        "reference": reference or settings.leaderboard_reference,
    }


def _time(value: str | None, param: str) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            seconds = math.nan
        else:
            seconds = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    if not math.isfinite(seconds):
        raise ClientError(
            f"{param} must be unix seconds or an ISO 8601 time, got {value!r}", param=param
        )
    return seconds


def get_cache(request: Request) -> LeaderboardCache:
    return request.app.state.leaderboard_cache


@router.get("", response_model=LeaderboardPublic)
def show_leaderboard(
    query: dict[str, Any] = Depends(board_query),
    cache: LeaderboardCache = Depends(get_cache),
    session: Session = Depends(get_session, scope="function"),
) -> LeaderboardPublic:
    return leaderboard.leaderboard(session, cache=cache, **query)


@router.get("/human")
def human_evaluation(
    query: dict[str, Any] = Depends(board_query),
    reference: str | None = Query(None, description="Only pairs with this model, from its "
                                  "opponents' side (as LLMZoo reports every model against "
                                  "ChatGPT)."),
    session: Session = Depends(get_session, scope="function"),
) -> dict[str, Any]:
    """Win / tie / lose counts per model pair from the votes (the same filter as the board)."""
    pairs = leaderboard.human_evaluation(session, filter=query["filter"], reference=reference)
    return {"pairs": pairs, "reference": reference}


@router.get(
    "/plots/{kind}.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def show_plot(
    kind: str,
    query: dict[str, Any] = Depends(board_query),
    cache: LeaderboardCache = Depends(get_cache),
    session: Session = Depends(get_session, scope="function"),
) -> Response:
    """``kind``: ratings, win_fraction, battle_count or predicted_win_rate."""
    png = leaderboard.leaderboard_plot(session, kind=kind, cache=cache, **query)
    return Response(png, media_type="image/png")
