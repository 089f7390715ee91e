"""The job queue end to end: ``arena serve`` + ``arena worker`` + ``arena jobs-worker`` as real
processes, on the embedded SQLite broker and on a real ``redis-server``.

- the evaluation policy queues benchmark and judge runs when a checkpoint is registered; the
  leaderboard fills in;
- a LoRA fine-tuning job trains, registers its candidate with lineage, the candidate is served
  by the base's worker and answers;
- ``kill -9`` of the job worker mid-training: a new worker resumes from the last checkpoint and
  the candidate is registered once;
- bad requests are refused before anything is queued; a job that fails says why.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.benchmarks.conftest import write_mmlu
from tests.conftest import (
    ADMIN_KEY,
    Proc,
    _control_plane,
    arena_cmd,
    free_port,
    register,
    spawn,
    wait_for,
)
from tests.evaluators.conftest import judge_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
INSTRUCTIONS = [
    {"instruction": "Say hello.", "input": "", "output": "Hello!"},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Name a colour.", "input": "", "output": "Blue."},
    {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
    {"instruction": "用中文问好。", "input": "", "output": "你好！"},
    {"instruction": "Give the opposite.", "input": "hot", "output": "cold"},
    {"instruction": "Count to three.", "input": "", "output": "1, 2, 3"},
    {"instruction": "Capital of France?", "input": "", "output": "Paris."},
]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    import socket

    def up() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    wait_for(up, timeout_s=20, what="redis-server", proc=proc)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


_STARTED: list[Proc] = []


@pytest.fixture(autouse=True)
def _stop_jobs_workers() -> Iterator[None]:
    """Every job worker a test started is stopped when the test ends, whatever happened."""
    yield
    while _STARTED:
        _STARTED.pop().stop()


def start_jobs_worker(tmp_path: Path, control: Proc, name: str = "jobs") -> Proc:
    env = {**control.extra["env"], "ARENA_URL": control.url}
    log = tmp_path / f"{name}.log"
    proc = spawn(arena_cmd("jobs-worker", "--loglevel", "info"), log=log, env=env)
    worker = Proc(proc=proc, log=log, url="")
    _STARTED.append(worker)
    wait_for(lambda: "ready" in worker.log_text(), timeout_s=60, what="jobs-worker ready",
             proc=proc)
    return worker


def wait_job(control: Proc, job_id: int, *, timeout_s: float = 240,
             states: tuple[str, ...] = ("succeeded", "failed", "cancelled"),
             workers: tuple[Proc, ...] = ()) -> dict:
    def ended() -> dict | None:
        job = httpx.get(f"{control.url}/api/jobs/{job_id}").json()
        return job if job["state"] in states else None

    try:
        return wait_for(ended, timeout_s=timeout_s, what=f"job {job_id}")
    except TimeoutError:
        logs = "\n".join(w.log_text()[-3000:] for w in workers)
        job = httpx.get(f"{control.url}/api/jobs/{job_id}").json()
        raise AssertionError(f"job {job_id} did not end: {job}\n{logs}") from None


def _questions(path: Path) -> Path:
    rows = [{"question_id": i, "category": c, "text": t} for i, (c, t) in enumerate([
        ("generic", "How do I stay focused?"), ("writing", "Write a haiku about rain."),
        ("math", "What is 12 times 12?")], 1)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def evaluating_plane(tmp_path, judge_server) -> Iterator[Proc]:  # noqa: F811
    mmlu = write_mmlu(tmp_path / "mmlu")
    yield from _control_plane(
        tmp_path,
        ARENA_EVAL_SUITES=json.dumps({"mmlu": str(mmlu)}), ARENA_EVAL_LIMIT="2",
        ARENA_EVAL_SHOTS="1", ARENA_EVAL_JUDGE_REFERENCE="parent",
        ARENA_EVAL_JUDGE_QUESTIONS=str(_questions(tmp_path / "questions.jsonl")),
        ARENA_EVAL_JUDGE_MAX_TOKENS="48",
        ARENA_JUDGE_BASE_URL=judge_server.url, ARENA_JUDGE_MODEL="test-judge",
        ARENA_JOB_LEASE_S="3")


def test_policy_evaluates_new_checkpoints(tmp_path, tiny_models, evaluating_plane,
                                          start_worker):
    control = evaluating_plane
    url = control.url
    base = str(tiny_models["llama"])
    assert register(control, name="base", source=base, template="llama").status_code == 201
    start_worker("base", extra_args=("--adopt-adapters",))
    jobs_worker = start_jobs_worker(tmp_path, control)
    assert register(control, name="cand", source=base, adapter=str(tiny_models["llama-lora"]),
                    template="llama", parent="base").status_code == 201

    def policy_jobs() -> list[dict] | None:
        rows = httpx.get(f"{url}/api/jobs").json()
        return rows if len(rows) == 3 else None

    rows = wait_for(policy_jobs, timeout_s=30, what="three policy jobs")
    assert sorted((r["checkpoint"], r["kind"]) for r in rows) == [
        ("base", "bench"), ("cand", "bench"), ("cand", "judge")]
    assert all(r["trigger"] == "policy" for r in rows)
    for row in rows:
        job = wait_job(control, row["id"], workers=(jobs_worker,))
        assert job["state"] == "succeeded", (job["error"], jobs_worker.log_text()[-2000:])

    board = httpx.get(f"{url}/api/leaderboard").json()
    assert board["judge_reference"] == "base"
    by_model = {r["model"]: r for r in board["rows"]}
    assert 0.0 <= by_model["base"]["mmlu"] <= 1.0 and 0.0 <= by_model["cand"]["mmlu"] <= 1.0
    assert by_model["cand"]["judge_ratio"] > 0 and by_model["base"]["judge_ratio"] is None
    runs = httpx.get(f"{url}/api/runs").json()
    assert set(runs["benchmarks"]) == {"base", "cand"}
    assert runs["judge_ratios"]["cand"]["n"] == 3
    bench = next(r for r in rows if r["kind"] == "bench")
    for path in (f"/api/jobs/{bench['id']}/subjects.png", "/api/runs/judge.png"):
        png = httpx.get(url + path)
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG"), path
    shown = subprocess.run(arena_cmd("runs", "--url", url), capture_output=True, text=True,
                           env={**os.environ, "COLUMNS": "200"}, timeout=60)
    assert shown.returncode == 0 and "cand" in shown.stdout and "judge vs base" in shown.stdout


def _finetune(url: str, data: Path, name: str, **config) -> httpx.Response:
    body = {"base": "base", "data": str(data), "output_name": name,
            "config": {"max_steps": 24, "batch_size": 4, "learning_rate": 5e-3, "lora_r": 8,
                       "seed": 0, "save_steps": 4, **config}}
    return httpx.post(f"{url}/api/finetune", json=body, headers=AUTH, timeout=60)


@pytest.fixture()
def instructions(tmp_path) -> Path:
    path = tmp_path / "instructions.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in INSTRUCTIONS),
                    encoding="utf-8")
    return path


@pytest.mark.parametrize("broker", ["embedded", "redis"])
def test_lora_finetune_registers_a_served_candidate(broker, tmp_path, tiny_models, request,
                                                    instructions):
    extra = {"ARENA_JOB_LEASE_S": "3"}
    if broker == "redis":
        extra["ARENA_BROKER_URL"] = request.getfixturevalue("redis_url")
    gen = _control_plane(tmp_path, **extra)
    control = next(gen)
    try:
        url = control.url
        assert register(control, name="base", source=str(tiny_models["llama"]),
                        template="vicuna_v1.1").status_code == 201
        jobs_worker = start_jobs_worker(tmp_path, control)
        if broker == "redis":
            response = _finetune(url, instructions, "cand")
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]
        else:  # as a user would: the CLI follows the job with a progress bar until it ends
            submitted = subprocess.run(
                arena_cmd("finetune", "submit", "--base", "base", "--data", str(instructions),
                          "--name", "cand", "--max-steps", "24", "--batch-size", "4",
                          "--lr", "5e-3", "--lora-r", "8", "--seed", "0", "--wait",
                          "--url", url, "--api-key", ADMIN_KEY),
                capture_output=True, text=True, timeout=300,
                env={**os.environ, "COLUMNS": "200"})
            assert submitted.returncode == 0, submitted.stdout + submitted.stderr
            assert "registered cand" in submitted.stdout
            job_id = int(submitted.stdout.split("queued job ")[1].split(":")[0])
        job = wait_job(control, job_id, workers=(jobs_worker,))
        assert job["state"] == "succeeded", (job["error"], jobs_worker.log_text()[-2000:])
        assert job["output_checkpoint"] == "cand" and job["attempts"] == 1
        losses = [m["loss"] for m in httpx.get(f"{url}/api/jobs/{job['id']}/metrics").json()]
        assert len(losses) == 24 and sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
        cand = httpx.get(f"{url}/api/checkpoints/cand").json()
        assert cand["parent"] == "base" and cand["adapter"]
        assert cand["meta"]["job_id"] == job["id"]
        assert cand["meta"]["finetune"]["final_loss"] == pytest.approx(job["result"]["final_loss"])
        shown = subprocess.run(arena_cmd("checkpoints", "show", "cand", "--url", url),
                               capture_output=True, text=True, timeout=60,
                               env={**os.environ, "COLUMNS": "200"})
        assert "base → cand" in shown.stdout and "lora" in shown.stdout
        # the candidate is served (here by a fresh worker; --adopt-adapters is tested apart)
        worker = spawn(arena_cmd("worker", "--controller", url, "--checkpoint", "base",
                                 "--checkpoint", "cand", "--api-key", ADMIN_KEY,
                                 "--port", str(free_port()), "--log-level", "warning"),
                       log=tmp_path / "model-worker.log", env={})
        try:
            def served() -> bool:
                return "cand" in {m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]}

            wait_for(served, timeout_s=120, what="the candidate served", proc=worker)
            chat = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
                "model": "cand", "max_tokens": 4,
                "messages": [{"role": "user", "content": "Say hello."}]})
            assert chat.status_code == 200, chat.text
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
    finally:
        gen.close()


def test_killed_job_worker_resumes_and_registers_once(tmp_path, tiny_models, instructions):
    gen = _control_plane(tmp_path, ARENA_JOB_LEASE_S="2")
    control = next(gen)
    try:
        url = control.url
        assert register(control, name="base", source=str(tiny_models["llama"]),
                        template="vicuna_v1.1").status_code == 201
        first = start_jobs_worker(tmp_path, control, "jobs-1")
        response = _finetune(url, instructions, "cand", max_steps=150, save_steps=10,
                             batch_size=8)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]

        def trained_some() -> bool:
            return len(httpx.get(f"{url}/api/jobs/{job_id}/metrics").json()) >= 25

        wait_for(trained_some, timeout_s=180, what="25 training steps", proc=first.proc)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        steps_before = len(httpx.get(f"{url}/api/jobs/{job_id}/metrics").json())
        assert httpx.get(f"{url}/api/jobs/{job_id}").json()["state"] == "running"

        second = start_jobs_worker(tmp_path, control, "jobs-2")
        job = wait_job(control, job_id, timeout_s=400, workers=(first, second))
        assert job["state"] == "succeeded", (job["error"], second.log_text()[-2000:])
        assert job["attempts"] == 2
        events = [e["message"] for e in httpx.get(f"{url}/api/jobs/{job_id}/events").json()]
        assert any("queued again" in m for m in events), events
        resumed = [m for m in events if m.startswith("resumed from step")]
        assert resumed and int(resumed[0].split()[-1]) >= 10
        assert steps_before < 150
        rows = httpx.get(f"{url}/api/checkpoints").json()
        assert [r["name"] for r in rows if r["meta"].get("job_id") == job_id] == ["cand"]
        assert sum(r["kind"] == "finetune" for r in httpx.get(f"{url}/api/jobs").json()) == 1
        time.sleep(0.5)
    finally:
        gen.close()


def test_bad_finetune_requests_queue_nothing(tmp_path, tiny_models, control_plane,
                                             instructions):
    url = control_plane.url
    assert register(control_plane, name="base", source=str(tiny_models["llama"]),
                    template="vicuna_v1.1").status_code == 201
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"\n',
                   encoding="utf-8")
    cases = [
        ({"base": "nope"}, 404, "nope"),
        ({"data": str(bad)}, 400, "line 2"),
        ({"data": str(tmp_path / "missing.jsonl")}, 400, "missing.jsonl"),
        ({"template": "no-such-template"}, 400, "no-such-template"),
        ({"output_name": "base"}, 409, "already registered"),
        ({"config": {"method": "dora"}}, 400, "method"),
    ]
    for change, status, words in cases:
        body = {"base": "base", "data": str(instructions), "output_name": "cand",
                "config": {"max_steps": 2}, **change}
        response = httpx.post(f"{url}/api/finetune", json=body, headers=AUTH, timeout=60)
        assert response.status_code == status, (change, response.text)
        assert words in response.json()["error"]["message"], (change, response.text)
    assert httpx.post(f"{url}/api/finetune", json={"base": "base", "data": str(instructions),
                                                   "output_name": "x"}).status_code == 401
    assert httpx.get(f"{url}/api/jobs").json() == []
    assert [r["name"] for r in httpx.get(f"{url}/api/checkpoints").json()] == ["base"]


def test_failed_job_says_why_and_registers_nothing(tmp_path, tiny_models, control_plane,
                                                   instructions):
    url = control_plane.url
    assert register(control_plane, name="base", source=str(tiny_models["llama"]),
                    template="vicuna_v1.1").status_code == 201
    response = _finetune(url, instructions, "cand", max_steps=2)
    assert response.status_code == 202, response.text
    other = _finetune(url, instructions, "other", max_steps=2).json()["id"]
    cancelled = subprocess.run(arena_cmd("jobs", "cancel", str(other), "--url", url,
                                         "--api-key", ADMIN_KEY),
                               capture_output=True, text=True, timeout=60)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout, cancelled.stderr
    instructions.write_text('{"instruction": "only"}\n', encoding="utf-8")  # broken meanwhile
    jobs_worker = start_jobs_worker(tmp_path, control_plane)
    job = wait_job(control_plane, response.json()["id"], workers=(jobs_worker,))
    assert job["state"] == "failed" and "line 1" in job["error"], job
    assert [r["name"] for r in httpx.get(f"{url}/api/checkpoints").json()] == ["base"]
    # cancelling a finished job is refused; `arena jobs logs` shows the failure
    assert httpx.post(f"{url}/api/jobs/{job['id']}/cancel", headers=AUTH).status_code == 409
    logs = subprocess.run(arena_cmd("jobs", "logs", str(job["id"]), "--url", url),
                          capture_output=True, text=True, timeout=60)
    assert "failed" in logs.stdout and "line 1" in logs.stdout
    env = {**os.environ, "COLUMNS": "200"}
    listed = subprocess.run(arena_cmd("jobs", "list", "--url", url), capture_output=True,
                            text=True, timeout=60, env=env).stdout
    assert "failed" in listed and "cancelled" in listed
    shown = subprocess.run(arena_cmd("jobs", "show", str(job["id"]), "--url", url),
                           capture_output=True, text=True, timeout=60, env=env).stdout
    assert "line 1" in shown and "output_name" in shown
    assert httpx.get(f"{url}/api/jobs/{other}").json()["state"] == "cancelled"
