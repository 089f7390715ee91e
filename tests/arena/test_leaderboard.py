"""The leaderboard over the database: rows, registry join, SQL counting, filters, cache, plots."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from sqlalchemy import insert
from sqlmodel import select

from arena import leaderboard as lb
from arena.db import make_engine, session_scope
from arena.errors import ClientError, NotFound
from arena.models import Checkpoint
from arena.models import Vote as VoteRow
from arena.ratings import RatingFilter, aggregate, compute_ratings

PNG = b"\x89PNG"


@pytest.fixture()
def engine(tmp_path):
    return make_engine(f"sqlite:///{tmp_path / 'leaderboard.db'}")


def vote(a, b, winner, *, t=1.0, **extra):
    return {"model_a": a, "model_b": b, "winner": winner, "tstamp": t, "anony": True,
            "language": "English", "turn": 1, "judge": "arena_user", "flagged": False,
            "source": "import", "extra": {}, **extra}  # fmt: skip


def insert_votes(engine, rows):
    """Core bulk insert: thousands of rows in one statement, no ORM objects."""
    with engine.begin() as conn:
        conn.execute(insert(VoteRow), rows)


def add_checkpoints(engine, *names, parent=None):
    with session_scope(engine) as s:
        parent_id = None
        if parent:
            parent_id = s.exec(select(Checkpoint).where(Checkpoint.name == parent)).one().id
        for name in names:
            s.add(Checkpoint(name=name, source=f"/models/{name}", parent_id=parent_id))


def board(engine, **kwargs):
    with session_scope(engine) as s:
        return lb.leaderboard(s, **{"rounds": 50, **kwargs})


def table(rows):
    """Votes from (a, b, a wins, b wins, ties)."""
    out = []
    for a, b, wins_a, wins_b, ties in rows:
        out += [vote(a, b, "model_a")] * wins_a + [vote(a, b, "model_b")] * wins_b
        out += [vote(a, b, "tie")] * ties
    return out


def test_golden_two_models_and_row_fields(engine):
    # 3 wins to 1: P(a beats b) = 3/4, so R_a − R_b = 400·log10(3), centred on 1000
    add_checkpoints(engine, "alpaca-7b", "vicuna-7b")
    insert_votes(engine, table([("vicuna-7b", "alpaca-7b", 3, 1, 0)]))
    result = board(engine, method="sandwich")
    gap = 400 * math.log10(3)
    top, second = result.rows
    assert (top.model, second.model) == ("vicuna-7b", "alpaca-7b") == tuple(result.models)
    assert top.rating == pytest.approx(1000 + gap / 2, abs=1e-3)
    assert second.rating == pytest.approx(1000 - gap / 2, abs=1e-3)
    assert (top.votes, top.wins, top.losses, top.ties, top.win_rate) == (4, 3, 1, 0, 0.75)
    assert top.ci_low < top.rating < top.ci_high and top.rank == second.rank == 1
    assert top.registered and top.judge_ratio is None and top.mmlu is None and top.cmmlu is None
    assert result.matrices.battle_count == [[0, 4], [4, 0]]
    assert result.matrices.win_fraction == [[None, 0.75], [0.25, None]]
    assert result.votes == 4 and result.method == "sandwich" and result.rounds == 0


def test_rows_order_unvoted_checkpoints_and_unregistered_models(engine):
    add_checkpoints(engine, "llama-7b", "alpaca-7b", "zz-no-votes")
    add_checkpoints(engine, "my-lora", parent="llama-7b")
    # chatgpt is only in imported logs: a row, marked unregistered
    insert_votes(engine, table([("chatgpt", "alpaca-7b", 8, 2, 1), ("alpaca-7b", "llama-7b", 7, 2, 1),
                                ("chatgpt", "llama-7b", 9, 1, 0)]))  # fmt: skip
    result = board(engine)
    names = [r.model for r in result.rows]
    assert names == ["chatgpt", "alpaca-7b", "llama-7b", "my-lora", "zz-no-votes"]
    assert result.models == names[:3]
    rows = {r.model: r for r in result.rows}
    assert rows["chatgpt"].registered is False and rows["alpaca-7b"].registered is True
    assert [rows[n].rank for n in names[:3]] == sorted(rows[n].rank for n in names[:3])
    lora = rows["my-lora"]
    assert lora.parent == "llama-7b" and lora.registered
    assert (lora.rating, lora.ci_low, lora.rank, lora.win_rate, lora.votes) == (None,) * 4 + (0,)
    # the same numbers as the in-memory path on the same votes
    expected = compute_ratings(table([("chatgpt", "alpaca-7b", 8, 2, 1),
                                      ("alpaca-7b", "llama-7b", 7, 2, 1),
                                      ("chatgpt", "llama-7b", 9, 1, 0)]), rounds=50)  # fmt: skip
    assert [r.rating for r in result.rows[:3]] == pytest.approx([r.rating for r in expected.ratings])
    assert [r.ci_low for r in result.rows[:3]] == pytest.approx([r.ci_low for r in expected.ratings])


def test_no_votes_lists_every_checkpoint_and_draws_a_placeholder(engine):
    add_checkpoints(engine, "b-model", "a-model")
    result = board(engine)
    assert [r.model for r in result.rows] == ["a-model", "b-model"]
    assert result.models == [] and result.votes == 0 and result.matrices.battle_count == []
    for kind in lb.PLOT_KINDS:
        assert lb.plot(result, kind=kind).startswith(PNG)


def test_filters(engine):
    rows = [
        vote("a", "b", "model_a", t=10.0),
        vote("a", "b", "model_a", t=20.0, language="CHINESE"),
        vote("a", "b", "model_b", t=30.0, anony=False),
        vote("a", "b", "model_b", t=40.0, flagged=True),
        vote("a", "b", "tie", t=50.0, turn=3),
    ]
    insert_votes(engine, rows)
    cases = {
        "default": (RatingFilter(), 3),
        "named too": (RatingFilter(anonymous_only=False), 4),
        "flagged too": (RatingFilter(exclude_flagged=False), 4),
        "language any case": (RatingFilter(language="chinese"), 1),
        "min turns": (RatingFilter(min_turns=2), 1),
        "time window": (RatingFilter(since=20.0, until=50.0), 1),
    }
    for name, (flt, expected) in cases.items():
        result = board(engine, filter=flt)
        assert result.votes == expected, name
        assert result.filter == flt


def test_sql_counting_equals_aggregate_on_20k_votes(engine):
    rng = random.Random(0)
    models = [f"m{k}" for k in range(8)]
    winners = ["model_a", "model_b", "tie", "tie (bothbad)"]
    rows = []
    for k in range(20_000):
        a, b = rng.sample(models, 2)
        rows.append(vote(a, b, rng.choice(winners), t=float(k), anony=rng.random() < 0.8,
                         language=rng.choice(["English", "english", "Chinese", "unknown"]),
                         turn=rng.randint(1, 3), flagged=rng.random() < 0.05))  # fmt: skip
    rows.append(vote("m0", "m0", "model_a"))  # a self-battle: counted as a vote, not as a pair
    insert_votes(engine, rows)
    filters = [RatingFilter(), RatingFilter(anonymous_only=False, exclude_flagged=False),
               RatingFilter(language="ENGLISH", min_turns=2, since=5_000.0, until=15_000.0)]
    with session_scope(engine) as s:
        stored = s.exec(select(VoteRow)).all()
        for flt in filters:
            counts, n = lb.tally_votes(s, filter=flt)
            kept = flt.apply(stored)
            expected = aggregate(kept)
            assert n == len(kept)
            assert counts.models == expected.models
            for field in ("i", "j", "wins_i", "wins_j", "ties"):
                assert np.array_equal(getattr(counts, field), getattr(expected, field)), field


def test_cache_reuses_a_fit_until_a_vote_arrives_or_it_expires(engine):
    now = [0.0]
    cache = lb.LeaderboardCache(ttl_s=5.0, clock=lambda: now[0])
    insert_votes(engine, table([("a", "b", 3, 1, 0)]))
    with session_scope(engine) as s:
        first = lb.leaderboard(s, rounds=50, cache=cache)
        again = lb.leaderboard(s, rounds=50, cache=cache)
        assert cache.fits == 1 and again == first
        lb.leaderboard(s, rounds=60, cache=cache)  # other parameters: another fit
        assert cache.fits == 2
    insert_votes(engine, [vote("b", "a", "model_a")])
    with session_scope(engine) as s:
        fresh = lb.leaderboard(s, rounds=50, cache=cache)
        assert cache.fits == 3 and fresh.votes == 5
        now[0] = 5.0  # expired
        lb.leaderboard(s, rounds=50, cache=cache)
        assert cache.fits == 4


def test_bad_parameters_name_themselves(engine):
    insert_votes(engine, table([("a", "b", 3, 1, 0)]))
    for kwargs, param in [({"rounds": 0}, "rounds"), ({"rounds": lb.MAX_ROUNDS + 1}, "rounds"),
                          ({"method": "elo"}, "method"), ({"seed": -1}, "seed"),
                          ({"anchor": ("nobody", 1000.0)}, "anchor")]:  # fmt: skip
        with pytest.raises(ClientError) as info:
            board(engine, **kwargs)
        assert info.value.param == param, kwargs
    for text in ("vicuna-7b", "vicuna-7b:high", ":1000", "x:nan"):
        with pytest.raises(ClientError, match="MODEL:RATING"):
            lb.parse_anchor(text)
    assert lb.parse_anchor("org/model:v2:1000") == ("org/model:v2", 1000.0)


def test_anchor_and_plots(engine):
    insert_votes(engine, table([("a", "b", 5, 3, 1), ("b", "c", 4, 4, 2)]))
    result = board(engine, anchor=("b", 800.0))
    assert {r.model: r.rating for r in result.rows}["b"] == pytest.approx(800.0)
    for kind in lb.PLOT_KINDS:
        assert lb.plot(result, kind=kind).startswith(PNG)
    with pytest.raises(NotFound, match="ratings, win_fraction, battle_count, predicted_win_rate"):
        lb.plot(result, kind="pie")
