"""Vote ingestion through HTTP on SQLite: sustained votes/s with 16 concurrent clients.

Starts `arena serve` (SQLite, WAL) and two `arena worker`s on tiny checkpoints, prepares battles
(each with one completed turn, as votes need), then 16 clients vote on them as fast as the
server acknowledges. Afterwards the control plane is killed with SIGKILL, restarted on the same
database, and the export is checked: every acknowledged vote must be there, exactly once.

    .venv/bin/python scripts/bench_votes.py [--battles 1600] [--clients 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
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


def wait(predicate, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(what)


def start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "arena.cli.main", *args], env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


async def prepare(url: str, count: int, concurrency: int = 8) -> list[str]:
    """Battles with one completed turn (1 token per side: the cost here is not the model's)."""
    ids: list[str] = []
    slots = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def one(i: int) -> None:
            async with slots:
                battle = (await client.post("/api/battles", json={
                    "mode": "anonymous", "session_id": f"prep-{i % 64}"})).json()
                async with client.stream("POST", f"/api/battles/{battle['id']}/messages",
                                         json={"content": f"Question {i}?", "max_tokens": 1}) as r:
                    async for _ in r.aiter_lines():
                        pass
                ids.append(battle["id"])

        await asyncio.gather(*(one(i) for i in range(count)))
    return ids


async def vote_all(url: str, ids: list[str], clients: int) -> tuple[list[str], list[float], float]:
    acknowledged: list[str] = []
    latencies: list[float] = []
    queue: asyncio.Queue[str] = asyncio.Queue()
    for battle_id in ids:
        queue.put_nowait(battle_id)
    winners = ("a", "b", "tie", "bothbad")
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def worker(n: int) -> None:
            while not queue.empty():
                battle_id = queue.get_nowait()
                began = time.perf_counter()
                response = await client.post(f"/api/battles/{battle_id}/vote",
                                             json={"winner": winners[n % 4]})
                latencies.append(time.perf_counter() - began)
                if response.status_code == 200:
                    acknowledged.append(battle_id)
                else:
                    print(f"vote refused: {response.status_code} {response.text[:200]}")

        began = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(clients)))
        elapsed = time.perf_counter() - began
    return acknowledged, latencies, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--battles", type=int, default=1600)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()

    from model_workers.localmodels import build_tiny_checkpoint, train_tokenizer

    root = Path(tempfile.mkdtemp(prefix="bench-votes-"))
    tokenizer = train_tokenizer(root / "tokenizer")
    llama = build_tiny_checkpoint("llama", root / "llama", tokenizer_dir=tokenizer)
    opt = build_tiny_checkpoint("opt", root / "opt", tokenizer_dir=tokenizer)
    env = {**os.environ, "ARENA_DATA_DIR": str(root / "data"), "ARENA_ADMIN_KEY": ADMIN,
           "ARENA_API_KEY": ADMIN, "OMP_NUM_THREADS": "1",
           "ARENA_BATTLES_PER_MINUTE": "1000000", "ARENA_VOTES_PER_MINUTE": "1000000"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve_args = ["serve", "--port", str(port), "--log-level", "warning"]
    procs = {"serve": start(serve_args, env, root / "serve.log")}
    try:
        wait(lambda: httpx.get(url + "/health").status_code == 200, "control plane")
        for name, path, template in (("tiny-llama", llama, None), ("tiny-opt", opt, "vicuna_v1.1")):
            httpx.post(url + "/api/checkpoints", headers={"Authorization": f"Bearer {ADMIN}"},
                       json={"name": name, "source": str(path), "template": template},
                       timeout=60).raise_for_status()
            procs[name] = start(["worker", "--controller", url, "--checkpoint", name,
                                 "--log-level", "warning"], env, root / f"{name}.log")
        wait(lambda: len(httpx.get(url + "/v1/models").json()["data"]) == 2, "workers")

        began = time.perf_counter()
        ids = asyncio.run(prepare(url, args.battles))
        print(f"prepared {len(ids)} battles with one turn each in {time.perf_counter() - began:.1f} s")

        acknowledged, latencies, elapsed = asyncio.run(vote_all(url, ids, args.clients))
        ms = sorted(x * 1000 for x in latencies)
        print(f"{len(acknowledged)} votes acknowledged in {elapsed:.2f} s by {args.clients} clients: "
              f"{len(acknowledged) / elapsed:.0f} votes/s; latency p50 "
              f"{statistics.median(ms):.1f} ms, p95 {ms[int(0.95 * len(ms)) - 1]:.1f} ms")

        procs["serve"].send_signal(signal.SIGKILL)  # no graceful shutdown: only commits count
        procs["serve"].wait()
        procs["serve"] = start(serve_args, env, root / "serve-2.log")
        wait(lambda: httpx.get(url + "/health").status_code == 200, "control plane restart")
        exported = httpx.get(url + "/api/votes/export", timeout=120,
                             headers={"Authorization": f"Bearer {ADMIN}"}).json()
        stored = [r.get("battle_id") or r.get("question_id") for r in exported]
        missing = set(acknowledged) - set(stored)
        print(f"after SIGKILL + restart: {len(exported)} votes exported, "
              f"{len(missing)} acknowledged votes missing, "
              f"{len(stored) - len(set(stored))} duplicates")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(15)


if __name__ == "__main__":
    main()
