"""``arena judge ratio --model-a/--model-b``: answers from registered checkpoints through the real
control plane's gateway, judged by the judge test server and then by a tiny model behind the
same gateway."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from evaluators.questions import demo_questions
from tests.conftest import register

pytestmark = pytest.mark.e2e


def _arena(*args: str, url: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ARENA_URL": url, "ARENA_DATA_DIR": str(data_dir), "COLUMNS": "200",
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "arena.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _cache_ids(path: Path) -> list[str]:
    return [json.loads(line)["question_id"]
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_ratio_of_registered_checkpoints_through_the_gateway(
        judge_server: Any, control_plane: Any, start_worker: Any,
        tiny_models: dict[str, Path], tmp_path: Path) -> None:
    for name, arch in (("tiny-llama", "llama"), ("tiny-opt", "opt")):
        response = register(control_plane, name=name, source=str(tiny_models[arch]),
                            template="vicuna_v1.1")
        assert response.status_code == 201, response.text
        start_worker(name)

    questions = [q.id for q in demo_questions()]
    data_dir = tmp_path / "cli-data"
    output = tmp_path / "ratio.json"
    args = ("judge", "ratio", "--questions", "demo", "--model-a", "tiny-llama",
            "--model-b", "tiny-opt", "--max-tokens", "8", "--judge-retries", "0",
            "--output", str(output))
    judged = (*args, "--judge-model", "judge-1", "--judge-base-url", judge_server.url)

    first = _arena(*judged, url=control_plane.url, data_dir=data_dir)
    assert first.returncode == 0, first.stderr
    report = json.loads(output.read_text(encoding="utf-8"))
    assert report["kind"] == "ratio"
    assert report["models"] == ["tiny-llama", "tiny-opt"]
    assert report["questions"] == len(questions)
    result = report["result"]
    assert result["missing"] == 0
    assert result["unparseable"] == 0  # the test judge always answers in the contract
    assert result["overall"]["n"] == len(questions)
    assert report["judge_calls"] == judge_server.state.calls == len(questions)
    assert "score ratio tiny-llama / tiny-opt" in first.stdout

    store = data_dir / "judgments.db"
    assert store.exists()
    caches = {name: store.parent / f"answers-{name}.jsonl" for name in ("tiny-llama", "tiny-opt")}
    before = {}
    for name, cache in caches.items():
        assert cache.exists(), name
        ids = _cache_ids(cache)
        assert sorted(ids) == sorted(questions), name  # one answer per demo question
        before[name] = cache.read_text(encoding="utf-8")

    judge_server.state.reset_counts()
    second = _arena(*judged, url=control_plane.url, data_dir=data_dir)
    assert second.returncode == 0, second.stderr
    assert judge_server.state.calls == 0
    rerun = json.loads(output.read_text(encoding="utf-8"))
    assert rerun["judge_calls"] == 0
    assert rerun["result"] == result
    for name, cache in caches.items():
        assert cache.read_text(encoding="utf-8") == before[name], name  # no new answers

    # the judge is a tiny random model behind our own gateway. Its context is 512 tokens and
    # every ratio prompt over the demo questions is longer (about 600), so the gateway answers
    # 400 and the run stops with a clear error rather than a traceback
    own_store = tmp_path / "own" / "judgments.db"
    own = ("--judge-model", "tiny-llama", "--judge-base-url", f"{control_plane.url}/v1",
           "--store", str(own_store))
    too_long = _arena(*args, *own, url=control_plane.url, data_dir=data_dir)
    assert too_long.returncode == 1
    assert "maximum context length is 512 tokens" in too_long.stderr
    assert "Traceback" not in too_long.stderr

    # single-answer prompts fit (about 340-390 tokens): the run completes, the tiny judge writes
    # gibberish, and most judgments are counted as unparseable
    single_out = tmp_path / "single.json"
    single = _arena("judge", "single", "--questions", "demo", "--model-a", "tiny-llama",
                    "--max-tokens", "8", "--judge-retries", "0", "--output", str(single_out),
                    *own, url=control_plane.url, data_dir=data_dir)
    assert single.returncode == 0, single.stderr
    single_report = json.loads(single_out.read_text(encoding="utf-8"))
    assert single_report["judge_model"] == "tiny-llama"
    assert single_report["judge_calls"] == len(questions)
    unparseable = single_report["result"]["unparseable"]["tiny-llama"]
    assert unparseable > len(questions) // 2
    assert f"unparseable judgments: {unparseable}" in single.stdout
