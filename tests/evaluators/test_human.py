"""Human evaluation from arena votes: golden win/tie/lose counts on a hand-made vote list."""

from __future__ import annotations

import dataclasses

import pytest

from evaluators.human import HEADERS, HumanPair, human_pairs, human_rows

VOTES = [
    ("alpaca", "vicuna", "model_a"),        # alpaca beats vicuna
    ("vicuna", "alpaca", "model_a"),        # vicuna beats alpaca
    ("vicuna", "alpaca", "model_b"),        # alpaca beats vicuna
    ("alpaca", "vicuna", "tie"),
    ("alpaca", "vicuna", "tie (bothbad)"),
    ("alpaca", "chatgpt", "model_b"),       # chatgpt beats alpaca
    ("chatgpt", "alpaca", "model_b"),       # alpaca beats chatgpt
    ("chatgpt", "vicuna", "model_a"),       # chatgpt beats vicuna
    ("chatgpt", "vicuna", "model_a"),
    ("vicuna", "chatgpt", "tie"),
    ("vicuna", "vicuna", "model_a"),        # a model against itself: ignored
]


def counts(pair: HumanPair) -> tuple[str, str, int, int, int]:
    return pair.model_a, pair.model_b, pair.wins, pair.ties, pair.losses


def test_each_pair_from_its_alphabetically_first_model() -> None:
    pairs = human_pairs(iter(VOTES))  # any iterable, read once
    assert [counts(p) for p in pairs] == [
        ("alpaca", "chatgpt", 1, 0, 1),
        ("alpaca", "vicuna", 2, 2, 1),
        ("chatgpt", "vicuna", 2, 1, 0),
    ]
    alpaca_vicuna = pairs[1]
    assert alpaca_vicuna.both_bad == 1 and alpaca_vicuna.n == 5
    assert alpaca_vicuna.win_rate == pytest.approx(2 / 5)
    assert alpaca_vicuna.beat_rate == pytest.approx(2 / 3)
    assert pairs[2].beat_rate == 1.0


def test_against_a_reference_model() -> None:
    pairs = human_pairs(VOTES, reference="chatgpt")
    assert [counts(p) for p in pairs] == [("alpaca", "chatgpt", 1, 0, 1),
                                          ("vicuna", "chatgpt", 0, 1, 2)]
    assert pairs[1].beat_rate == 0.0 and pairs[1].win_rate == 0.0
    assert [counts(p) for p in human_pairs(VOTES, reference="vicuna")] == [
        ("alpaca", "vicuna", 2, 2, 1), ("chatgpt", "vicuna", 2, 1, 0)]
    assert human_pairs(VOTES, reference="nobody") == []


def test_rows_and_json_shape() -> None:
    pairs = human_pairs([*VOTES, ("llama", "alpaca", "tie")])
    rows = human_rows(pairs)
    assert len(HEADERS) == len(rows[0])
    assert rows[1] == ["alpaca", "llama", 0, 1, 0, "0.0%", "–"]  # only ties: no beat rate
    assert rows[2] == ["alpaca", "vicuna", 2, 2, 1, "40.0%", "66.7%"]
    record = dataclasses.asdict(pairs[2])
    assert {"model_a", "model_b", "wins", "ties", "losses", "win_rate",
            "beat_rate"} <= set(record)


def test_no_votes_and_unknown_winners() -> None:
    assert human_pairs([]) == []
    with pytest.raises(ValueError, match="unknown winner 'a'"):
        human_pairs([("x", "y", "a")])
