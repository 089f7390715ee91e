"""From parsed judgments to numbers: score ratio with a bootstrap interval, pairwise win rates,
single-answer means. Pure functions over small records; no I/O.

Each record is one judged question turn. ``overall`` and ``by_category`` pool every turn;
``by_turn`` (turn number → statistics, MT-bench's "turn 1 / turn 2") is filled only when some
record is a later turn, i.e. the question set has multi-turn questions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np

from evaluators.parsing import Verdict


@dataclass(frozen=True)
class ScorePair:
    """Model A's and model B's scores on one question (already mapped out of the prompt order)."""

    question_id: str
    category: str
    score_a: float
    score_b: float
    turn: int = 1


@dataclass(frozen=True)
class RatioStats:
    """Ratio = 100·Σ score(A) / Σ score(B); ``beat_rate`` = wins / (wins + losses)."""

    n: int
    ratio: float
    ci_low: float
    ci_high: float
    wins: int
    ties: int
    losses: int
    beat_rate: float | None


@dataclass(frozen=True)
class RatioResult:
    """``unparseable``: judgments left out; ``missing``: question turns lacking an answer."""

    overall: RatioStats
    by_category: dict[str, RatioStats]
    unparseable: int = 0
    missing: int = 0
    by_turn: dict[int, RatioStats] = field(default_factory=dict)


class _Turned(Protocol):
    @property
    def turn(self) -> int: ...

    @property
    def category(self) -> str: ...


R = TypeVar("R", bound=_Turned)
S = TypeVar("S")
K = TypeVar("K", str, int)


def _grouped(records: Sequence[R], by: Callable[[R], K],
             stats: Callable[[Sequence[R]], S]) -> dict[K, S]:
    groups: dict[K, list[R]] = defaultdict(list)
    for record in records:
        groups[by(record)].append(record)
    return {k: stats(groups[k]) for k in sorted(groups)}


def by_category(records: Sequence[R], stats: Callable[[Sequence[R]], S]) -> dict[str, S]:
    """``stats`` over the records of each category, categories sorted."""
    return _grouped(records, lambda r: r.category, stats)


def by_turn(records: Sequence[R], stats: Callable[[Sequence[R]], S]) -> dict[int, S]:
    """``stats`` over the records of each turn; empty when every record is a first turn."""
    if all(r.turn == 1 for r in records):
        return {}
    return _grouped(records, lambda r: r.turn, stats)


def swap_average(first: tuple[float, float], second: tuple[float, float]) -> tuple[float, float]:
    """Average the A-first order ``(a, b)`` with the B-first order ``(b, a)``."""
    return (first[0] + second[1]) / 2, (first[1] + second[0]) / 2


def _ratio(a: np.ndarray, b: np.ndarray) -> float:
    return float(100.0 * a.sum() / b.sum()) if b.sum() > 0 else float("nan")


def ratio_stats(pairs: Sequence[ScorePair], *, n_boot: int = 1000, seed: int = 0,
                alpha: float = 0.05) -> RatioStats:
    """Score ratio with a percentile bootstrap interval over questions (seeded)."""
    if not pairs:
        nan = float("nan")
        return RatioStats(0, nan, nan, nan, 0, 0, 0, None)
    a = np.array([p.score_a for p in pairs], dtype=float)
    b = np.array([p.score_b for p in pairs], dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(pairs), size=(n_boot, len(pairs)))
    sums_b = b[idx].sum(axis=1)
    boot = 100.0 * a[idx].sum(axis=1) / np.where(sums_b > 0, sums_b, np.nan)
    low, high = np.nanpercentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    wins, losses = int((a > b).sum()), int((a < b).sum())
    ties = len(pairs) - wins - losses
    decided = wins + losses
    return RatioStats(n=len(pairs), ratio=_ratio(a, b), ci_low=float(low), ci_high=float(high),
                      wins=wins, ties=ties, losses=losses,
                      beat_rate=wins / decided if decided else None)


def ratio_result(pairs: Sequence[ScorePair], *, unparseable: int = 0, missing: int = 0,
                 n_boot: int = 1000, seed: int = 0) -> RatioResult:
    """Overall, per-category and (for multi-turn sets) per-turn ratio statistics."""
    def stats(group: Sequence[ScorePair]) -> RatioStats:
        return ratio_stats(group, n_boot=n_boot, seed=seed)

    return RatioResult(overall=stats(pairs), by_category=by_category(pairs, stats),
                       unparseable=unparseable, missing=missing, by_turn=by_turn(pairs, stats))


# Pairwise ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class VerdictPair:
    """Verdicts in both orders: ``ab`` with model A shown first, ``ba`` with model B first."""

    question_id: str
    category: str
    ab: Verdict
    ba: Verdict | None = None
    turn: int = 1


def winner(pair: VerdictPair) -> Verdict:
    """``"A"`` (model A), ``"B"`` or ``"C"`` (tie); orders that disagree are a tie."""
    first = pair.ab
    if pair.ba is None:
        return first
    second: Verdict = {"A": "B", "B": "A", "C": "C"}[pair.ba]  # type: ignore[assignment]
    return first if first == second else "C"


@dataclass(frozen=True)
class PairwiseStats:
    """``win_rate`` = wins / n; ``adjusted_win_rate`` = (wins + ½·ties) / n."""

    n: int
    wins: int
    ties: int
    losses: int
    win_rate: float | None
    adjusted_win_rate: float | None
    inconsistent: int = 0


@dataclass(frozen=True)
class PairwiseResult:
    overall: PairwiseStats
    by_category: dict[str, PairwiseStats]
    unparseable: int = 0
    missing: int = 0
    by_turn: dict[int, PairwiseStats] = field(default_factory=dict)


def pairwise_stats(pairs: Sequence[VerdictPair]) -> PairwiseStats:
    outcomes = [winner(p) for p in pairs]
    n = len(outcomes)
    wins, losses = outcomes.count("A"), outcomes.count("B")
    ties = n - wins - losses
    inconsistent = sum(1 for p, o in zip(pairs, outcomes, strict=True)
                       if o == "C" and p.ab != "C" and p.ba is not None)
    return PairwiseStats(n=n, wins=wins, ties=ties, losses=losses,
                         win_rate=wins / n if n else None,
                         adjusted_win_rate=(wins + 0.5 * ties) / n if n else None,
                         inconsistent=inconsistent)


def pairwise_result(pairs: Sequence[VerdictPair], *, unparseable: int = 0,
                    missing: int = 0) -> PairwiseResult:
    return PairwiseResult(overall=pairwise_stats(pairs),
                          by_category=by_category(pairs, pairwise_stats),
                          unparseable=unparseable, missing=missing,
                          by_turn=by_turn(pairs, pairwise_stats))


# Single-answer grading --------------------------------------------------------------------

@dataclass(frozen=True)
class Rating:
    question_id: str
    category: str
    model: str
    rating: float
    turn: int = 1


@dataclass(frozen=True)
class SingleResult:
    """Mean rating per model, per model and category, and (multi-turn sets) per model and
    turn; unparseable counts per model."""

    mean: dict[str, float]
    by_category: dict[str, dict[str, float]]
    count: dict[str, int]
    unparseable: dict[str, int] = field(default_factory=dict)
    missing: int = 0
    by_turn: dict[str, dict[int, float]] = field(default_factory=dict)


def single_result(ratings: Sequence[Rating], *, unparseable: dict[str, int] | None = None,
                  missing: int = 0) -> SingleResult:
    per_model: dict[str, list[Rating]] = defaultdict(list)
    for r in ratings:
        per_model[r.model].append(r)

    def mean(group: Sequence[Rating]) -> float:
        return float(np.mean([r.rating for r in group]))

    models = sorted(per_model.items())
    multi_turn = any(r.turn != 1 for r in ratings)
    return SingleResult(
        mean={m: mean(g) for m, g in models},
        by_category={m: by_category(g, mean) for m, g in models},
        count={m: len(g) for m, g in models},
        unparseable=dict(unparseable or {}), missing=missing,
        by_turn={m: _grouped(g, lambda r: r.turn, mean) for m, g in models} if multi_turn else {})
