"""Answers through a gateway stand-in: multi-turn conversations, per-category temperatures, and
the answer cache (FastChat's formats, resumed at the next turn)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from evaluators.answering import AnsweringError, produce_answers, temperature_for
from evaluators.answers import read_answers
from evaluators.questions import Question

pytestmark = pytest.mark.e2e

QUESTIONS = [
    Question("81", "writing", ("Write a haiku.", "Now a limerick.")),
    Question("111", "math", ("2 + 3?", "Times 4?"), reference=("5", "20")),
    Question("151", "stem", ("What is entropy?", "Explain it to a child.")),
    Question("v1", "knowledge", ("Name a colour.",)),
]


def produce(server, cache: Path, *, seen: list[str] | None = None) -> dict[str, tuple[str, ...]]:
    return asyncio.run(produce_answers(
        base_url=server.url, model="m", questions=QUESTIONS, concurrency=2, max_tokens=16,
        cache_path=cache, on_answer=None if seen is None else seen.append))


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_turn_by_turn_with_the_conversation(chat_server, tmp_path: Path) -> None:
    chat_server.state.lengths = {"m": (10, 20)}
    cache = tmp_path / "answers-m.jsonl"
    answers = produce(chat_server, cache)
    assert answers == {"81": ("x" * 10, "x" * 20), "111": ("x" * 10, "x" * 20),
                       "151": ("x" * 10, "x" * 20), "v1": ("x" * 10,)}
    requests = chat_server.state.requests
    assert len(requests) == 7
    second = next(r for r in requests if r["messages"][-1]["content"] == "Times 4?")
    assert second["messages"] == [
        {"role": "user", "content": "2 + 3?"}, {"role": "assistant", "content": "x" * 10},
        {"role": "user", "content": "Times 4?"}]
    temperatures = {r["messages"][0]["content"]: r["temperature"] for r in requests}
    assert temperatures["2 + 3?"] == 0.0 and temperatures["Write a haiku."] == 0.7
    assert temperatures["What is entropy?"] == 0.1 and temperatures["Name a colour."] == 0.7
    assert all(r["max_tokens"] == 16 for r in requests)

    # the cache: MT-bench's layout for two turns, Vicuna's for one; read back as answers
    records = {r["question_id"]: r for r in lines(cache)}
    assert records["81"]["choices"] == [{"index": 0, "turns": ["x" * 10, "x" * 20]}]
    assert records["v1"]["text"] == "x" * 10 and records["v1"]["model_id"] == "m"
    assert {a.question_id: a.turns for a in read_answers(cache)} == answers

    chat_server.state.requests.clear()
    seen: list[str] = []
    assert produce(chat_server, cache, seen=seen) == answers
    assert chat_server.state.requests == []  # all cached
    assert sorted(seen) == sorted(q.id for q in QUESTIONS)


def test_a_failed_turn_resumes_at_that_turn(chat_server, tmp_path: Path) -> None:
    cache = tmp_path / "answers-m.jsonl"
    chat_server.state.fail_turn = 2
    with pytest.raises(AnsweringError, match="3 of 4 answers from m failed"):
        produce(chat_server, cache)
    partial = {r["question_id"]: r for r in lines(cache)}
    assert partial["81"]["text"] == "x" * 40  # the first turn is kept
    assert partial["v1"]["text"] == "x" * 40

    chat_server.state.fail_turn = None
    chat_server.state.requests.clear()
    answers = produce(chat_server, cache)
    assert len(chat_server.state.requests) == 3  # only the second turns
    assert all(len(r["messages"]) == 3 for r in chat_server.state.requests)
    assert answers["111"] == ("x" * 40, "x" * 80)
    assert len(lines(cache)) == 4  # replaced records are compacted away: one per question


def test_temperature_table() -> None:
    assert temperature_for("Math") == 0.0 and temperature_for("extraction") == 0.0
    assert temperature_for("humanities") == 0.1 and temperature_for("roleplay") == 0.7
    assert temperature_for("knowledge") == 0.7
