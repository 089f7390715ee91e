"""Bradley–Terry ratings: golden numbers solved independently, intervals, ranks, filters."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import optimize

from arena import ratings as ratings_module
from arena.errors import ClientError
from arena.ratings import (
    PairCounts,
    RatingFilter,
    Vote,
    aggregate,
    bootstrap,
    compute_ratings,
    fit_bt,
    online_elo,
    plot_heatmap,
    plot_ratings,
    ranks,
    sandwich_se,
)

ELO = 400 / math.log(10)  # Elo points per nat


def table_votes(table, *, t0=0.0):
    """Votes from rows (model_a, model_b, a wins, b wins, ties); sides alternate A/B."""
    votes = []
    for a, b, wins_a, wins_b, ties in table:
        outcomes = [a] * wins_a + [b] * wins_b + ["tie"] * ties
        for k, outcome in enumerate(outcomes):
            first, second = (a, b) if k % 2 == 0 else (b, a)
            if outcome == "tie":
                winner = "tie" if k % 3 else "tie (bothbad)"
            else:
                winner = "model_a" if outcome == first else "model_b"
            votes.append(Vote(first, second, winner, t0 + len(votes)))
    return votes


def per_vote_ml(votes):
    """Maximum likelihood written independently: one logistic row per vote (a tie is y = ½),
    the first model's strength fixed at 0, BFGS; ratings centred on 1000."""
    models = sorted({m for v in votes for m in (v.model_a, v.model_b)})
    index = {m: k for k, m in enumerate(models)}
    x = np.zeros((len(votes), len(models)))
    y = np.empty(len(votes))
    for row, v in enumerate(votes):
        x[row, index[v.model_a]], x[row, index[v.model_b]] = 1.0, -1.0
        y[row] = {"model_a": 1.0, "model_b": 0.0}.get(v.winner, 0.5)

    def nll(free):
        z = x @ np.concatenate([[0.0], free])
        value = np.sum(y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z))
        grad = x.T @ (1 / (1 + np.exp(-z)) - y)
        return value, grad[1:]

    found = optimize.minimize(nll, np.zeros(len(models) - 1), jac=True, method="BFGS",
                              options={"gtol": 1e-12, "maxiter": 10_000})  # fmt: skip
    theta = np.concatenate([[0.0], found.x])
    return dict(zip(models, 1000 + ELO * (theta - theta.mean()), strict=True))


def synthetic_counts(true, per_pair, seed):
    """Pair counts drawn from Bradley–Terry ratings ``true``; ties take 60% of the weaker side's
    chance, so the expected score (win + tie / 2) is exactly the Bradley–Terry probability."""
    rng = np.random.default_rng(seed)
    i, j = np.triu_indices(len(true), 1)
    p = 1 / (1 + 10 ** ((true[j] - true[i]) / 400))
    tie = 0.6 * np.minimum(p, 1 - p)
    drawn = np.array([rng.multinomial(per_pair, [q - t / 2, 1 - q - t / 2, t])
                      for q, t in zip(p, tie, strict=True)])  # fmt: skip
    names = tuple(f"m{k:02d}" for k in range(len(true)))
    return PairCounts(names, i, j, drawn[:, 0], drawn[:, 1], drawn[:, 2])


def fitted(votes, **kwargs):
    counts = aggregate(votes)
    return dict(zip(counts.models, fit_bt(counts, **kwargs), strict=True))


# --- golden numbers ------------------------------------------------------------------------


def test_two_models_closed_form():
    # p = (wins + ties / 2) / n = (7 + 1.5) / 12; rating difference = 400 log10(p / (1 - p))
    ratings = fitted(table_votes([("a", "b", 7, 2, 3)]))
    p = 8.5 / 12
    assert ratings["a"] - ratings["b"] == pytest.approx(400 * math.log10(p / (1 - p)), abs=1e-3)
    assert (ratings["a"] + ratings["b"]) / 2 == pytest.approx(1000, abs=1e-9)


def test_three_models_solved_by_hand():
    # Odds 3:1 (a-b), 3:1 (b-c), 9:1 (a-c) are exactly Bradley–Terry, so the maximum-likelihood
    # fit reproduces them: a - b = b - c = 400 log10 3 = 190.8485 Elo, b at the mean.
    ratings = fitted(
        table_votes([("a", "b", 25, 5, 10), ("b", "c", 30, 10, 0), ("a", "c", 45, 5, 0)])
    )
    step = 400 * math.log10(3)
    assert ratings["a"] == pytest.approx(1000 + step, abs=1e-3)
    assert ratings["b"] == pytest.approx(1000, abs=1e-3)
    assert ratings["c"] == pytest.approx(1000 - step, abs=1e-3)


def test_three_models_match_an_independent_per_vote_fit():
    votes = table_votes([("a", "b", 6, 3, 2), ("b", "c", 4, 4, 1), ("a", "c", 2, 5, 0)])
    ours, reference = fitted(votes), per_vote_ml(votes)
    for model in reference:
        assert ours[model] == pytest.approx(reference[model], abs=1e-3)


def test_aggregation_equals_the_one_row_per_vote_fit():
    rng = np.random.default_rng(3)
    models = ["m1", "m2", "m3", "m4", "m5"]
    words = ["model_a", "model_b", "tie", "tie (bothbad)"]
    votes = []
    for k in range(300):
        a, b = rng.choice(models, 2, replace=False)
        votes.append(Vote(str(a), str(b), words[rng.choice(4, p=[0.45, 0.3, 0.15, 0.1])], k))
    ours, reference = fitted(votes), per_vote_ml(votes)
    assert max(abs(ours[m] - reference[m]) for m in models) < 1e-3


def test_symmetric_data_gives_equal_ratings():
    votes = table_votes([("a", "b", 5, 5, 2), ("b", "c", 3, 3, 0), ("a", "c", 4, 4, 4)])
    assert np.allclose(list(fitted(votes).values()), 1000, atol=1e-6)


def test_ties_count_half_to_each_side():
    only_ties = fitted(table_votes([("a", "b", 0, 0, 8), ("b", "c", 0, 0, 3)]))
    assert np.allclose(list(only_ties.values()), 1000, atol=1e-6)
    # 2 wins + 2 ties is scored as 3 of 4: a 3:1 record
    ratings = fitted(table_votes([("a", "b", 2, 0, 2)]))
    assert ratings["a"] - ratings["b"] == pytest.approx(400 * math.log10(3), abs=1e-3)


def test_a_model_that_always_wins_ranks_first_and_stays_finite():
    table = [("champ", "b", 12, 0, 0), ("champ", "c", 9, 0, 0), ("b", "c", 6, 5, 3)]
    result = compute_ratings(table_votes(table), rounds=200)
    first = result.ratings[0]
    assert (first.model, first.rank) == ("champ", 1)
    assert all(math.isfinite(r.rating) and math.isfinite(r.ci_low) for r in result.ratings)


def test_disconnected_parts_are_each_centred():
    ratings = fitted(table_votes([("a", "b", 6, 2, 0), ("c", "d", 1, 3, 0)]))
    assert (ratings["a"] + ratings["b"]) / 2 == pytest.approx(1000, abs=1e-6)
    assert (ratings["c"] + ratings["d"]) / 2 == pytest.approx(1000, abs=1e-6)
    assert ratings["a"] - ratings["b"] == pytest.approx(400 * math.log10(3), abs=1e-3)


# --- intervals -----------------------------------------------------------------------------


def test_bootstrap_is_deterministic_given_the_seed():
    counts = synthetic_counts(np.array([1100.0, 1000, 950, 900]), 40, seed=1)
    first = bootstrap(counts, rounds=300, seed=7)
    assert np.array_equal(first, bootstrap(counts, rounds=300, seed=7))
    assert not np.array_equal(first, bootstrap(counts, rounds=300, seed=8))
    assert first.shape == (300, 4)
    # each round is centred on 1000, and the rounds scatter around the point estimate
    assert np.allclose(first.mean(axis=1), 1000)
    assert np.abs(first.mean(axis=0) - fit_bt(counts)).max() < 5


def test_bootstrap_from_a_bad_start_falls_back_and_agrees(monkeypatch, caplog):
    counts = synthetic_counts(np.array([1100.0, 1000, 900]), 50, seed=9)
    good = bootstrap(counts, rounds=3, seed=1)
    monkeypatch.setattr(ratings_module, "_MAX_STEP", 0.01)  # 50 Newton steps cannot get there
    bad_start = np.array([-3000.0, 0.0, 3000.0])
    assert np.allclose(bootstrap(counts, rounds=3, seed=1, start=bad_start), good, atol=1e-3)
    assert "trying L-BFGS" in caplog.text


def test_intervals_shrink_with_more_votes():
    true = np.array([1150.0, 1050, 1000, 950, 850])
    widths = []
    for per_pair in (40, 400):
        samples = bootstrap(synthetic_counts(true, per_pair, seed=2), rounds=400, seed=0)
        low, high = np.percentile(samples, [2.5, 97.5], axis=0)
        widths.append(np.mean(high - low))
    assert widths[0] / widths[1] == pytest.approx(math.sqrt(10), rel=0.25)


def test_sandwich_is_close_to_the_bootstrap_on_a_large_set():
    true = np.linspace(1200, 800, 8)
    counts = synthetic_counts(true, 2000, seed=4)
    ratings = fit_bt(counts)
    boot = bootstrap(counts, rounds=1000, seed=0, start=ratings)
    low, high = np.percentile(boot, [2.5, 97.5], axis=0)
    sandwich_width = 2 * 1.96 * sandwich_se(counts, ratings)
    assert np.all(np.abs(sandwich_width / (high - low) - 1) < 0.2)
    assert np.abs(ratings - true).max() < 4 * sandwich_width.max() / 3.92


def test_anchor_model_gets_its_fixed_rating():
    counts = synthetic_counts(np.array([1100.0, 1000, 900]), 100, seed=5)
    plain = fit_bt(counts)
    anchored = fit_bt(counts, anchor=("m01", 1114.0))
    assert anchored[1] == pytest.approx(1114.0, abs=1e-9)
    assert np.allclose(anchored - plain, anchored[1] - plain[1])
    boot = bootstrap(counts, rounds=50, anchor=("m01", 1114.0))
    assert np.allclose(boot[:, 1], 1114.0)
    assert sandwich_se(counts, anchored, anchor=("m01", 1114.0))[1] == pytest.approx(0, abs=1e-9)
    result = compute_ratings(table_votes([("a", "b", 5, 3, 1)]), anchor=("b", 800.0), rounds=50)
    assert {r.model: r.rating for r in result.ratings}["b"] == pytest.approx(800.0)
    with pytest.raises(ClientError, match="nobody"):
        fit_bt(counts, anchor=("nobody", 1000.0))


# --- ranks, matrices, filters --------------------------------------------------------------


def test_rank_counts_models_whose_interval_lies_entirely_above():
    low, high = np.array([1100, 990, 995, 800]), np.array([1200, 1010, 1020, 900])
    assert ranks(low, high).tolist() == [1, 2, 2, 4]
    # the same shape from votes: one clear leader, two it cannot separate, one clear last
    true = np.array([1300.0, 1000, 1000, 700])
    counts = synthetic_counts(true, 300, seed=6)
    votes = table_votes(
        [(counts.models[i], counts.models[j], wi, wj, t) for i, j, wi, wj, t in
         zip(counts.i, counts.j, counts.wins_i, counts.wins_j, counts.ties, strict=True)]
    )  # fmt: skip
    result = compute_ratings(votes, method="sandwich")
    assert {r.model: r.rank for r in result.ratings} == {"m00": 1, "m01": 2, "m02": 2, "m03": 4}


def test_matrices_and_per_model_counts():
    result = compute_ratings(
        table_votes([("a", "b", 6, 2, 2), ("b", "c", 3, 1, 0)]), method="sandwich"
    )
    assert result.models == ["a", "b", "c"]
    row = {r.model: r for r in result.ratings}["b"]
    assert (row.votes, row.wins, row.losses, row.ties) == (14, 5, 7, 2)
    assert row.win_rate == pytest.approx(6 / 14)
    assert result.battle_count == [[0, 10, 0], [10, 0, 4], [0, 4, 0]]
    assert result.win_fraction[0][1] == pytest.approx(0.7)  # (6 + 2/2) / 10
    assert result.win_fraction[1][0] == pytest.approx(0.3)
    assert result.win_fraction[0][2] is None and result.win_fraction[1][1] is None
    ratings = [r.rating for r in result.ratings]
    expected = 1 / (1 + 10 ** ((ratings[2] - ratings[0]) / 400))
    assert result.predicted_win_rate[0][2] == pytest.approx(expected)
    assert result.predicted_win_rate[0][1] + result.predicted_win_rate[1][0] == pytest.approx(1)


BASE_VOTE = {"model_a": "a", "model_b": "b", "winner": "model_a", "tstamp": 100.0}


@pytest.mark.parametrize(
    ("flt", "vote", "kept"),
    [
        (RatingFilter(), {"anony": False}, False),
        (RatingFilter(anonymous_only=False), {"anony": False}, True),
        (RatingFilter(language="english"), {"language": "English"}, True),
        (RatingFilter(language="English"), {"language": "Chinese"}, False),
        (RatingFilter(language="English"), {}, False),
        (RatingFilter(min_turns=2), {"turn": 1}, False),
        (RatingFilter(min_turns=2), {"turn": 3}, True),
        (RatingFilter(), {"flagged": True}, False),
        (RatingFilter(exclude_flagged=False), {"flagged": True}, True),
        (RatingFilter(since=100.0), {}, True),
        (RatingFilter(since=100.5), {}, False),
        (RatingFilter(until=100.0), {}, False),
        (RatingFilter(since=50.0, until=150.0), {}, True),
        (RatingFilter(), {}, True),
    ],
)
def test_filters(flt, vote, kept):
    assert len(flt.apply([{**BASE_VOTE, **vote}])) == int(kept)


def test_filter_refuses_unknown_fields_and_empty_ranges():
    with pytest.raises(ValueError, match="extra"):
        RatingFilter(langauge="English")
    with pytest.raises(ValueError, match="later"):
        RatingFilter(since=10.0, until=10.0)


def test_votes_may_be_dicts_or_objects_but_not_unknown_verdicts():
    votes = table_votes([("a", "b", 3, 1, 1)])
    fields = ("model_a", "model_b", "winner", "tstamp")
    as_dicts = [{**{f: getattr(v, f) for f in fields}, "judge": "x"} for v in votes]
    as_objects = [SimpleNamespace(**d) for d in as_dicts]
    assert fitted(as_dicts) == pytest.approx(fitted(votes))
    assert fitted(as_objects) == pytest.approx(fitted(votes))
    with pytest.raises(ClientError, match="unknown winner"):
        aggregate([{**BASE_VOTE, "winner": "model_c"}])
    with pytest.raises(ClientError, match="tstamp"):
        aggregate([{"model_a": "a", "model_b": "b", "winner": "tie"}])


def test_online_elo_follows_the_notebook():
    votes = [Vote("a", "b", "model_a", 2.0), Vote("b", "a", "tie", 1.0)]  # applied by tstamp
    ratings = online_elo(votes)
    # the tie first changes nothing (equal ratings); then a wins: ±4 · (1 - ½)
    assert ratings == pytest.approx({"a": 1002.0, "b": 998.0})
    ratings = online_elo([*votes, Vote("a", "b", "model_b", 3.0)])
    expected_a = 1 / (1 + 10 ** ((998 - 1002) / 400))
    assert ratings["a"] == pytest.approx(1002 - 4 * expected_a)


# --- edges and output ----------------------------------------------------------------------


def test_empty_and_single_model_inputs_give_empty_results_without_nan():
    for votes in ([], [Vote("a", "a", "model_a", 1.0)]):
        result = compute_ratings(votes)
        assert result.ratings == [] and result.models == []
        assert "NaN" not in result.model_dump_json()
    empty = aggregate([])
    assert fit_bt(empty).shape == (0,)
    assert bootstrap(empty, rounds=3).shape == (3, 0)
    assert sandwich_se(empty, np.zeros(0)).shape == (0,)


def test_result_serialises_to_json():
    result = compute_ratings(table_votes([("a", "b", 4, 2, 1), ("b", "c", 2, 2, 2)]), rounds=100)
    data = json.loads(result.model_dump_json())
    assert data["rounds"] == 100 and data["votes"] == 13
    assert data["ratings"][0].keys() >= {"model", "rating", "ci_low", "ci_high", "rank"}
    assert "NaN" not in result.model_dump_json()
    for row in result.ratings:
        assert row.ci_low <= row.rating <= row.ci_high


def test_plots_are_png():
    result = compute_ratings(table_votes([("a", "b", 4, 2, 1), ("b", "c", 2, 2, 2)]), rounds=50)
    assert plot_ratings(result).startswith(b"\x89PNG")
    assert plot_heatmap(result, kind="win_fraction").startswith(b"\x89PNG")
    assert plot_heatmap(result, kind="battle_count").startswith(b"\x89PNG")
    assert plot_ratings(compute_ratings([])).startswith(b"\x89PNG")


def test_ratings_plot_survives_a_rating_outside_its_interval():
    from arena.ratings import compute_ratings, plot_ratings

    one_vote = [{"model_a": "x", "model_b": "y", "winner": "model_a", "tstamp": 1.0}]
    result = compute_ratings(one_vote, rounds=50, seed=0)
    assert plot_ratings(result).startswith(b"\x89PNG")
