"""Gateway overhead on loopback: the same requests direct to a worker and through `/v1`.

Starts `arena serve` and one `arena worker` on a tiny Llama checkpoint (built locally), then
measures, interleaving the two paths so that drift hits both alike:
  * non-streamed chat completions: p50/p95 latency;
  * streamed chat completions: p50/p95 time to first token (first content delta);
at concurrency 1 and 16, and prints the difference (gateway − direct). In the same run, the
same measurement of FastChat's `openai_api_server` in front of its `model_worker` (the
reference; see scripts/fastchat_reference.py and scripts/README.md) fills the last columns.

    .venv/bin/python scripts/bench_gateway.py [--requests 400] [--max-tokens 4] \\
        [--fastchat-python /work/fastchat-venv/bin/python | --no-fastchat]
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
DEFAULT_FASTCHAT_PYTHON = Path("/work/fastchat-venv/bin/python")
BODY = {"temperature": 0, "messages": [{"role": "user", "content": "Hello there, how are you?"}]}
SETTINGS = ((False, 1), (False, 16), (True, 1), (True, 16))  # (stream, concurrency)
Figures = dict[tuple[bool, int], dict[str, list[float]]]  # setting -> path -> seconds


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
    first = None
    async with client.stream("POST", url, json={**body, "stream": True}) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if first is None and line.startswith("data: ") and line != "data: [DONE]":
                delta = json.loads(line[6:])["choices"][0]["delta"]
                if delta.get("content"):
                    first = time.perf_counter() - start
    # read to the end: a stream dropped early leaves its server finishing (or cancelling) the
    # generation while the other path's batch is timed, and costs a new connection next time
    if first is None:
        raise RuntimeError("stream ended without content")
    return first


async def measure(urls: dict[str, str], body: dict, *, stream: bool, concurrency: int,
                  requests: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in urls}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        for url in urls.values():  # warm-up: connections, caches
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


def setting_label(stream: bool, concurrency: int) -> str:
    return f"{'stream TTFT' if stream else 'non-streamed'}, concurrency {concurrency}"


def run_ours(model: Path, *, requests: int, max_tokens: int) -> Figures:
    """Start `arena serve` + one `arena worker` on ``model``; measure every setting."""
    root = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
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
        body = {**BODY, "model": "tiny-llama", "max_tokens": max_tokens}
        return {(stream, concurrency): asyncio.run(measure(
                    urls, body, stream=stream, concurrency=concurrency, requests=requests))
                for stream, concurrency in SETTINGS}
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(15)


def print_table(ours: Figures, fastchat: Figures | None) -> None:
    """One row per setting: ours (direct, gateway, added) beside FastChat's added latency."""
    print(f"{'':<28}{'--------------- Alpaca Arena ---------------':>48}"
          f"{'----------- FastChat -----------':>36}")
    print(f"{'setting (ms)':<28}{'direct p50':>12}{'gateway p50':>13}{'added p50':>11}"
          f"{'added p95':>12}{'direct p50':>12}{'added p50':>11}{'added p95':>13}")
    for setting in SETTINGS:
        t = ours[setting]
        d50, g50 = pct(t["direct"], 50), pct(t["gateway"], 50)
        row = (f"{setting_label(*setting):<28}{d50:>12.2f}{g50:>13.2f}{g50 - d50:>11.2f}"
               f"{pct(t['gateway'], 95) - pct(t['direct'], 95):>12.2f}")
        if fastchat is None:
            row += f"{'-':>12}{'-':>11}{'-':>13}"
        else:
            f = fastchat[setting]
            f50 = pct(f["direct"], 50)
            row += (f"{f50:>12.2f}{pct(f['gateway'], 50) - f50:>11.2f}"
                    f"{pct(f['gateway'], 95) - pct(f['direct'], 95):>13.2f}")
        print(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="per path and setting")
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--fastchat-python", type=Path, help="python of FastChat's virtualenv "
                        f"(default: {DEFAULT_FASTCHAT_PYTHON} if it exists)")
    parser.add_argument("--no-fastchat", action="store_true", help="skip the reference")
    args = parser.parse_args()
    fastchat_python = args.fastchat_python
    if fastchat_python is not None and not fastchat_python.exists():
        parser.error(f"--fastchat-python: no such file {fastchat_python}")
    if fastchat_python is None and DEFAULT_FASTCHAT_PYTHON.exists():
        fastchat_python = DEFAULT_FASTCHAT_PYTHON
    if fastchat_python is None and not args.no_fastchat:
        print(f"note: no FastChat at {DEFAULT_FASTCHAT_PYTHON} (scripts/README.md sets one "
              "up); measuring ours only", file=sys.stderr)

    from model_workers.localmodels import build_tiny_checkpoint

    model = build_tiny_checkpoint("llama", Path(tempfile.mkdtemp()) / "tiny-llama")
    ours = run_ours(model, requests=args.requests, max_tokens=args.max_tokens)
    fastchat = None
    if fastchat_python is not None and not args.no_fastchat:
        from fastchat_reference import run_fastchat

        fastchat = run_fastchat(str(fastchat_python), model, requests=args.requests,
                                max_tokens=args.max_tokens, body=BODY)
    print(f"{args.requests} requests per path and setting, max_tokens {args.max_tokens}, "
          "loopback, one worker; added = gateway − direct")
    print_table(ours, fastchat)


if __name__ == "__main__":
    main()
