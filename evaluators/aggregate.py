"""From parsed judgments to numbers: score ratio with a bootstrap interval, pairwise win rates,
single-answer means. Pure functions over small records; no I/O."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from evaluators.parsing import Verdict


@dataclass(frozen=True)
class ScorePair:
    """Model A's and model B's scores on one question (already mapped out of the prompt order)."""

    question_id: str
    category: str
    score_a: float
    score_b: float


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
    overall: RatioStats
    by_category: dict[str, RatioStats]
    unparseable: int = 0
    missing: int = 0


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
    """Overall and per-category ratio statistics."""
    groups: dict[str, list[ScorePair]] = defaultdict(list)
    for pair in pairs:
        groups[pair.category].append(pair)
    return RatioResult(
        overall=ratio_stats(pairs, n_boot=n_boot, seed=seed),
        by_category={c: ratio_stats(g, n_boot=n_boot, seed=seed)
                     for c, g in sorted(groups.items())},
        unparseable=unparseable, missing=missing)


# Pairwise ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class VerdictPair:
    """Verdicts in both orders: ``ab`` with model A shown first, ``ba`` with model B first."""

    question_id: str
    category: str
    ab: Verdict
    ba: Verdict | None = None


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
    groups: dict[str, list[VerdictPair]] = defaultdict(list)
    for pair in pairs:
        groups[pair.category].append(pair)
    return PairwiseResult(overall=pairwise_stats(pairs),
                          by_category={c: pairwise_stats(g) for c, g in sorted(groups.items())},
                          unparseable=unparseable, missing=missing)


# Single-answer grading --------------------------------------------------------------------

@dataclass(frozen=True)
class Rating:
    question_id: str
    category: str
    model: str
    rating: float


@dataclass(frozen=True)
class SingleResult:
    """Mean rating per model, and per model and category; unparseable counts per model."""

    mean: dict[str, float]
    by_category: dict[str, dict[str, float]]
    count: dict[str, int]
    unparseable: dict[str, int] = field(default_factory=dict)
    missing: int = 0


def single_result(ratings: Sequence[Rating], *, unparseable: dict[str, int] | None = None,
                  missing: int = 0) -> SingleResult:
    per_model: dict[str, list[float]] = defaultdict(list)
    per_cat: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in ratings:
        per_model[r.model].append(r.rating)
        per_cat[r.model][r.category].append(r.rating)
    return SingleResult(
        mean={m: float(np.mean(v)) for m, v in sorted(per_model.items())},
        by_category={m: {c: float(np.mean(v)) for c, v in sorted(cats.items())}
                     for m, cats in sorted(per_cat.items())},
        count={m: len(v) for m, v in sorted(per_model.items())},
        unparseable=dict(unparseable or {}), missing=missing)
