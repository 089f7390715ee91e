"""Gateway overhead on loopback: the same requests direct to a worker and through `/v1`.

Starts `arena serve` and one `arena worker` on a tiny Llama checkpoint (built locally), then
measures, interleaving the two paths so that drift hits both alike:
  * non-streamed chat completions: p50/p95 latency;
  * streamed chat completions: p50/p95 time to first token (first content delta);
at concurrency 1 and 16, and prints the difference (gateway − direct).

    .venv/bin/python scripts/bench_gateway.py [--requests 400] [--max-tokens 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ADMIN = "bench-admin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


async def one(client: httpx.AsyncClient, url: str, body: dict, stream: bool) -> float:
    start = time.perf_counter()
    if not stream:
        response = await client.post(url, json=body)
        response.raise_for_status()
        return time.perf_counter() - start
    async with client.stream("POST", url, json={**body, "stream": True}) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                delta = json.loads(line[6:])["choices"][0]["delta"]
                if delta.get("content"):
                    return time.perf_counter() - start
    raise RuntimeError("stream ended without content")


async def measure(urls: dict[str, str], body: dict, *, stream: bool, concurrency: int,
                  requests: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in urls}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        for name, url in urls.items():  # warm-up: connections, caches
            for _ in range(5):
                await one(client, url, body, stream)
        for _ in range(requests // concurrency):
            for name, url in urls.items():
                batch = await asyncio.gather(
                    *(one(client, url, body, stream) for _ in range(concurrency)))
                times[name].extend(batch)
    return times


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="per path and setting")
    parser.add_argument("--max-tokens", type=int, default=4)
    args = parser.parse_args()

    from model_workers.localmodels import build_tiny_checkpoint

    root = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    model = build_tiny_checkpoint("llama", root / "tiny-llama")
    env = {**os.environ, "ARENA_DATA_DIR": str(root / "data"), "ARENA_ADMIN_KEY": ADMIN,
           "ARENA_API_KEY": ADMIN, "OMP_NUM_THREADS": "1"}
    cp_port, worker_port = free_port(), free_port()
    control = f"http://127.0.0.1:{cp_port}"
    procs = [subprocess.Popen([sys.executable, "-m", "arena.cli.main", "serve", "--port",
                               str(cp_port), "--log-level", "warning"], env=env)]
    try:
        wait_http(control + "/health")
        httpx.post(control + "/api/checkpoints", headers={"Authorization": f"Bearer {ADMIN}"},
                   json={"name": "tiny-llama", "source": str(model)}, timeout=60).raise_for_status()
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "arena.cli.main", "worker", "--controller", control,
             "--checkpoint", "tiny-llama", "--port", str(worker_port), "--log-level", "warning"],
            env=env))
        wait_http(f"http://127.0.0.1:{worker_port}/health")
        deadline = time.monotonic() + 60
        while "tiny-llama" not in str(httpx.get(control + "/v1/models").json()):
            if time.monotonic() > deadline:
                raise TimeoutError("worker did not register")
            time.sleep(0.2)
        urls = {"direct": f"http://127.0.0.1:{worker_port}/v1/chat/completions",
                "gateway": control + "/v1/chat/completions"}
        body = {"model": "tiny-llama", "max_tokens": args.max_tokens, "temperature": 0,
                "messages": [{"role": "user", "content": "Hello there, how are you?"}]}
        print(f"{'setting':<28}{'direct p50':>12}{'gateway p50':>13}{'added p50':>11}"
              f"{'direct p95':>12}{'gateway p95':>13}{'added p95':>11}   (ms)")
        for stream in (False, True):
            for concurrency in (1, 16):
                t = asyncio.run(measure(urls, body, stream=stream, concurrency=concurrency,
                                        requests=args.requests))
                d50, g50 = pct(t["direct"], 50), pct(t["gateway"], 50)
                d95, g95 = pct(t["direct"], 95), pct(t["gateway"], 95)
                label = f"{'stream TTFT' if stream else 'non-streamed'}, concurrency {concurrency}"
                print(f"{label:<28}{d50:>12.2f}{g50:>13.2f}{g50 - d50:>11.2f}"
                      f"{d95:>12.2f}{g95:>13.2f}{g95 - d95:>11.2f}")
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(15)


if __name__ == "__main__":
    main()
