"""Golden arithmetic on hand-made review tables."""

from __future__ import annotations

import pytest

from evaluators.aggregate import (
    Rating,
    ScorePair,
    VerdictPair,
    pairwise_result,
    ratio_result,
    single_result,
    swap_average,
)

# question, category, score(A), score(B): ΣA = 30, ΣB = 25 → ratio 120 %
TABLE = [
    ScorePair("q1", "x", 8, 6),    # win
    ScorePair("q2", "x", 7, 7),    # tie
    ScorePair("q3", "y", 5, 9),    # loss
    ScorePair("q4", "y", 10, 3),   # win
]


def test_ratio_golden() -> None:
    result = ratio_result(TABLE, unparseable=1, missing=2, n_boot=500, seed=7)
    o = result.overall
    assert o.ratio == pytest.approx(120.0)
    assert (o.wins, o.ties, o.losses, o.n) == (2, 1, 1, 4)
    assert o.beat_rate == pytest.approx(2 / 3)
    assert o.ci_low <= o.ratio <= o.ci_high
    assert result.by_category["x"].ratio == pytest.approx(100 * 15 / 13)
    assert result.by_category["y"].ratio == pytest.approx(125.0)
    assert result.by_category["y"].beat_rate == pytest.approx(0.5)
    assert (result.unparseable, result.missing) == (1, 2)


def test_ratio_bootstrap_is_seeded() -> None:
    one = ratio_result(TABLE, seed=3).overall
    two = ratio_result(TABLE, seed=3).overall
    assert (one.ci_low, one.ci_high) == (two.ci_low, two.ci_high)
    assert one.ci_low < one.ci_high


def test_beat_rate_undefined_when_all_ties() -> None:
    stats = ratio_result([ScorePair("q", "x", 5, 5)]).overall
    assert stats.beat_rate is None
    assert stats.ratio == pytest.approx(100.0)


def test_swap_average_cancels_position_bias() -> None:
    # A-first order (6, 5) and B-first order (6, 5): the judge favours whoever is first.
    assert swap_average((6, 5), (6, 5)) == (5.5, 5.5)
    assert swap_average((8, 4), (3, 9)) == (8.5, 3.5)


def test_pairwise_golden() -> None:
    result = pairwise_result([
        VerdictPair("q1", "x", "A", "B"),   # A wins in both orders
        VerdictPair("q2", "x", "A", "A"),   # first position wins both times → tie
        VerdictPair("q3", "y", "C", "C"),   # tie
        VerdictPair("q4", "y", "B", "A"),   # B wins in both orders
    ])
    o = result.overall
    assert (o.wins, o.ties, o.losses, o.n, o.inconsistent) == (1, 2, 1, 4, 1)
    assert o.win_rate == pytest.approx(0.25)
    assert o.adjusted_win_rate == pytest.approx(0.5)
    assert result.by_category["x"].adjusted_win_rate == pytest.approx(0.75)
    assert result.by_category["y"].adjusted_win_rate == pytest.approx(0.25)


def test_single_golden() -> None:
    result = single_result([
        Rating("q1", "x", "m1", 8), Rating("q2", "y", "m1", 6), Rating("q3", "y", "m1", 4),
        Rating("q1", "x", "m2", 9),
    ], unparseable={"m2": 2})
    assert result.mean == {"m1": pytest.approx(6.0), "m2": pytest.approx(9.0)}
    assert result.by_category["m1"] == {"x": 8.0, "y": 5.0}
    assert result.count == {"m1": 3, "m2": 1}
    assert result.unparseable == {"m2": 2}
