"""The leaderboard: ratings, intervals, ranks and pair matrices, one row per model.

`compute_ratings` works on votes in memory (a list, a log file). `leaderboard` works on the
database: the votes are counted per ``(model_a, model_b, winner)`` by SQL ``GROUP BY``, so a
million votes cost one aggregate query and never become ORM rows; the fit is cached for a few
seconds (the UI polls); and the rows are joined with the registry, so a registered checkpoint
without votes, and a model known only from imported votes, each get a row.
"""

from __future__ import annotations

import io
import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field
from sqlalchemy import func
from sqlmodel import Session, col, select

from arena import results
from arena.errors import ClientError, NotFound
from arena.models import Checkpoint
from arena.models import Vote as VoteRow
from arena.ratings import (
    BASE,
    SCALE,
    Anchor,
    PairCounts,
    RatingFilter,
    aggregate,
    bootstrap,
    fit_bt,
    ranks,
    sandwich_se,
)
from arena.ratings_plots import plot_heatmap, plot_ratings

Method = Literal["bootstrap", "sandwich"]
MAX_ROUNDS = 10_000  # ≈ 10 s of bootstrap at 50 models on one core; more buys no precision
PLOT_KINDS = ("ratings", "win_fraction", "battle_count", "predicted_win_rate")
_MATRICES = {"win_fraction", "battle_count", "predicted_win_rate"}
_ECHOED = {"votes", "method", "rounds", "seed", "anchor", "filter"}  # parameters, echoed back


class ModelRating(BaseModel):
    """One rated model."""

    model: str
    rating: float = Field(description="Bradley–Terry maximum likelihood, Elo scale.")
    ci_low: float = Field(description="Lower end of the 95% interval.")
    ci_high: float = Field(description="Upper end of the 95% interval.")
    rank: int = Field(description="1 + number of models whose ci_low exceeds this ci_high.")
    votes: int
    wins: int
    losses: int
    ties: int
    win_rate: float = Field(description="(wins + ties / 2) / votes.")


class RatingsResult(BaseModel):
    """Ratings and pair matrices. Matrices are indexed [row][column] in the order of ``models``
    (best first); a cell is about the row model against the column model, None where undefined
    (the diagonal, pairs that never met)."""

    models: list[str] = Field(default_factory=list)
    ratings: list[ModelRating] = Field(default_factory=list)
    win_fraction: list[list[float | None]] = Field(
        default_factory=list, description="(row wins + ties / 2) / battles, as the fit counts."
    )
    battle_count: list[list[int]] = Field(default_factory=list)
    predicted_win_rate: list[list[float | None]] = Field(
        default_factory=list, description="P(row beats column) from the fitted ratings."
    )
    votes: int = Field(default=0, description="Votes that passed the filter.")
    method: Method = "bootstrap"
    rounds: int = 0
    seed: int = 0
    anchor: Anchor | None = None
    filter: RatingFilter = Field(default_factory=RatingFilter)


def compute_ratings(
    votes: Iterable[Any],
    *,
    filter: RatingFilter | None = None,
    method: Method = "bootstrap",
    rounds: int = 1000,
    seed: int = 0,
    anchor: Anchor | None = None,
) -> RatingsResult:
    """The leaderboard from raw votes: filter, count, fit, intervals, ranks and matrices."""
    flt = filter or RatingFilter()
    kept = flt.apply(votes)
    return ratings_from_counts(
        aggregate(kept), votes=len(kept), filter=flt, method=method, rounds=rounds, seed=seed,
        anchor=anchor,
    )  # fmt: skip


def ratings_from_counts(
    counts: PairCounts,
    *,
    votes: int,
    filter: RatingFilter,
    method: Method,
    rounds: int,
    seed: int,
    anchor: Anchor | None,
) -> RatingsResult:
    """`compute_ratings` on votes already counted (``votes`` of them passed ``filter``)."""
    if method not in ("bootstrap", "sandwich"):
        raise ClientError(f"unknown method {method!r}; use bootstrap or sandwich", param="method")
    info: dict[str, Any] = {"votes": votes, "method": method, "seed": seed, "filter": filter}
    info |= {"anchor": anchor, "rounds": rounds if method == "bootstrap" else 0}
    if len(counts.models) < 2:
        return RatingsResult.model_validate(info)
    if anchor is not None and anchor[0] not in counts.models:
        raise ClientError(f"anchor: model {anchor[0]!r} has no votes here", param="anchor")
    ratings = fit_bt(counts, anchor=anchor)
    if method == "bootstrap":
        samples = bootstrap(counts, rounds=rounds, seed=seed, anchor=anchor, start=ratings)
        low, high = np.percentile(samples, [2.5, 97.5], axis=0)
    else:
        se = sandwich_se(counts, ratings, anchor=anchor)
        low, high = ratings - 1.96 * se, ratings + 1.96 * se
    rank = ranks(low, high)
    order = sorted(range(len(ratings)), key=lambda k: (-ratings[k], counts.models[k]))
    return RatingsResult(
        models=[counts.models[k] for k in order],
        ratings=_rows(counts, ratings, low, high, rank, order),
        **_matrices(counts, ratings, order),
        **info,
    )


def _rows(
    counts: PairCounts, ratings: np.ndarray, low: np.ndarray, high: np.ndarray,
    rank: np.ndarray, order: list[int],
) -> list[ModelRating]:  # fmt: skip
    m = len(counts.models)

    def per_model(at_i: np.ndarray, at_j: np.ndarray) -> np.ndarray:
        return np.bincount(counts.i, at_i, m) + np.bincount(counts.j, at_j, m)

    wins = per_model(counts.wins_i, counts.wins_j)
    losses = per_model(counts.wins_j, counts.wins_i)
    ties = per_model(counts.ties, counts.ties)
    votes = wins + losses + ties
    return [
        ModelRating(
            model=counts.models[k],
            rating=ratings[k],
            ci_low=low[k],
            ci_high=high[k],
            rank=int(rank[k]),
            votes=int(votes[k]),
            wins=int(wins[k]),
            losses=int(losses[k]),
            ties=int(ties[k]),
            win_rate=(wins[k] + 0.5 * ties[k]) / max(votes[k], 1),
        )
        for k in order
    ]


def _matrices(counts: PairCounts, ratings: np.ndarray, order: list[int]) -> dict[str, Any]:
    m = len(counts.models)
    battles = np.zeros((m, m), dtype=np.int64)
    won = np.zeros((m, m))  # row's wins + ties / 2 against column
    battles[counts.i, counts.j] = battles[counts.j, counts.i] = counts.battles
    won[counts.i, counts.j] = counts.wins_i + 0.5 * counts.ties
    won[counts.j, counts.i] = counts.wins_j + 0.5 * counts.ties
    predicted = 1.0 / (1.0 + BASE ** ((ratings[None, :] - ratings[:, None]) / SCALE))
    pos = np.ix_(order, order)
    battles, won, predicted = battles[pos], won[pos], predicted[pos]
    return {
        "battle_count": battles.tolist(),
        "win_fraction": [
            [won[r, c] / battles[r, c] if battles[r, c] else None for c in range(m)]
            for r in range(m)
        ],
        "predicted_win_rate": [
            [None if r == c else float(predicted[r, c]) for c in range(m)] for r in range(m)
        ],
    }


# --- the leaderboard over the database ----------------------------------------------------


class LeaderboardRow(BaseModel):
    """One model: rated ones first (best first), then registered checkpoints without votes."""

    model: str
    rating: float | None = Field(default=None, description="Elo scale; None without votes.")
    ci_low: float | None = Field(default=None, description="Lower end of the 95% interval.")
    ci_high: float | None = Field(default=None, description="Upper end of the 95% interval.")
    rank: int | None = Field(default=None, description="1 + models whose interval lies above.")
    votes: int = 0
    wins: int = 0
    losses: int = 0
    ties: int = 0
    win_rate: float | None = Field(default=None, description="(wins + ties / 2) / votes.")
    registered: bool = Field(description="False: known only from (imported) votes.")
    parent: str | None = Field(default=None, description="Parent checkpoint in the registry.")
    judge_ratio: float | None = Field(
        default=None, description="LLM-judge score ratio against the reference, in percent "
        "(100 × Σ own scores / Σ reference scores); None without a finished ratio run.")
    judge_ci_low: float | None = Field(default=None, description="95% interval of the ratio.")
    judge_ci_high: float | None = Field(default=None, description="95% interval of the ratio.")
    mmlu: float | None = Field(default=None, description="MMLU accuracy (micro, 0–1).")
    ceval: float | None = Field(default=None, description="C-Eval accuracy (micro, 0–1).")
    cmmlu: float | None = Field(default=None, description="CMMLU accuracy (micro, 0–1).")


class LeaderboardMatrices(BaseModel):
    """Pair matrices over ``models`` (see `RatingsResult`)."""

    win_fraction: list[list[float | None]] = Field(default_factory=list)
    battle_count: list[list[int]] = Field(default_factory=list)
    predicted_win_rate: list[list[float | None]] = Field(default_factory=list)


class LeaderboardPublic(BaseModel):
    """What ``GET /api/leaderboard`` answers."""

    rows: list[LeaderboardRow]
    models: list[str] = Field(description="The rated models, best first (matrix order).")
    matrices: LeaderboardMatrices
    votes: int = Field(description="Votes that passed the filter.")
    method: Method
    rounds: int = Field(description="Bootstrap rounds (0 for the sandwich).")
    seed: int
    anchor: Anchor | None = None
    filter: RatingFilter
    judge_reference: str | None = Field(
        default=None, description="The checkpoint the judge_ratio column is against.")


class LeaderboardCache:
    """The last few fits, reused for ``ttl_s`` seconds while the vote table is unchanged.
    Computing holds the lock, so a burst of identical polls costs one fit."""

    def __init__(
        self, ttl_s: float, *, size: int = 8, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s, self.size, self.clock = ttl_s, size, clock
        self.fits = 0  # how many times `get` had to compute (a figure for tests and logs)
        self._entries: OrderedDict[Any, tuple[float, RatingsResult]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any, compute: Callable[[], RatingsResult]) -> RatingsResult:
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and self.clock() - hit[0] < self.ttl_s:
                self._entries.move_to_end(key)
                return hit[1]
            value = compute()
            self.fits += 1
            if self.ttl_s > 0:
                self._entries[key] = (self.clock(), value)
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
            return value


def tally_votes(session: Session, *, filter: RatingFilter) -> tuple[PairCounts, int]:
    """The votes passing ``filter``, counted per pair by SQL ``GROUP BY``, and their number."""
    tally = vote_tally(session, filter=filter)
    return PairCounts.from_tally(tally), sum(tally.values())


def vote_tally(session: Session, *, filter: RatingFilter) -> Counter[tuple[str, str, str]]:
    """``(model_a, model_b, winner) -> votes`` passing ``filter``, by SQL ``GROUP BY``. The
    language test (case-insensitive, Unicode casefold) runs on the groups in Python."""
    keys: list[Any] = [col(VoteRow.model_a), col(VoteRow.model_b), col(VoteRow.winner)]
    if filter.language is not None:
        keys.append(col(VoteRow.language))
    where: list[Any] = [col(VoteRow.turn) >= filter.min_turns]
    if filter.anonymous_only:
        where.append(col(VoteRow.anony).is_(True))
    if filter.exclude_flagged:
        where.append(col(VoteRow.flagged).is_(False))
    if filter.since is not None:
        where.append(col(VoteRow.tstamp) >= filter.since)
    if filter.until is not None:
        where.append(col(VoteRow.tstamp) < filter.until)
    groups = session.exec(select(*keys, func.count()).where(*where).group_by(*keys)).all()  # type: ignore[call-overload]
    tally: Counter[tuple[str, str, str]] = Counter()
    lang = None if filter.language is None else filter.language.casefold()
    for group in groups:
        if lang is None or (group[3] or "").casefold() == lang:
            tally[group[0], group[1], group[2]] += group[-1]
    return tally


def human_evaluation(session: Session, *, filter: RatingFilter | None = None,
                     reference: str | None = None) -> list[dict[str, Any]]:
    """LLMZoo's human evaluation from the arena's votes: win/tie/lose per model pair
    (``evaluators.human``), from the reference's opponents' side when one is given."""
    from dataclasses import asdict

    from evaluators.human import tally_pairs

    tally = vote_tally(session, filter=filter or RatingFilter())
    return [asdict(pair) for pair in tally_pairs(tally, reference=reference)]


def leaderboard(
    session: Session,
    *,
    filter: RatingFilter | None = None,
    method: Method = "bootstrap",
    rounds: int = 1000,
    seed: int = 0,
    anchor: Anchor | None = None,
    cache: LeaderboardCache | None = None,
    reference: str | None = None,
) -> LeaderboardPublic:
    """One row per registered checkpoint and per model found in the votes (see the module
    docstring). ``cache``: reuse a fit of the same parameters on the same vote table.
    ``reference``: the judge-ratio column's reference (default: the most judged one)."""
    flt = filter or RatingFilter()
    _check(method=method, rounds=rounds, seed=seed, anchor=anchor)
    if method == "sandwich":
        rounds = seed = 0  # neither changes a sandwich interval: one cache entry for all
    count, last_id = session.exec(select(func.count(), func.max(VoteRow.id))).one()
    key = (flt.model_dump_json(), method, rounds, seed, anchor, count, last_id)

    def fit() -> RatingsResult:
        counts, n = tally_votes(session, filter=flt)
        return ratings_from_counts(
            counts, votes=n, filter=flt, method=method, rounds=rounds, seed=seed, anchor=anchor
        )

    result = cache.get(key, fit) if cache is not None else fit()
    rows = _board_rows(result, list(session.exec(select(Checkpoint)).all()))
    reference = _fill_evaluations(session, rows, reference)
    return LeaderboardPublic(
        rows=rows,
        models=result.models,
        matrices=LeaderboardMatrices(**result.model_dump(include=_MATRICES)),
        judge_reference=reference,
        **result.model_dump(include=_ECHOED),
    )


def _fill_evaluations(session: Session, rows: list[LeaderboardRow],
                      reference: str | None) -> str | None:
    """Benchmark accuracies and judge ratios from finished runs (``arena.results``); returns
    the judge reference used."""
    scores = results.benchmark_scores(session)
    reference, ratios = results.judge_ratios(session, reference)
    for row in rows:
        for suite, score in scores.get(row.model, {}).items():
            setattr(row, suite, score["accuracy"])
        ratio = ratios.get(row.model)
        if ratio is not None:
            row.judge_ratio, row.judge_ci_low, row.judge_ci_high = (
                ratio["ratio"], ratio["ci_low"], ratio["ci_high"])
    return reference


def _check(*, method: str, rounds: int, seed: int, anchor: Anchor | None) -> None:
    if method not in ("bootstrap", "sandwich"):
        raise ClientError(f"unknown method {method!r}; use bootstrap or sandwich", param="method")
    if not 1 <= rounds <= MAX_ROUNDS:
        raise ClientError(f"rounds must be between 1 and {MAX_ROUNDS}", param="rounds")
    if seed < 0:
        raise ClientError("seed must be >= 0", param="seed")
    if anchor is not None and not math.isfinite(anchor[1]):
        raise ClientError("the anchor rating must be a finite number", param="anchor")


def parse_anchor(text: str) -> Anchor:
    """``"vicuna-7b:1000"`` → ``("vicuna-7b", 1000.0)`` (the last colon splits: names may hold
    colons)."""
    model, sep, rating = text.rpartition(":")
    try:
        value = float(rating)
    except ValueError:
        value = math.nan
    if not sep or not model or not math.isfinite(value):
        raise ClientError(
            f"anchor must be MODEL:RATING (e.g. vicuna-7b:1000), got {text!r}", param="anchor"
        )
    return model, value


def _board_rows(result: RatingsResult, checkpoints: list[Checkpoint]) -> list[LeaderboardRow]:
    by_name = {c.name: c for c in checkpoints}
    names = {c.id: c.name for c in checkpoints}

    def lineage(model: str) -> dict[str, Any]:
        row = by_name.get(model)
        parent = names.get(row.parent_id) if row is not None and row.parent_id else None
        return {"registered": row is not None, "parent": parent}

    rated = [LeaderboardRow(**r.model_dump(), **lineage(r.model)) for r in result.ratings]
    seen = {r.model for r in rated}
    unrated = [
        LeaderboardRow(model=name, **lineage(name)) for name in sorted(by_name) if name not in seen
    ]
    return rated + unrated


# --- pictures ------------------------------------------------------------------------------


def leaderboard_plot(
    session: Session, *, kind: str, cache: LeaderboardCache | None = None, **query: Any
) -> bytes:
    """`plot` of the `leaderboard` for ``query`` (its keyword arguments); the kind is checked
    before anything is computed."""
    _plot_kind(kind)
    return plot(leaderboard(session, cache=cache, **query), kind=kind)


def plot(board: LeaderboardPublic, *, kind: str) -> bytes:
    """A PNG of ``board``: ``ratings`` (with 95% intervals) or a pair matrix; a picture saying
    "no votes yet" when nothing is rated."""
    _plot_kind(kind)
    if len(board.models) < 2:
        return _message_png("no votes yet")
    result = RatingsResult(
        models=board.models,
        ratings=[ModelRating.model_validate(r.model_dump()) for r in board.rows if r.rank],
        **board.matrices.model_dump(),
        **board.model_dump(include=_ECHOED),
    )
    return plot_ratings(result) if kind == "ratings" else plot_heatmap(result, kind=kind)  # type: ignore[arg-type]


def _plot_kind(kind: str) -> None:
    if kind not in PLOT_KINDS:
        raise NotFound(f"no plot {kind!r}; use one of {', '.join(PLOT_KINDS)}", param="kind")


def _message_png(text: str) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.0, 2.0), dpi=100)
    FigureCanvasAgg(fig)
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=16, color="0.4")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
