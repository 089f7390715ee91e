"""Shared fixtures: tiny checkpoints built once, and real servers started on loopback."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

ADMIN_KEY = "test-admin-key"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, *, timeout_s: float, what: str, proc: subprocess.Popen | None = None):
    """Poll ``predicate`` until it returns a truthy value; fail with the process log if it died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        try:
            value = predicate()
            if value:
                return value
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")


@dataclass
class Proc:
    """A server process started by a test, with its log file."""

    proc: subprocess.Popen
    log: Path
    url: str
    extra: dict = field(default_factory=dict)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class BackgroundServer:
    """Uvicorn on a free loopback port in a thread with its own event loop."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # else ~40 ms a call
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(self.server.serve(sockets=[self.sock]),),
            daemon=True)

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the worker did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def call(self, coro: Any) -> Any:
        """Run ``coro`` on the server's loop (where the backend lives)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)


def arena_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "arena.cli.main", *args]


def spawn(cmd: list[str], *, log: Path, env: dict[str, str]) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = log.open("w")
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **env}
    return subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=full_env)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny random checkpoints of the real architectures, a LoRA adapter and a delta."""
    from model_workers.localmodels import (
        build_lora_adapter,
        build_tiny_checkpoint,
        train_tokenizer,
    )

    root = tmp_path_factory.mktemp("tiny")
    tokenizer = train_tokenizer(root / "tokenizer")
    models: dict[str, Path] = {"tokenizer": tokenizer}
    for arch in ("llama", "opt", "t5"):
        models[arch] = build_tiny_checkpoint(arch, root / arch, tokenizer_dir=tokenizer)
    models["llama-b"] = build_tiny_checkpoint("llama", root / "llama-b", seed=1, tokenizer_dir=tokenizer)
    models["llama-lora"] = build_lora_adapter(models["llama"], root / "llama-lora", seed=1)
    models["llama-lora-2"] = build_lora_adapter(models["llama"], root / "llama-lora-2", seed=2)
    models["opt-lora"] = build_lora_adapter(models["opt"], root / "opt-lora", seed=1)
    return models


@pytest.fixture()
def control_plane(tmp_path) -> Iterator[Proc]:
    """``arena serve`` on a free port with a fresh SQLite database."""
    yield from _control_plane(tmp_path, database_url=None)


def _control_plane(tmp_path: Path, *, database_url: str | None = None,
                   **env_extra: str) -> Iterator[Proc]:
    """``arena serve`` in a subprocess; ``env_extra`` adds ``ARENA_*`` settings."""
    port = free_port()
    env = {
        "ARENA_DATA_DIR": str(tmp_path / "data"),
        "ARENA_ADMIN_KEY": ADMIN_KEY,
        "ARENA_HEARTBEAT_INTERVAL_S": "0.5",
        "ARENA_WORKER_EXPIRY_S": "3",
        "ARENA_ROUTING_CACHE_S": "0.2",
        **env_extra,
    }
    if database_url:
        env["ARENA_DATABASE_URL"] = database_url
    log = tmp_path / "serve.log"
    proc = spawn(arena_cmd("serve", "--port", str(port), "--log-level", "warning"), log=log, env=env)
    server = Proc(proc=proc, log=log, url=f"http://127.0.0.1:{port}", extra={"env": env})
    try:
        wait_for(lambda: httpx.get(server.url + "/health").status_code == 200,
                 timeout_s=60, what="arena serve /health", proc=proc)
    except Exception:
        server.stop()
        raise RuntimeError(server.log_text()) from None
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def start_worker(tmp_path, control_plane):
    """Start ``arena worker`` processes registered with ``control_plane``; stopped at teardown."""
    started: list[Proc] = []

    def start(*checkpoints: str, extra_args: tuple[str, ...] = (), timeout_s: float = 120,
              wait: bool = True) -> Proc:
        port = free_port()
        args = ["worker", "--controller", control_plane.url, "--port", str(port),
                "--api-key", ADMIN_KEY, "--log-level", "warning", *extra_args]
        for name in checkpoints:
            args += ["--checkpoint", name]
        log = tmp_path / f"worker-{port}.log"
        proc = spawn(arena_cmd(*args), log=log, env={})
        worker = Proc(proc=proc, log=log, url=f"http://127.0.0.1:{port}",
                      extra={"timeout_s": timeout_s})
        started.append(worker)
        if wait:
            wait_registered(worker)
        return worker

    def wait_registered(worker: Proc) -> Proc:
        def registered() -> bool:
            rows = httpx.get(control_plane.url + "/api/workers").json()
            return any(r["address"] == worker.url and r["healthy"] for r in rows)

        try:
            wait_for(registered, timeout_s=worker.extra["timeout_s"], what="worker registration",
                     proc=worker.proc)
        except Exception:
            raise RuntimeError(worker.log_text()) from None
        return worker

    start.wait_registered = wait_registered  # type: ignore[attr-defined]
    yield start
    for worker in started:
        worker.stop()


def register(control_plane: Proc, **body) -> httpx.Response:
    return httpx.post(
        control_plane.url + "/api/checkpoints",
        json=body,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=120,
    )


def find_postgres_bin() -> Path | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return candidates[-1].parent if candidates else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server (initdb + pg_ctl) on a free loopback port."""
    bindir = find_postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    # not under pytest's tmp dir: that one is private to root, and the server runs as 'postgres'
    root = Path(tempfile.mkdtemp(prefix="arena-pg-"))
    data = root / "data"
    port = free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root: use the Debian 'postgres' user
        shutil.chown(root, user="postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "arena",
                    "--auth=trust", "-E", "UTF8"], check=True, capture_output=True)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "pg.log"),
                    "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "-w", "start"],
                   check=True, capture_output=True)
    try:
        subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "arena",
                        "arena"], check=True, capture_output=True)
        yield f"postgresql+psycopg://arena@127.0.0.1:{port}/arena"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
