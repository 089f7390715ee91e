"""``arena judge`` as a user runs it: a subprocess against the judge test server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.e2e

# The test judge scores an answer 1 + len // 25, so the golden numbers are:
#   knowledge: A 7 + 5, B 3 + 5 → ratio 150.0, one win and one tie
#   writing:   A 3,     B 5     → ratio 60.0, one loss (the limerick's judgment is garbled)
#   overall:   A 15,    B 13    → ratio 115.4
QUESTIONS = [
    {"question_id": "q1", "category": "knowledge", "text": "Why is the sky blue?"},
    {"question_id": "q2", "category": "knowledge", "text": "What makes rain fall?"},
    {"question_id": "q3", "category": "writing", "text": "Write a haiku about frost."},
    {"question_id": "q4", "category": "writing", "text": "Write a limerick about GARBLE."},
]
LENGTHS_A = {"q1": 150, "q2": 100, "q3": 50, "q4": 100}
LENGTHS_B = {"q1": 50, "q2": 100, "q3": 100, "q4": 50}


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _arena(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ARENA_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "arena.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    return {
        "questions": _jsonl(tmp_path / "questions.jsonl", QUESTIONS),
        # side A names its model in the lines; side B's name comes from the file name
        "a": _jsonl(tmp_path / "answers_a.jsonl",
                    [{"question_id": q, "model_id": "alpaca-7b", "text": "a" * n}
                     for q, n in LENGTHS_A.items()]),
        "b": _jsonl(tmp_path / "vicuna-7b.jsonl",
                    [{"question_id": q, "text": "b" * n} for q, n in LENGTHS_B.items()]),
    }


def test_ratio_summary_json_and_cached_rerun(judge_server, files, tmp_path: Path) -> None:
    judge_server.state.garble = {"GARBLE"}
    output = tmp_path / "out" / "ratio.json"
    args = ("judge", "ratio", "--questions", str(files["questions"]),
            "--answers-a", str(files["a"]), "--answers-b", str(files["b"]),
            "--judge-model", "judge-1", "--judge-base-url", judge_server.url,
            "--judge-retries", "0", "--output", str(output))
    first = _arena(*args, data_dir=tmp_path / "data")
    assert first.returncode == 0, first.stderr
    assert judge_server.state.calls == 4
    assert "score ratio alpaca-7b / vicuna-7b" in first.stdout
    assert "115.4%" in first.stdout and "150.0%" in first.stdout and "60.0%" in first.stdout
    assert "unparseable judgments: 1" in first.stdout
    assert (tmp_path / "data" / "judgments.db").exists()  # the default store

    report = json.loads(output.read_text())
    assert report["models"] == ["alpaca-7b", "vicuna-7b"]
    result = report["result"]
    assert result["overall"]["ratio"] == pytest.approx(100 * 15 / 13)
    assert (result["overall"]["wins"], result["overall"]["ties"],
            result["overall"]["losses"]) == (1, 1, 1)
    assert result["by_category"]["knowledge"]["ratio"] == pytest.approx(150.0)
    assert result["by_category"]["knowledge"]["beat_rate"] == 1.0
    assert result["by_category"]["writing"]["ratio"] == pytest.approx(60.0)
    assert result["by_category"]["writing"]["n"] == 1
    assert result["unparseable"] == 1
    ci_low, ci_high = result["overall"]["ci_low"], result["overall"]["ci_high"]
    assert ci_low <= result["overall"]["ratio"] <= ci_high

    judge_server.state.reset_counts()
    second = _arena(*args, data_dir=tmp_path / "data")
    assert second.returncode == 0, second.stderr
    assert judge_server.state.calls == 0
    assert json.loads(output.read_text())["result"] == result


def test_pairwise_and_single(judge_server, files, tmp_path: Path) -> None:
    common = ("--questions", str(files["questions"]), "--answers-a", str(files["a"]),
              "--judge-model", "judge-1", "--judge-base-url", judge_server.url,
              "--store", str(tmp_path / "j.db"))
    pairwise = _arena("judge", "pairwise", *common, "--answers-b", str(files["b"]),
                      "--output", str(tmp_path / "p.json"), data_dir=tmp_path / "data")
    assert pairwise.returncode == 0, pairwise.stderr
    overall = json.loads((tmp_path / "p.json").read_text())["result"]["overall"]
    # longer answer wins: A on q1 and q4, B on q3, q2 a tie
    assert (overall["wins"], overall["ties"], overall["losses"]) == (2, 1, 1)
    assert overall["adjusted_win_rate"] == pytest.approx(2.5 / 4)
    assert "62.5%" in pairwise.stdout

    single = _arena("judge", "single", *common, "--output", str(tmp_path / "s.json"),
                    data_dir=tmp_path / "data")
    assert single.returncode == 0, single.stderr
    result = json.loads((tmp_path / "s.json").read_text())["result"]
    assert result["by_category"]["alpaca-7b"] == {"knowledge": 6.0, "writing": 4.0}
    assert "alpaca-7b" in single.stdout and "6.00" in single.stdout


def test_bad_options_and_unreachable_judge(files, tmp_path: Path) -> None:
    base = ("judge", "ratio", "--questions", str(files["questions"]), "--judge-model", "j")
    neither = _arena(*base, "--answers-a", str(files["a"]), data_dir=tmp_path)
    assert neither.returncode == 2 and "--model-b" in neither.stderr
    both = _arena(*base, "--answers-a", str(files["a"]), "--model-a", "m",
                  "--answers-b", str(files["b"]), data_dir=tmp_path)
    assert both.returncode == 2 and "--answers-a" in both.stderr
    unreachable = _arena(*base, "--answers-a", str(files["a"]), "--answers-b", str(files["b"]),
                         "--judge-base-url", f"http://127.0.0.1:{free_port()}/v1",
                         "--judge-retries", "0", data_dir=tmp_path)
    assert unreachable.returncode == 1
    assert "the judge at http://127.0.0.1" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


def test_mt_bench_per_turn_with_the_judge_from_settings(judge_server, tmp_path: Path,
                                                        monkeypatch) -> None:
    from tests.evaluators.test_jobs import mt_bench_answers
    from tests.evaluators.test_multiturn import LENGTHS_A, LENGTHS_B, MT_BENCH

    questions = _jsonl(tmp_path / "question.jsonl", MT_BENCH)
    a = mt_bench_answers(tmp_path / "a.jsonl", "model-a", LENGTHS_A)
    b = mt_bench_answers(tmp_path / "b.jsonl", "model-b", LENGTHS_B)
    monkeypatch.setenv("ARENA_JUDGE_BASE_URL", judge_server.url)  # the subprocess's Settings
    monkeypatch.setenv("ARENA_JUDGE_MODEL", "env-judge")
    pairwise = _arena("judge", "pairwise", "--questions", str(questions), "--answers-a", a,
                      "--answers-b", b, "--output", str(tmp_path / "p.json"),
                      data_dir=tmp_path / "data")
    single = _arena("judge", "single", "--questions", str(questions), "--answers-a", a,
                    "--output", str(tmp_path / "s.json"), data_dir=tmp_path / "data")
    helped = _arena("judge", "ratio", "--help", data_dir=tmp_path / "data")
    assert pairwise.returncode == 0, pairwise.stderr
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["judge_model"] == "env-judge"
    turn_2 = report["result"]["by_turn"]["2"]
    assert (turn_2["wins"], turn_2["ties"], turn_2["losses"]) == (2, 0, 1)
    assert "turn 2" in pairwise.stdout and "overall" in pairwise.stdout

    assert single.returncode == 0, single.stderr
    by_turn = json.loads((tmp_path / "s.json").read_text())["result"]["by_turn"]["model-a"]
    assert by_turn == {"1": pytest.approx(23 / 4), "2": pytest.approx(16 / 3)}
    assert "turn 1" in single.stdout and "5.75" in single.stdout and "5.33" in single.stdout
    assert "ARENA_JUDGE_MODEL" in helped.stdout and "ARENA_JUDGE_BASE_URL" in helped.stdout
