"""The judging protocols end to end: the openai client against the judge test server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from evaluators.client import JudgeClient
from evaluators.errors import JudgeRunError
from evaluators.questions import demo_questions
from evaluators.runner import run_pairwise, run_ratio, run_single
from evaluators.store import JudgmentStore

pytestmark = pytest.mark.e2e

QUESTIONS = demo_questions()
LONG = {q.id: "a" * 150 for q in QUESTIONS}     # test judge: 1 + 150 // 25 = 7
SHORT = {q.id: "b" * 50 for q in QUESTIONS}     # 3
EQUAL = {q.id: "c" * 150 for q in QUESTIONS}    # 7


def client(server, **kwargs) -> JudgeClient:
    options = {"concurrency": 4, "timeout_s": 10.0, "max_retries": 0,
               "price_per_1k_prompt": 0.5, "price_per_1k_completion": 1.5, **kwargs}
    return JudgeClient(base_url=server.url, model="judge-1", api_key="k", **options)


def test_ratio_end_to_end_then_cached(judge_server, tmp_path: Path) -> None:
    with JudgmentStore(tmp_path / "j.db") as store:
        judge = client(judge_server)
        result = asyncio.run(run_ratio(judge=judge, store=store, questions=QUESTIONS,
                                       answers_a=LONG, answers_b=SHORT))
        assert judge_server.state.calls == 12
        assert result.overall.ratio == pytest.approx(100 * 7 / 3)
        assert (result.overall.wins, result.overall.losses) == (12, 0)
        assert result.overall.beat_rate == 1.0
        assert set(result.by_category) == {"knowledge", "writing", "reasoning", "coding"}
        assert judge.usage.calls == 12 and judge.usage.cost_usd > 0
        assert store.totals()["cost_usd"] == pytest.approx(judge.usage.cost_usd)

        again = asyncio.run(run_ratio(judge=client(judge_server), store=store,
                                      questions=QUESTIONS, answers_a=LONG, answers_b=SHORT))
        assert judge_server.state.calls == 12  # second run: zero judge calls
        assert again == result


def test_swap_cancels_position_bias(judge_server, tmp_path: Path) -> None:
    judge_server.state.bias_first = 1
    with JudgmentStore(tmp_path / "j.db") as store:
        plain = asyncio.run(run_ratio(judge=client(judge_server), store=store,
                                      questions=QUESTIONS, answers_a=EQUAL, answers_b=LONG))
        assert plain.overall.ratio == pytest.approx(100 * 8 / 7)
        swapped = asyncio.run(run_ratio(judge=client(judge_server), store=store,
                                        questions=QUESTIONS, answers_a=EQUAL, answers_b=LONG,
                                        swap=True))
    assert judge_server.state.calls == 24  # the A-first judgments were reused
    assert swapped.overall.ratio == pytest.approx(100.0)
    assert swapped.overall.ties == 12


def test_unparseable_judgments_counted_and_excluded(judge_server, tmp_path: Path) -> None:
    judge_server.state.garble = {"lighthouse", "小吃"}
    with JudgmentStore(tmp_path / "j.db") as store:
        result = asyncio.run(run_ratio(judge=client(judge_server), store=store,
                                       questions=QUESTIONS, answers_a=LONG, answers_b=SHORT))
        assert result.unparseable == 2
        assert result.overall.n == 10
        assert result.overall.ratio == pytest.approx(100 * 7 / 3)
        assert store.count() == 12 and store.count(unparseable_only=True) == 2


def test_interrupted_run_resumes_with_only_missing_calls(judge_server, tmp_path: Path) -> None:
    judge_server.state.fail_after = 5
    with JudgmentStore(tmp_path / "j.db") as store:
        with pytest.raises(JudgeRunError) as info:
            asyncio.run(run_ratio(judge=client(judge_server), store=store,
                                  questions=QUESTIONS, answers_a=LONG, answers_b=SHORT))
        assert info.value.failed == 7
        assert store.count() == 5
        judge_server.state.fail_after = None
        judge_server.state.reset_counts()
        result = asyncio.run(run_ratio(judge=client(judge_server), store=store,
                                       questions=QUESTIONS, answers_a=LONG, answers_b=SHORT))
    assert judge_server.state.calls == 7
    assert result.overall.n == 12


def test_retry_after_429(judge_server, tmp_path: Path) -> None:
    judge_server.state.rate_limit_once = True
    with JudgmentStore(tmp_path / "j.db") as store:
        result = asyncio.run(run_single(judge=client(judge_server, max_retries=2), store=store,
                                        questions=QUESTIONS[:3], answers={"m": LONG}))
    assert judge_server.state.rate_limited == 1
    assert judge_server.state.calls == 4
    assert result.mean == {"m": 7.0}


def test_429_without_retries_fails_and_caches_nothing_for_it(judge_server,
                                                             tmp_path: Path) -> None:
    judge_server.state.rate_limit_once = True
    with JudgmentStore(tmp_path / "j.db") as store, pytest.raises(JudgeRunError):
        asyncio.run(run_single(judge=client(judge_server, concurrency=1), store=store,
                               questions=QUESTIONS[:3], answers={"m": LONG}))


def test_pairwise_both_orders(judge_server, tmp_path: Path) -> None:
    with JudgmentStore(tmp_path / "j.db") as store:
        result = asyncio.run(run_pairwise(judge=client(judge_server), store=store,
                                          questions=QUESTIONS, answers_a=LONG,
                                          answers_b={**SHORT, "demo-1": "c" * 150}))
    assert judge_server.state.calls == 24
    o = result.overall
    assert (o.wins, o.ties, o.losses) == (11, 1, 0)
    assert o.adjusted_win_rate == pytest.approx(11.5 / 12)


def test_single_grading_per_model_and_category(judge_server, tmp_path: Path) -> None:
    with JudgmentStore(tmp_path / "j.db") as store:
        result = asyncio.run(run_single(judge=client(judge_server), store=store,
                                        questions=QUESTIONS,
                                        answers={"long": LONG, "short": SHORT}))
    assert result.mean == {"long": 7.0, "short": 3.0}
    assert result.by_category["short"]["coding"] == 3.0
    assert result.count == {"long": 12, "short": 12}
