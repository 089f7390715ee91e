"""``benchmarks.runs``: request validation, the token budget (fewer shots, recorded per item) in
process and through the control plane, and the summary's shape."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from benchmarks import budget as budget_module
from benchmarks.loaders import load_benchmark
from benchmarks.prompts import build_prompt
from benchmarks.runs import (
    BenchmarkRequestError,
    BenchRequest,
    run_benchmark,
    run_benchmark_local,
    validate_request,
)
from tests.benchmarks.conftest import _mc, write_csv, write_mmlu

Sample = Callable[[str], Path]


def test_defaults_are_filled_in(sample: Sample) -> None:
    ceval = validate_request(BenchRequest(suite="ceval", data=str(sample("ceval")),
                                          subjects=["logic"]))
    assert (ceval.split, ceval.prompt_format, ceval.engine, ceval.shots) == \
        ("val", "official", "native", 5)
    mmlu = validate_request(BenchRequest(suite="mmlu", data=str(sample("mmlu")), engine="lm-eval"))
    assert (mmlu.split, mmlu.prompt_format, mmlu.subjects) == ("test", "lm-eval", None)


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({"suite": "mmlx"}, "suite", "unknown benchmark suite 'mmlx'"),
    ({"engine": "vllm"}, "engine", "unknown engine 'vllm' (known: native, lm-eval)"),
    ({"split": "dev"}, "split", "MMLU has no split 'dev' to score (it has val, test)"),
    ({"suite": "ceval", "split": "test", "engine": "lm-eval"}, "split", "(answers needed)"),
    ({"shots": -1}, "shots", "must be an integer >= 0, got -1"),
    ({"shots": 6}, "shots", "6 shots need 6 dev items for abstract_algebra; the data has 5"),
    ({"limit": 0}, "limit", "must be an integer >= 1, got 0"),
    ({"batch_size": 0}, "batch_size", "must be an integer >= 1"),
    ({"subjects": []}, "subjects", "no subject given"),
    ({"subjects": ["anatomie"]}, "subjects", "no subject 'anatomie'; did you mean anatomy?"),
    ({"prompt_format": "helm"}, "prompt_format", "unknown prompt format 'helm'"),
    ({"engine": "lm-eval", "prompt_format": "official"}, "prompt_format", "lm-eval's own"),
    ({"data": "/no/such/folder"}, "data", "/no/such/folder does not exist"),
])
def test_bad_fields_are_named(sample: Sample, changes: dict[str, Any], field: str,
                              message: str) -> None:
    fields: dict[str, Any] = {"suite": "mmlu", "data": str(sample("mmlu")), **changes}
    with pytest.raises(BenchmarkRequestError) as caught:
        validate_request(BenchRequest(**fields))
    assert caught.value.field == field
    assert message in str(caught.value) and str(caught.value).startswith(f"{field}: ")


def test_data_that_does_not_load_is_refused(sample: Sample) -> None:
    data = sample("ceval")
    (data / "val" / "logic_val.csv").write_text("id,question\n1,q\n", encoding="utf-8")
    with pytest.raises(BenchmarkRequestError, match=r"data: .*logic_val.csv:1: expected header"):
        validate_request(BenchRequest(suite="ceval", data=str(data)))


def long_mmlu(root: Path) -> Path:
    """The MMLU sample with ~250-character dev questions: 5 shots overflow 512 tokens."""
    write_mmlu(root)
    for subject in ("abstract_algebra", "anatomy"):
        rows = _mc(subject, 5)
        for i, row in enumerate(rows):
            row[0] = f"{subject} long question {i}: " + "the alpaca reads new words. " * 8
        write_csv(root / "data" / "dev" / f"{subject}_dev.csv", rows)
    return root


def assert_budget_kept(summary: dict[str, Any], data: Path, checkpoint: Path) -> None:
    """Each item has the most shots whose prompt plus the answer token fit 512 tokens."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    loaded = load_benchmark(data, "mmlu", splits=["dev", "test"])
    items = {(i.subject, i.index): i for i in loaded.items["test"]}
    dev = loaded.by_subject("dev")
    count = lambda text: len(tokenizer(text)["input_ids"])  # noqa: E731
    assert summary["context_length"] == 512 and summary["items_with_fewer_shots"] == 6
    for row in summary["items"]:
        item = items[(row["subject"], row["index"])]
        kept = build_prompt(item, dev[item.subject], shots=row["shots"])
        one_more = build_prompt(item, dev[item.subject], shots=row["shots"] + 1)
        assert 0 < row["shots"] < 5
        assert count(kept.text) + 1 <= 512 < count(one_more.text) + 1


def test_fewer_shots_where_the_prompt_would_overflow(tmp_path: Path,
                                                     tiny_models: dict[str, Path]) -> None:
    data = long_mmlu(tmp_path / "mmlu")
    summary = run_benchmark_local(BenchRequest(suite="mmlu", data=str(data)),
                                  model_path=tiny_models["llama"])
    assert_budget_kept(summary, data, tiny_models["llama"])
    assert summary["token_counter"] == "tokenizer"


@pytest.mark.e2e
@pytest.mark.parametrize("counter", ["tokenizer", "worker"])
def test_the_budget_through_the_control_plane(tmp_path: Path, tiny_models: dict[str, Path],
                                              served_llama: Any, counter: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry's context length; counts from the checkpoint's tokenizer, or from the
    worker's /worker/tokenize where that tokenizer is not on this machine."""
    if counter == "worker":
        monkeypatch.setattr(budget_module, "load_checkpoint_tokenizer", lambda entry: None)
    data = long_mmlu(tmp_path / "mmlu")
    progress: list[tuple[int, int]] = []
    summary = run_benchmark(BenchRequest(suite="mmlu", data=str(data), batch_size=1),
                            model="tiny-llama", base_url=served_llama.url, api_key=None,
                            on_progress=lambda done, total: progress.append((done, total)))
    assert summary["token_counter"] == counter
    assert_budget_kept(summary, data, tiny_models["llama"])
    assert progress[-1] == (6, 6) and len(progress) > 1
    expected_keys = {"suite", "shots", "fingerprint", "engine", "accuracy", "macro_accuracy",
                     "subjects", "categories", "groups", "items", "split", "model", "data",
                     "limit", "n_items"}
    assert expected_keys <= summary.keys()
    assert (summary["model"], summary["engine"], summary["n_items"]) == ("tiny-llama", "native", 6)
