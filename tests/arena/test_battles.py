"""Battles and votes at the domain level: no servers, a real SQLite file, a fake gateway."""

import asyncio
import json
import random
from collections import Counter

import pytest

from arena import battles, votes
from arena.battles import BattlePolicy
from arena.db import make_engine, session_scope
from arena.errors import (
    ClientError,
    Conflict,
    NotFound,
    NoWorkerAvailable,
    RateLimited,
    UpstreamFailed,
    ValidationFailed,
)
from arena.gateway import ChatPiece
from arena.models import BattleCreate, Checkpoint
from arena.settings import DEFAULT_IDENTITY_WORDS, Settings

POLICY = BattlePolicy(identity_words=DEFAULT_IDENTITY_WORDS)
SERVED = {"alpaca-7b": 1, "vicuna-13b": 2}


@pytest.fixture()
def engine(tmp_path):
    return make_engine(f"sqlite:///{tmp_path / 'battles.db'}")


class FakeGateway:
    """Answers per model: a list of text pieces, or an exception raised after them."""

    def __init__(self, answers):
        self.answers = answers
        self.prompts = {}

    async def stream_chat(self, model, messages, *, max_tokens, temperature):
        self.prompts[model] = messages
        for piece in self.answers[model]:
            await asyncio.sleep(0)
            if isinstance(piece, Exception):
                raise piece
            yield ChatPiece(text=piece)
        yield ChatPiece(text="", finish_reason="stop")


def _battle(engine, *, mode="anonymous", session_id="s1", ip="1.2.3.4", now=1000.0, policy=POLICY,
            **names):
    with session_scope(engine) as s:
        data = BattleCreate(mode=mode, session_id=session_id, **names)
        return battles.create_battle(s, data=data, served=SERVED, policy=policy, ip=ip,
                                     now=now, rng=random.Random(0)).id


def _turn(engine, battle_id, gateway, content="Hello?", policy=POLICY):
    with session_scope(engine) as s:
        plan = battles.plan_turn(s, battle_id=battle_id, content=content, max_tokens=8,
                                 temperature=0.0)

    async def collect():
        return [e async for e in battles.run_turn(plan, gateway=gateway, engine=engine,
                                                  policy=policy)]

    return asyncio.run(collect())


def _vote(engine, battle_id, choice="a", now=1001.0, policy=POLICY, ip="1.2.3.4"):
    with session_scope(engine) as s:
        return battles.cast_vote(s, battle_id=battle_id, choice=choice, ip=ip, policy=policy,
                                 now=now)


# --- sampler ------------------------------------------------------------------------------------


def test_sampler_follows_weights_and_skips_models_without_workers():
    rng = random.Random(1)
    served = {"a": 1, "b": 1, "c": 1, "gone": 0}
    weights = {"a": 8.0, "b": 1.0, "c": 1.0, "gone": 100.0}
    seen = Counter()
    for _ in range(2000):
        first, second = battles.sample_pair(served, weights=weights, rng=rng)
        assert first != second and "gone" not in (first, second)
        seen.update((first, second))
    # "a" is in nearly every pair; "b" and "c" share the rest evenly
    assert seen["a"] > 1800 and abs(seen["b"] - seen["c"]) < 200


def test_sampler_needs_two_models_and_ignores_zero_or_nan_weights():
    with pytest.raises(NoWorkerAvailable, match="at least two models with a healthy worker"):
        battles.sample_pair({"a": 1, "b": 0}, weights={})
    with pytest.raises(NoWorkerAvailable):
        battles.sample_pair({"a": 1, "b": 1}, weights={"a": 0.0, "b": 0.0})
    with pytest.raises(NoWorkerAvailable):
        battles.sample_pair({"a": 1, "b": 1, "c": 1}, weights={"a": float("nan"), "b": 0.0})
    assert set(battles.sample_pair({"a": 1, "b": 1, "c": 1}, weights={"c": 0.0})) == {"a", "b"}
    assert NoWorkerAvailable.status_code == 503


def test_weights_are_json_in_the_environment_and_must_be_finite(monkeypatch):
    monkeypatch.setenv("ARENA_BATTLE_WEIGHTS", '{"alpaca-7b": 2.5}')
    assert Settings().battle_weights == {"alpaca-7b": 2.5}
    monkeypatch.setenv("ARENA_BATTLE_WEIGHTS", '{"alpaca-7b": -1}')
    with pytest.raises(ValueError, match="finite number >= 0"):
        Settings()


# --- flagging ------------------------------------------------------------------------------------


def test_identity_words_match_whole_words_in_any_case():
    words = [*DEFAULT_IDENTITY_WORDS, "tiny-llama"]
    assert battles.identity_word(["I was trained by openai."], words) == "OpenAI"
    assert battles.identity_word(["As gpt-4, I think"], words) == "GPT-4"
    assert battles.identity_word(["I am TINY-LLAMA"], words) == "tiny-llama"
    assert battles.identity_word(["Hugging  Face"], words) is None  # two spaces: not the phrase
    assert battles.identity_word(["mossy rocks and alpacas"], words) is None  # not whole words
    assert battles.identity_word(["The weather is nice."], words) is None


def test_a_revealing_answer_flags_the_battle_for_good(engine):
    battle_id = _battle(engine)
    gateway = FakeGateway({"alpaca-7b": ["Hi, I am ", "Vicuna-13B"], "vicuna-13b": ["Hello"]})
    events = _turn(engine, battle_id, gateway)
    assert events[-1] == {"done": True, "stored": True, "turns": 1}
    with session_scope(engine) as s:
        battle = battles.get_battle(s, battle_id=battle_id)
        assert battle.flagged and battle.flag_word == "vicuna-13b"  # the longest match
        assert battles.battle_state(s, battle_id=battle_id).flagged is None  # hidden until vote
    _turn(engine, battle_id, FakeGateway({"alpaca-7b": ["ok"], "vicuna-13b": ["ok"]}))
    revealed = _vote(engine, battle_id)
    assert revealed.flagged is True and revealed.flag_word == "vicuna-13b"
    with session_scope(engine) as s:
        [record] = votes.export_votes(s)
    assert record["flagged"] is True and record["turn"] == 2


# --- turns ----------------------------------------------------------------------------------------


def test_both_sides_stream_and_the_turn_is_stored(engine):
    battle_id = _battle(engine)
    gateway = FakeGateway({"alpaca-7b": ["a1", "a2", "a3"], "vicuna-13b": ["b1", "b2"]})
    events = _turn(engine, battle_id, gateway)
    text = {side: "".join(e.get("delta", "") for e in events if e.get("side") == side)
            for side in "ab"}
    assert sorted(text.values()) == ["a1a2a3", "b1b2"]
    assert [e for e in events if e.get("done") and "side" in e] == [
        {"side": s, "done": True, "finish_reason": "stop"} for s in sorted(
            "ab", key=lambda s: [i for i, e in enumerate(events) if e.get("side") == s][-1])]
    with session_scope(engine) as s:
        state = battles.battle_state(s, battle_id=battle_id)
    assert state.turns == 1 and state.models == ["Model A", "Model B"] and state.model_a is None
    assert state.conversation_a[-1]["content"] == text["a"]

    # second turn sends the history; regenerate re-asks the same last user message
    _turn(engine, battle_id, FakeGateway({"alpaca-7b": ["x"], "vicuna-13b": ["y"]}), "More")
    with session_scope(engine) as s:
        plan = battles.plan_turn(s, battle_id=battle_id, content=None, max_tokens=8,
                                 temperature=0)
    assert [m["content"] for m in plan.prompts[0]] == ["Hello?", text["a"], "More"]
    with session_scope(engine) as s:
        battles.store_turn(s, plan=plan, answers=("X2", "Y2"), policy=POLICY)
        state = battles.battle_state(s, battle_id=battle_id)
    assert state.turns == 2 and [m["content"] for m in state.conversation_a][-2:] == ["More", "X2"]


def test_a_failing_side_is_named_by_its_label_only_and_nothing_is_stored(engine):
    with session_scope(engine) as s:
        s.add(Checkpoint(name="vicuna-13b", source="/models/vicuna-13b-v1.5"))
    battle_id = _battle(engine)
    boom = UpstreamFailed("HTTP 400: model 'vicuna-13b' at /models/vicuna-13b-v1.5 is too long")
    gateway = FakeGateway({"alpaca-7b": ["fine"], "vicuna-13b": ["partial", boom]})
    events = _turn(engine, battle_id, gateway)
    blob = json.dumps(events)
    assert "vicuna" not in blob.lower() and "alpaca" not in blob.lower()
    [error] = [e for e in events if "error" in e]
    assert error["error"].startswith(("Model A failed to answer:", "Model B failed to answer:"))
    assert "is too long" in error["error"]
    assert events[-1] == {"done": True, "stored": False}
    with session_scope(engine) as s:
        assert battles.get_battle(s, battle_id=battle_id).turns == 0


def test_named_battles_need_two_distinct_served_models(engine):
    named = _battle(engine, mode="named", model_a="alpaca-7b", model_b="vicuna-13b")
    with session_scope(engine) as s:
        assert battles.battle_state(s, battle_id=named).models == ["alpaca-7b", "vicuna-13b"]
    for names, param in (({"model_a": "alpaca-7b", "model_b": "alpaca-7b"}, "model_b"),
                         ({"model_a": "alpaca-7b", "model_b": "nobody"}, "model_b"),
                         ({"model_a": "alpaca-7b"}, "model_b")):
        with pytest.raises(ClientError) as info:
            _battle(engine, mode="named", **names)
        assert info.value.param == param
    with pytest.raises(ClientError, match="picks its own models"):
        _battle(engine, model_a="alpaca-7b")


# --- votes ----------------------------------------------------------------------------------------


def test_a_battle_takes_one_vote_and_only_after_an_answer(engine):
    battle_id = _battle(engine)
    with pytest.raises(ClientError, match="no answered message") as empty:
        _vote(engine, battle_id)
    assert empty.value.status_code == 400
    with pytest.raises(NotFound):
        _vote(engine, "0" * 32)
    _turn(engine, battle_id, FakeGateway({"alpaca-7b": ["a"], "vicuna-13b": ["b"]}))
    revealed = _vote(engine, battle_id, "bothbad")
    assert {revealed.model_a, revealed.model_b} == set(SERVED)
    assert revealed.models == [revealed.model_a, revealed.model_b]
    assert revealed.status == "voted" and revealed.winner == "tie (bothbad)"
    with pytest.raises(Conflict, match="already been voted"):
        _vote(engine, battle_id, "a")
    with pytest.raises(Conflict, match="over"), session_scope(engine) as s:
        battles.plan_turn(s, battle_id=battle_id, content="again", max_tokens=8, temperature=0)
    with session_scope(engine) as s:
        [record] = votes.export_votes(s)
    assert record["winner"] == "tie (bothbad)" and record["anony"] is True
    assert record["judge"] == "arena_user" and record["question_id"] == battle_id


def test_rate_limits_per_session_and_per_address_count_the_last_minute(engine):
    policy = BattlePolicy(battles_per_minute=2, votes_per_minute=1)
    _battle(engine, policy=policy, now=1000.0)
    _battle(engine, policy=policy, now=1010.0)
    with pytest.raises(RateLimited) as info:
        _battle(engine, policy=policy, now=1020.0)
    assert info.value.status_code == 429 and info.value.retry_after_s == 40
    assert "this session" in info.value.message
    # another session from the same address is limited too; another address is not
    with pytest.raises(RateLimited, match="this address"):
        _battle(engine, policy=policy, session_id="s2", now=1020.0)
    _battle(engine, policy=policy, session_id="s3", ip="5.6.7.8", now=1020.0)
    _battle(engine, policy=policy, now=1061.0)  # the first one left the window

    first, second = (_battle(engine, session_id=f"v{i}", ip=f"9.9.9.{i}", now=2000.0)
                     for i in range(2))
    for battle_id in (first, second):
        _turn(engine, battle_id, FakeGateway({"alpaca-7b": ["a"], "vicuna-13b": ["b"]}))
    _vote(engine, first, policy=policy, ip="7.7.7.7", now=2001.0)
    with pytest.raises(RateLimited, match="votes"):
        _vote(engine, second, policy=policy, ip="7.7.7.7", now=2002.0)
    _vote(engine, second, policy=policy, ip="7.7.7.7", now=2062.0)


# --- clean_battle import / export ------------------------------------------------------------------


def _record(**overrides):
    return {"model_a": "alpaca-7b", "model_b": "vicuna-13b", "winner": "model_a",
            "tstamp": 1700000000.5, "anony": True, "language": "English", "turn": 1,
            "judge": "arena_user", "question_id": "q1",
            "conversation_a": [{"role": "user", "content": "hi"}], **overrides}


@pytest.mark.parametrize(("index", "bad", "field"), [
    (1, {"winner": "model_c"}, "winner"),
    (2, {"tstamp": "yesterday"}, "tstamp"),
    (0, {"model_b": "alpaca-7b"}, "record"),
    (1, {"anony": "yes"}, "anony"),
    (2, {"turn": 0}, "turn"),
])
def test_import_refuses_a_bad_record_by_index_and_field_and_imports_nothing(
        engine, index, bad, field):
    records = [_record(), _record(), _record()]
    records[index] = {**records[index], **bad}
    with pytest.raises(ValidationFailed) as info, session_scope(engine) as s:
        votes.import_votes(s, records=records)
    assert f"record {index}" in info.value.message and repr(field) in info.value.message
    with session_scope(engine) as s:
        assert votes.export_votes(s) == []
    missing = [_record()]
    del missing[0]["judge"]
    with pytest.raises(ValidationFailed, match="record 0: field 'judge'"), session_scope(engine) as s:
        votes.import_votes(s, records=missing)


def test_import_then_export_round_trips(engine):
    records = [_record(), _record(winner="tie (bothbad)", tstamp=1700000001, question_id="q2",
                                  flagged=True, flag_word="Vicuna", anony=False, turn=3),
               _record(winner="tie", tstamp=1700000002.0, language="Chinese", judge="gpt-4")]
    with session_scope(engine) as s:
        assert votes.import_votes(s, records=records) == 3
    with session_scope(engine) as s:
        exported = votes.export_votes(s)
    records[1]["tstamp"] = 1700000001.0
    assert exported == records
