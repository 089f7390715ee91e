"""MT-bench questions judged per turn, against the judge test server, on a small question file
in MT-bench's layout (two turns, references for math) with a single-turn question mixed in."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from evaluators import prompts
from evaluators.client import JudgeClient
from evaluators.questions import Question, read_questions
from evaluators.runner import run_pairwise, run_ratio, run_single
from evaluators.store import JudgmentStore, StoredJudgment, judgment_key
from tests.evaluators.conftest import judged_question

pytestmark = pytest.mark.e2e

MT_BENCH = [
    {"question_id": 81, "category": "writing",
     "turns": ["Write a haiku about frost.", "Rewrite it as a limerick."]},
    {"question_id": 111, "category": "math", "turns": ["What is 2 + 3?", "Multiply that by 4."],
     "reference": ["5", "20"]},
    {"question_id": 131, "category": "extraction",  # has a reference, but MT-bench ignores it
     "turns": ["List the cities in: Paris and Rome.", "Now in reverse order."],
     "reference": ["Paris, Rome", "Rome, Paris"]},
    {"question_id": "v1", "category": "writing", "text": "Name a colour."},
]
# answer lengths per turn; the test judge scores 1 + len // 25:
#            turn 1 (A:B)   turn 2 (A:B)
#   81       150:50  7:3    50:100  3:5
#   111      100:100 5:5    200:50  9:3
#   131      75:75   4:4    75:25   4:2
#   v1       150:50  7:3    –
# turn 1: ΣA 23, ΣB 15; turn 2: ΣA 16, ΣB 10; overall ΣA 39, ΣB 25
LENGTHS_A = {"81": (150, 50), "111": (100, 200), "131": (75, 75), "v1": (150,)}
LENGTHS_B = {"81": (50, 100), "111": (100, 50), "131": (75, 25), "v1": (50,)}


def answers(lengths: dict[str, tuple[int, ...]], char: str) -> dict[str, tuple[str, ...]]:
    return {qid: tuple(char * n for n in turns) for qid, turns in lengths.items()}


A, B = answers(LENGTHS_A, "a"), answers(LENGTHS_B, "b")


@pytest.fixture()
def questions(tmp_path: Path) -> list[Question]:
    path = tmp_path / "question.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in MT_BENCH), encoding="utf-8")
    return read_questions(path)


def client(server) -> JudgeClient:
    return JudgeClient(base_url=server.url, model="judge-1", api_key="k", concurrency=4,
                       timeout_s=10.0, max_retries=0)


def prompts_about(server, text: str) -> list[str]:
    """The judged user messages whose judged question is ``text``."""
    found = [body["messages"][-1]["content"] for body in server.state.requests]
    return [prompt for prompt in found if judged_question(prompt) == text]


def prompt_about(server, text: str) -> str:
    [prompt] = prompts_about(server, text)
    return prompt


def test_ratio_per_turn(judge_server, questions, tmp_path: Path) -> None:
    with JudgmentStore(tmp_path / "j.db") as store:
        result = asyncio.run(run_ratio(judge=client(judge_server), store=store,
                                       questions=questions, answers_a=A, answers_b=B))
        assert judge_server.state.calls == 7  # 3 questions × 2 turns + 1
        assert result.overall.ratio == pytest.approx(100 * 39 / 25)
        assert result.by_turn[1].ratio == pytest.approx(100 * 23 / 15)
        assert result.by_turn[2].ratio == pytest.approx(100 * 16 / 10)
        assert (result.by_turn[1].wins, result.by_turn[1].ties, result.by_turn[1].losses) == (
            2, 2, 0)
        assert (result.by_turn[2].wins, result.by_turn[2].ties, result.by_turn[2].losses) == (
            2, 0, 1)
        assert result.by_category["math"].ratio == pytest.approx(100 * 14 / 8)
        assert result.by_category["writing"].n == 3
        assert result.missing == 0
        stored = store.get_many([judgment_key(
            judge_model="judge-1", prompt_version=prompts.PROMPT_VERSION, kind="ratio",
            question_id="81", question_text=questions[0].turns,
            answers=[A["81"], B["81"]], order="AB", turn=2)])
        assert [j.turn for j in stored.values()] == [2]

        judge_server.state.reset_counts()
        again = asyncio.run(run_ratio(judge=client(judge_server), store=store,
                                      questions=questions, answers_a=A, answers_b=B))
        assert judge_server.state.calls == 0
        assert again == result


def test_turn_two_prompt_shows_the_conversations_and_references(judge_server, questions,
                                                                 tmp_path: Path) -> None:
    with JudgmentStore(tmp_path / "j.db") as store:
        asyncio.run(run_ratio(judge=client(judge_server), store=store, questions=questions,
                              answers_a=A, answers_b=B))
    math_2 = prompt_about(judge_server, "Multiply that by 4.")
    for label, side in (("Assistant 1", A["111"]), ("Assistant 2", B["111"])):
        conversation = prompts.conversation(f"{label}'s Conversation with the User", label,
                                            ["What is 2 + 3?", "Multiply that by 4."], side)
        assert conversation in math_2
    assert "### Reference answer:\n5\n" in math_2 and "### Reference answer:\n20\n" in math_2
    assert prompts.REFERENCE_NOTE in math_2

    math_1 = prompt_about(judge_server, "What is 2 + 3?")
    assert "[The Start of Reference Answer]\n5\n[The End of Reference Answer]" in math_1
    assert "Multiply" not in math_1 and A["111"][1] not in math_1  # turn 2 is not shown

    for text in ("List the cities in: Paris and Rome.", "Now in reverse order.",
                 "Rewrite it as a limerick."):
        assert "Reference" not in prompt_about(judge_server, text)
    # the single-turn question's prompt is exactly the single-turn layout
    assert prompt_about(judge_server, "Name a colour.") == prompts.ratio_messages(
        "Name a colour.", A["v1"][0], B["v1"][0])[1]["content"]


def test_pairwise_per_turn_and_a_missing_turn(judge_server, questions, tmp_path: Path) -> None:
    with JudgmentStore(tmp_path / "j.db") as store:
        result = asyncio.run(run_pairwise(judge=client(judge_server), store=store,
                                          questions=questions, answers_a=A, answers_b=B))
        assert judge_server.state.calls == 14  # both orders
        turn_1, turn_2 = result.by_turn[1], result.by_turn[2]
        assert (turn_1.wins, turn_1.ties, turn_1.losses) == (2, 2, 0)
        assert (turn_2.wins, turn_2.ties, turn_2.losses) == (2, 0, 1)
        assert (result.overall.wins, result.overall.ties, result.overall.losses) == (4, 2, 1)
        assert result.overall.adjusted_win_rate == pytest.approx(5 / 7)

        # side B answered question 81's first turn only (a Vicuna-format answer): its second
        # turn is missing, every other judgment comes from the store
        judge_server.state.reset_counts()
        partial = asyncio.run(run_pairwise(judge=client(judge_server), store=store,
                                           questions=questions, answers_a=A,
                                           answers_b={**B, "81": B["81"][0]}))
    assert judge_server.state.calls == 0
    assert partial.missing == 1
    assert partial.overall.n == 6 and partial.by_turn[2].n == 2


def test_single_per_model_and_turn(judge_server, questions, tmp_path: Path) -> None:
    with JudgmentStore(tmp_path / "j.db") as store:
        result = asyncio.run(run_single(judge=client(judge_server), store=store,
                                        questions=questions, answers={"a": A, "b": B}))
    assert result.by_turn["a"] == {1: pytest.approx(23 / 4), 2: pytest.approx(16 / 3)}
    assert result.by_turn["b"] == {1: pytest.approx(15 / 4), 2: pytest.approx(10 / 3)}
    assert result.mean["a"] == pytest.approx(39 / 7)
    assert result.count == {"a": 7, "b": 7}
    rating_2 = prompts_about(judge_server, "Rewrite it as a limerick.")
    assert len(rating_2) == 2
    assert all("[The Start of the Assistant's Conversation with the User]" in p for p in rating_2)


def test_single_turn_sets_have_no_turn_breakdown(judge_server, tmp_path: Path) -> None:
    single_turn = [Question("q1", "writing", ("Say hi.",)), Question("q2", "math", ("1+1?",),
                                                                      reference=("2",))]
    with JudgmentStore(tmp_path / "j.db") as store:
        result = asyncio.run(run_ratio(judge=client(judge_server), store=store,
                                       questions=single_turn, answers_a={"q1": "a", "q2": "b"},
                                       answers_b={"q1": "c", "q2": "d"}))
    assert result.by_turn == {}
    # single-turn questions are judged as they always were: no reference in the prompt
    assert all("Reference" not in body["messages"][-1]["content"]
               for body in judge_server.state.requests)


def test_single_turn_prompts_and_keys_are_unchanged() -> None:
    """Golden values from before multi-turn judging: the stores people have stay valid."""
    def digest(messages: prompts.Messages) -> str:
        return hashlib.sha256(json.dumps(messages).encode()).hexdigest()

    assert prompts.PROMPT_VERSION == "arena-judge-v1"
    assert digest(prompts.ratio_messages("Q", "a", "b")).startswith("a1c767e79774")
    assert digest(prompts.pairwise_messages("Q", "a", "b")).startswith("6bfb8a6ac9af")
    assert digest(prompts.single_messages("Q", "a")).startswith("e6a16891df39")
    key = judgment_key(judge_model="j", prompt_version="arena-judge-v1", kind="ratio",
                       question_id="81", question_text=("Q1", "Q2"), answers=("a1", "b1"),
                       order="AB")
    assert key.startswith("6b41507d8af9")


def test_a_store_from_before_turns_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE judgment (key TEXT PRIMARY KEY, kind TEXT NOT NULL, "
                   "judge_model TEXT NOT NULL, prompt_version TEXT NOT NULL, "
                   "question_id TEXT NOT NULL, order_label TEXT NOT NULL, raw_text TEXT NOT NULL, "
                   "parsed TEXT, prompt_tokens INTEGER NOT NULL, "
                   "completion_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL, "
                   "created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)")
        db.execute("INSERT INTO judgment (key, kind, judge_model, prompt_version, question_id, "
                   "order_label, raw_text, parsed, prompt_tokens, completion_tokens, cost_usd) "
                   "VALUES ('k1', 'single', 'j', 'arena-judge-v1', 'q', 'A', '[[7]]', '7', 1, 1, 0)")
    with JudgmentStore(path) as store:
        assert store.get_many(["k1"])["k1"].turn == 1
        store.put(StoredJudgment(key="k2", kind="single", judge_model="j",
                                 prompt_version="arena-judge-v1", question_id="q", order="A",
                                 raw_text="[[6]]", parsed=6.0, turn=2))
        assert store.get_many(["k2"])["k2"].turn == 2
