"""The native engine: accuracies from a scripted scorer, LocalScorer against transformers by
hand, and WorkerScorer against a real worker serving the same tiny checkpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from benchmarks.engine import ceval_submission, score_items
from benchmarks.loaders import BenchmarkData, load_benchmark
from benchmarks.prompts import build_prompts
from benchmarks.scorers import LocalScorer, ScoringError, WorkerScorer

Sample = Callable[[str], Path]


class ScriptedScorer:
    """Picks B, except D for prompts ending in "anatomy test q2"; all-equal (a tie) for C-Eval."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[str]]] = []

    async def score(self, prompts: list[str], candidates: list[str]) -> list[list[float]]:
        self.calls.append((prompts, candidates))
        out = []
        for prompt in prompts:
            last = prompt.rsplit("\n\n", 1)[-1]
            if "答案：" in last:
                out.append([-1.0] * 4)
            elif last.startswith("anatomy test q2"):
                out.append([-3.0, -2.0, -4.0, -0.5])
            else:
                out.append([-3.0, -0.1, -4.0, -5.0])
        return out


def test_accuracy_micro_macro_and_categories(sample: Sample) -> None:
    data = load_benchmark(sample("mmlu"), "mmlu", splits=["dev", "test"])
    scorer = ScriptedScorer()
    results = asyncio.run(score_items(data.items["test"], scorer=scorer, dev=data.items["dev"],
                                      shots=2, fingerprint=data.fingerprint))
    assert scorer.calls[0][1] == [" A", " B", " C", " D"]
    assert [r.prediction for r in results.items] == ["B", "B", "B", "B", "B", "D"]
    assert [r.correct for r in results.items] == [True, False, False, True, False, True]
    table = results.to_dict()
    assert (table["accuracy"], table["macro_accuracy"]) == (0.5, 0.5)
    assert table["subjects"]["abstract_algebra"] == {"accuracy": 1 / 3, "correct": 1, "total": 3}
    assert table["categories"] == {
        "STEM": {"accuracy": 1 / 3, "correct": 1, "total": 3},
        "other": {"accuracy": 2 / 3, "correct": 2, "total": 3}}
    assert table["fingerprint"] == data.fingerprint and table["items"][0]["shots"] == 2


def test_ceval_groups_ties_and_the_test_submission(sample: Sample) -> None:
    data = load_benchmark(sample("ceval"), "ceval")
    val = asyncio.run(score_items(data.items["val"], scorer=ScriptedScorer(),
                                  dev=data.items["dev"]))
    assert {r.prediction for r in val.items} == {"A"}  # a tie goes to the first letter
    assert val.groups["hard"].value == pytest.approx(1 / 3)  # college_physics only
    assert list(val.categories) == ["STEM", "Humanities"]
    test = asyncio.run(score_items(data.items["test"], scorer=ScriptedScorer(),
                                   dev=data.items["dev"]))
    assert test.overall.value is None and test.overall.total == 0
    assert ceval_submission(test) == {"college_physics": {"0": "A", "1": "A"},
                                      "logic": {"0": "A", "1": "A"}}


def reference_logprobs(checkpoint: Path, prompts: list[str],
                       candidates: list[str]) -> list[list[float]]:
    """One unpadded forward pass per prompt; each candidate's first token after the prompt."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt)["input_ids"]
        tokens = []
        for candidate in candidates:
            full = tokenizer(prompt + candidate)["input_ids"]
            assert full[: len(ids)] == ids
            tokens.append(full[len(ids)])
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        out.append(torch.log_softmax(logits, dim=-1)[tokens].tolist())
    return out


@pytest.fixture(scope="module")
def local_scorer(tiny_models: dict[str, Path]) -> LocalScorer:
    return LocalScorer(tiny_models["llama"], batch_size=4)  # batches mix prompt lengths


def _mmlu_and_ceval(sample: Sample) -> tuple[BenchmarkData, BenchmarkData]:
    return load_benchmark(sample("mmlu"), "mmlu"), load_benchmark(sample("ceval"), "ceval")


def test_local_scorer_matches_transformers_by_hand(sample: Sample, local_scorer: LocalScorer,
                                                   tiny_models: dict[str, Path]) -> None:
    for data, candidates in zip(_mmlu_and_ceval(sample), ([" A", " B", " C", " D"],
                                                          ["A", "B", "C", "D"]), strict=True):
        split = "test" if data.suite == "mmlu" else "val"
        prompts = [p.text for p in build_prompts(data.items[split], data.items["dev"], shots=2)]
        got = asyncio.run(local_scorer.score(prompts, candidates))
        want = reference_logprobs(tiny_models["llama"], prompts, candidates)
        assert len(got) == len(prompts)
        for row, expected in zip(got, want, strict=True):
            assert row == pytest.approx(expected, abs=1e-4)


def test_local_scorer_runs_each_subjects_shots_once(sample: Sample, local_scorer: LocalScorer,
                                                   tiny_models: dict[str, Path]) -> None:
    """Prompts sharing their k-shot prefix are grouped (one prefix pass per group); a prompt
    sharing nothing long is scored whole; all match one unpadded pass per prompt."""
    data = load_benchmark(sample("mmlu"), "mmlu")
    prompts = [p.text for p in build_prompts(data.items["test"] + data.items["val"],
                                             data.items["dev"], shots=3)] + ["Answer:"]
    encoded = list(local_scorer.tokenizer(prompts)["input_ids"])
    groups = local_scorer._prefix_groups(encoded)
    shared = sorted((len(members), prefix) for members, prefix in groups)
    assert [n for n, _ in shared] == [1, 5, 5]  # "Answer:"; each subject's test + val items
    assert all(prefix >= LocalScorer.MIN_PREFIX for n, prefix in shared if n > 1)
    got = asyncio.run(local_scorer.score(prompts, [" A", " B", " C", " D"]))
    want = reference_logprobs(tiny_models["llama"], prompts, [" A", " B", " C", " D"])
    for row, expected in zip(got, want, strict=True):
        assert row == pytest.approx(expected, abs=1e-4)


@pytest.fixture(scope="module")
def worker(tiny_models: dict[str, Path]) -> Iterator[Any]:
    from model_workers.backends import BackendOptions, ModelSpec, create_backend
    from model_workers.server import create_app
    from tests.conftest import BackgroundServer

    specs = [ModelSpec(name="tiny-llama", source=str(tiny_models["llama"]), template="alpaca")]
    backend = create_backend("hf", specs, BackendOptions(device="cpu"))
    with BackgroundServer(create_app(backend, specs, backend_name="hf")) as server:
        yield server


@pytest.mark.e2e
def test_worker_scorer_agrees_with_local_scorer(sample: Sample, worker: Any,
                                                local_scorer: LocalScorer) -> None:
    for data in _mmlu_and_ceval(sample):
        split = "test" if data.suite == "mmlu" else "val"
        remote = asyncio.run(score_items(
            data.items[split], dev=data.items["dev"], shots=2,
            scorer=WorkerScorer(worker.url, "tiny-llama", batch_size=3)))
        local = asyncio.run(score_items(data.items[split], dev=data.items["dev"], shots=2,
                                        scorer=local_scorer))
        assert [r.prediction for r in remote.items] == [r.prediction for r in local.items]
        for a, b in zip(remote.items, local.items, strict=True):
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
        assert remote.overall == local.overall


@pytest.mark.e2e
def test_worker_scorer_reports_http_errors(worker: Any) -> None:
    with pytest.raises(ScoringError, match="404"):
        asyncio.run(WorkerScorer(worker.url, "no-such-model").score(["Answer:"], [" A"]))
