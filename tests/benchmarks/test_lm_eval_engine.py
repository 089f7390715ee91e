"""The lm-eval engine: lm-eval's own task files on the local data, the same prompts as the native
engine's ``lm-eval`` format, and agreement of both engines on samples of all three suites, in
process (lm-eval's ``hf``) and through the control plane (our ``arena`` model class)."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM

from benchmarks.engine import BenchmarkResults, compare_predictions, score_items
from benchmarks.lm_eval_engine import lm_eval_tasks_dir, run_lm_eval
from benchmarks.lm_eval_model import ArenaLM
from benchmarks.loaders import load_benchmark
from benchmarks.runs import BenchRequest, run_benchmark, run_benchmark_local
from benchmarks.suites import SUITE_NAMES, get_suite

Sample = Callable[[str], Path]
SPLIT = {"mmlu": "test", "ceval": "val", "cmmlu": "test"}


@pytest.mark.parametrize("suite_name", SUITE_NAMES)
def test_every_subject_has_lm_evals_task_with_our_lm_eval_header(suite_name: str) -> None:
    suite = get_suite(suite_name)
    fmt = suite.prompt_format("lm-eval")
    for subject in suite.subjects.values():
        path = lm_eval_tasks_dir() / suite.lm_eval.config.format(subject=subject.name)
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert config["task"] == suite.lm_eval.task.format(subject=subject.name)
        assert config["description"] == fmt.header.format(subject=subject.title)


def fake_logprob(context: str, continuation: str) -> float:
    """A deterministic stand-in for a model: equal strings, equal numbers."""
    return -(zlib.crc32((context + "\x00" + continuation).encode()) % 100_000) / 1000


class FakeLM(LM):
    def __init__(self) -> None:
        super().__init__()
        self.contexts: set[str] = set()

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        self.contexts.update(r.args[0] for r in requests)
        return [(fake_logprob(*r.args), False) for r in requests]

    def loglikelihood_rolling(self, requests: list[Instance]) -> list[float]:
        raise NotImplementedError

    def generate_until(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError


class FakeScorer:
    def __init__(self) -> None:
        self.prompts: set[str] = set()

    async def score(self, prompts: list[str], candidates: list[str]) -> list[list[float]]:
        self.prompts.update(prompts)
        return [[fake_logprob(p, c) for c in candidates] for p in prompts]


@pytest.mark.parametrize("suite", SUITE_NAMES)
def test_native_lm_eval_format_writes_exactly_lm_evals_contexts(sample: Sample, suite: str,
                                                                 tmp_path: Path) -> None:
    data = load_benchmark(sample(suite), suite, splits=["dev", SPLIT[suite]])
    lm, scorer = FakeLM(), FakeScorer()
    via_lm_eval = run_lm_eval(data, split=SPLIT[suite], shots=3, root=tmp_path / "tasks",
                              model=lm)
    native = asyncio.run(score_items(data.items[SPLIT[suite]], scorer=scorer,
                                     dev=data.items["dev"], shots=3, prompt_format="lm-eval",
                                     fingerprint=data.fingerprint))
    assert lm.contexts == scorer.prompts and len(scorer.prompts) == 6
    assert [r.logprobs for r in via_lm_eval.items] == [r.logprobs for r in native.items]
    assert (via_lm_eval.engine, native.engine) == ("lm-eval", "native")
    assert via_lm_eval.fingerprint == native.fingerprint


def assert_agree(native: dict[str, Any], lm_eval: dict[str, Any]) -> None:
    """Same prediction for every item (a difference is tolerated only on an exact tie), the
    same log-probabilities up to float noise and the same accuracies."""
    def results(summary: dict[str, Any]) -> BenchmarkResults:
        from benchmarks.engine import ItemResult

        items = [ItemResult(**{k: v for k, v in r.items() if k != "correct"})
                 for r in summary["items"]]
        return BenchmarkResults(suite=summary["suite"], shots=summary["shots"],
                                fingerprint=summary["fingerprint"], items=items)

    agreement = compare_predictions(results(native), results(lm_eval))
    assert agreement.identical, agreement
    assert agreement.same + len(agreement.ties) == agreement.items == native["n_items"]
    for a, b in zip(native["items"], lm_eval["items"], strict=True):
        assert a["logprobs"] == pytest.approx(b["logprobs"], abs=1e-4)
    assert (native["engine"], lm_eval["engine"]) == ("native", "lm-eval")
    if not agreement.ties:
        assert native["accuracy"] == lm_eval["accuracy"]
        assert native["subjects"] == lm_eval["subjects"]


@pytest.mark.parametrize("suite", SUITE_NAMES)
def test_both_engines_agree_in_process(sample: Sample, suite: str,
                                       tiny_models: dict[str, Path]) -> None:
    data = str(sample(suite))
    native = run_benchmark_local(BenchRequest(suite=suite, data=data, shots=2,
                                              prompt_format="lm-eval"),
                                 model_path=tiny_models["llama"])
    lm_eval = run_benchmark_local(BenchRequest(suite=suite, data=data, shots=2, engine="lm-eval"),
                                  model_path=tiny_models["llama"])
    assert_agree(native, lm_eval)


@pytest.mark.e2e
def test_both_engines_agree_through_the_control_plane(sample: Sample, served_llama: Any,
                                                      tiny_models: dict[str, Path]) -> None:
    for suite in SUITE_NAMES:
        data = str(sample(suite))
        runs = {engine: run_benchmark(
            BenchRequest(suite=suite, data=data, shots=2, engine=engine, prompt_format="lm-eval",
                         limit=2), model="tiny-llama", base_url=served_llama.url, api_key=None)
            for engine in ("native", "lm-eval")}
        assert_agree(runs["native"], runs["lm-eval"])
        local = run_benchmark_local(BenchRequest(suite=suite, data=data, shots=2, limit=2,
                                                 prompt_format="lm-eval"),
                                    model_path=tiny_models["llama"])
        assert_agree(local, runs["lm-eval"])


def _instances(pairs: list[tuple[str, str]]) -> list[Instance]:
    return [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i)
            for i, pair in enumerate(pairs)]


@pytest.mark.e2e
def test_arena_model_is_exact_for_any_continuation(served_llama: Any,
                                                   tiny_models: dict[str, Path]) -> None:
    """Letters go through /api/score, longer continuations (and an empty context) through the
    echo of /v1/completions; all match lm-eval's own hf model."""
    from lm_eval.models.huggingface import HFLM

    pairs = [("Question: what is 2 + 2?\nAnswer:", " A"), ("Question: what is 2 + 2?\nAnswer:", " B"),
             ("问题：中国的首都是哪里？\n答案：", "北京"), ("The alpaca", " reads new words."),
             ("", "Hello world"), ("Trailing space ", "A")]
    reference = HFLM(pretrained=str(tiny_models["llama"]), add_bos_token=True, device="cpu",
                     dtype="float32").loglikelihood(_instances(pairs))
    for greedy in (False, True):
        arena = ArenaLM("tiny-llama", served_llama.url, str(tiny_models["llama"]), greedy=greedy)
        got = arena.loglikelihood(_instances(pairs))
        assert (arena.scored, arena.echoed) == ((0, 6) if greedy else (3, 3))
        for (logprob, is_greedy), (want, want_greedy) in zip(got, reference, strict=True):
            assert logprob == pytest.approx(want, abs=1e-4)
            if greedy:
                assert is_greedy == want_greedy
