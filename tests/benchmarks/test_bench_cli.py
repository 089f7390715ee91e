"""``arena bench``: run in a subprocess the way users do, and compare with the engine called
directly on the same tiny checkpoint and sample data."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks.engine import BenchmarkResults, ceval_submission, score_items
from benchmarks.loaders import load_benchmark
from benchmarks.scorers import LocalScorer
from tests.conftest import register

Sample = Callable[[str], Path]
ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}  # no wrapped error boxes
    return subprocess.run([sys.executable, "-m", "arena.cli.main", "bench", *args], cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=300)


def direct(data_dir: Path, suite: str, split: str, checkpoint: Path, *, shots: int,
           limit: int | None = None, prompt_format: str = "official") -> BenchmarkResults:
    data = load_benchmark(data_dir, suite, splits=["dev", split])
    items = [i for s in data.by_subject(split).values() for i in s[:limit]]
    return asyncio.run(score_items(items, scorer=LocalScorer(checkpoint), dev=data.items["dev"],
                                   shots=shots, fingerprint=data.fingerprint,
                                   prompt_format=prompt_format))


def assert_same(stored: dict[str, Any], want: BenchmarkResults) -> None:
    expected = want.to_dict()
    for key in ("suite", "shots", "fingerprint", "accuracy", "macro_accuracy", "correct", "total",
                "subjects", "categories", "groups"):
        assert stored[key] == expected[key], key
    assert stored["n_items"] == len(want.items) == len(stored["items"])
    for got, exp in zip(stored["items"], expected["items"], strict=True):
        assert (got["subject"], got["id"], got["prediction"], got["shots"]) == \
            (exp["subject"], exp["id"], exp["prediction"], exp["shots"])
        assert got["logprobs"] == pytest.approx(exp["logprobs"], abs=1e-4)


def test_run_matches_the_engine_and_show_prints_it(sample: Sample, tiny_models: dict[str, Path],
                                                   tmp_path: Path) -> None:
    data, output = sample("mmlu"), tmp_path / "mmlu.json"
    done = bench("run", "--suite", "mmlu", "--data", str(data), "--model-path",
                 str(tiny_models["llama"]), "--shots", "2", "--output", str(output))
    assert done.returncode == 0, done.stderr
    stored = json.loads(output.read_text(encoding="utf-8"))
    want = direct(data, "mmlu", "test", tiny_models["llama"], shots=2)
    assert_same(stored, want)
    assert (stored["split"], stored["n_items"], stored["shots"]) == ("test", 6, 2)
    assert "6/6" in done.stderr  # the progress bar counted every item
    accuracy = f"{100 * want.overall.value:.2f}%" if want.overall.value is not None else "n/a"
    assert accuracy in done.stdout and want.fingerprint in done.stdout

    shown = bench("show", str(output))
    assert shown.returncode == 0, shown.stderr
    for text in ("STEM", "other", "overall (micro)", "macro over subjects", accuracy,
                 "items 6, shots 2", want.fingerprint):
        assert text in shown.stdout


def test_ceval_defaults_to_val_and_writes_a_test_submission(
        sample: Sample, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    data, model = sample("ceval"), str(tiny_models["llama"])
    output = tmp_path / "val.json"
    done = bench("run", "--suite", "ceval", "--data", str(data), "--model-path", model,
                 "--shots", "1", "--limit", "2", "--output", str(output))
    assert done.returncode == 0, done.stderr
    stored = json.loads(output.read_text(encoding="utf-8"))
    assert stored["split"] == "val" and stored["n_items"] == 4  # 2 subjects × --limit 2
    assert_same(stored, direct(data, "ceval", "val", tiny_models["llama"], shots=1, limit=2))

    submission = tmp_path / "submission.json"
    done = bench("run", "--suite", "ceval", "--data", str(data), "--model-path", model,
                 "--split", "test", "--submission", str(submission))
    assert done.returncode == 0, done.stderr
    assert "accuracy is not computed" in done.stdout
    want = direct(data, "ceval", "test", tiny_models["llama"], shots=5)
    assert json.loads(submission.read_text(encoding="utf-8")) == ceval_submission(want)


def test_lm_eval_engine(sample: Sample, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    data, output = sample("cmmlu"), tmp_path / "cmmlu.json"
    done = bench("run", "--suite", "cmmlu", "--data", str(data), "--model-path",
                 str(tiny_models["llama"]), "--shots", "1", "--engine", "lm-eval",
                 "--output", str(output))
    assert done.returncode == 0, done.stderr
    stored = json.loads(output.read_text(encoding="utf-8"))
    assert (stored["engine"], stored["prompt_format"]) == ("lm-eval", "lm-eval")
    assert "engine lm-eval" in done.stdout and "6/6" in done.stderr
    want = direct(data, "cmmlu", "test", tiny_models["llama"], shots=1, prompt_format="lm-eval")
    assert [r["prediction"] for r in stored["items"]] == [r.prediction for r in want.items]


@pytest.mark.parametrize(("args", "message"), [
    (("--subjects", "anatomy,anatomie"), "Invalid value for --subjects: MMLU has no subject "
                                         "'anatomie'; did you mean anatomy?"),
    (("--suite", "mmlx"), "Invalid value for --suite: unknown benchmark suite 'mmlx'"),
    (("--data", "/no/such/folder"), "Invalid value for --data: /no/such/folder does not exist"),
    (("--submission", "x.json"), "Invalid value for --submission: only for --suite ceval"),
    (("--engine", "vllm"), "Invalid value for --engine: unknown engine 'vllm' (known: native, "
                           "lm-eval)"),
])
def test_bad_options_name_the_option(sample: Sample, tmp_path: Path, args: tuple[str, ...],
                                     message: str) -> None:
    base = {"--suite": "mmlu", "--data": str(sample("mmlu")), "--model-path": str(tmp_path)}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    done = bench("run", *[x for pair in base.items() for x in pair])
    assert done.returncode == 2
    assert message in " ".join(done.stderr.replace("│", " ").split())


@pytest.mark.e2e
def test_model_name_scores_through_the_control_plane(
        sample: Sample, tiny_models: dict[str, Path], tmp_path: Path, control_plane: Any,
        start_worker: Any) -> None:
    assert register(control_plane, name="tiny-llama",
                    source=str(tiny_models["llama"])).status_code == 201
    start_worker("tiny-llama")
    data, output = sample("mmlu"), tmp_path / "remote.json"
    done = bench("run", "--suite", "mmlu", "--data", str(data), "--model", "tiny-llama",
                 "--shots", "2", "--output", str(output), env={"ARENA_URL": control_plane.url})
    assert done.returncode == 0, done.stderr
    stored = json.loads(output.read_text(encoding="utf-8"))
    assert stored["model"] == "tiny-llama"
    assert_same(stored, direct(data, "mmlu", "test", tiny_models["llama"], shots=2))
