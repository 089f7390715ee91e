"""``arena demo``: build demo checkpoints, start the control plane and workers, show an answer.

The demo is a supervisor: it runs ``arena serve`` and one ``arena worker`` per model as child
processes on the embedded defaults (SQLite in the data directory, no external server), registers
the demo checkpoints through the API like any user would, and stops everything on Ctrl-C.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console

from arena.settings import Settings

out = Console()

# name → (model directory key, template, adapter key); one worker per group below.
DEMO_CHECKPOINTS: dict[str, dict] = {
    "smollm2-135m-instruct": {"source": "smollm2-135m-instruct", "template": "hf"},
    "tiny-llama": {"source": "tiny-llama", "template": "hf"},
    "tiny-llama-lora": {"source": "tiny-llama", "adapter": "tiny-llama-lora", "template": "hf",
                        "parent": "tiny-llama"},
    "tiny-t5": {"source": "tiny-t5", "template": "fastchat_t5"},
}
WORKER_GROUPS: tuple[tuple[str, ...], ...] = (
    ("smollm2-135m-instruct",),
    ("tiny-llama", "tiny-llama-lora"),  # two models, one base, one worker (multi-LoRA)
    ("tiny-t5",),
)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log: Path


def run_demo(*, host: str, port: int) -> None:
    settings = Settings()
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    admin_key = settings.admin_key or _demo_key(data_dir)
    url = f"http://{host}:{port}"
    children: list[Child] = []
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the children too, like Ctrl-C
    try:
        with out.status("building demo checkpoints (first run: ~30 s for the SmolLM2 export)"):
            from model_workers.localmodels import build_demo_models

            models = build_demo_models(data_dir / "models")
        out.print(f"[green]✓[/green] demo checkpoints in {data_dir / 'models'}")
        env = {"ARENA_DATA_DIR": str(data_dir), "ARENA_ADMIN_KEY": admin_key}
        children.append(_start("control plane", ["serve", "--host", host, "--port", str(port)],
                               data_dir, env))
        with out.status(f"starting the control plane on {url}"):
            _wait(lambda: httpx.get(url + "/health").status_code == 200, children[0], 60)
        out.print(f"[green]✓[/green] control plane on {url}")
        for name, spec in DEMO_CHECKPOINTS.items():
            _register(url, admin_key, name, spec, models)
        out.print(f"[green]✓[/green] registered {', '.join(DEMO_CHECKPOINTS)}")
        for group in WORKER_GROUPS:
            args = ["worker", "--controller", url, "--host", host, "--port", str(_free_port(host))]
            for name in group:
                args += ["--checkpoint", name]
            children.append(_start(f"worker {'+'.join(group)}", args, data_dir,
                                   {"ARENA_API_KEY": admin_key}))
        with out.status("loading models in the workers"):
            _wait(lambda: _served(url) >= set(DEMO_CHECKPOINTS), children, 300)
        out.print(f"[green]✓[/green] workers serving {', '.join(sorted(_served(url)))}")
        _show_answer(url)
        out.print(
            f"\n[bold]Alpaca Arena is running at {url}[/bold]\n"
            f"  arena UI   {url}/ui/\n"
            f"  API docs   {url}/docs\n  models     {url}/v1/models\n"
            f"  admin key  {admin_key}\n  logs       {data_dir / 'logs'}\n"
            "Try:\n"
            f"  curl {url}/v1/chat/completions -H 'content-type: application/json' -d "
            "'{\"model\": \"smollm2-135m-instruct\", \"messages\": [{\"role\": \"user\", "
            "\"content\": \"Name three colours.\"}], \"temperature\": 0.3}'\n"
            "Press Ctrl-C to stop.",
            soft_wrap=True,
        )
        while all(c.proc.poll() is None for c in children):
            time.sleep(0.5)
        dead = next(c for c in children if c.proc.poll() is not None)
        out.print(f"[red]{dead.name} exited ({dead.proc.returncode}); see {dead.log}[/red]")
        raise SystemExit(1)
    except KeyboardInterrupt:
        out.print("stopping…")
    finally:
        for child in reversed(children):
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.proc.wait(15)
            except subprocess.TimeoutExpired:
                child.proc.kill()


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def _demo_key(data_dir: Path) -> str:
    """A per-installation admin key, kept in the data directory (mode 600)."""
    path = data_dir / "demo-admin-key"
    if path.is_file():
        return path.read_text().strip()
    key = "arena-demo-" + secrets.token_urlsafe(16)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


def _start(name: str, args: list[str], data_dir: Path, env: dict[str, str]) -> Child:
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    log = logs / (name.replace(" ", "-").replace("+", "_") + ".log")
    proc = subprocess.Popen(
        [sys.executable, "-m", "arena.cli.main", *args],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, **env},
    )
    return Child(name=name, proc=proc, log=log)


def _wait(predicate, children: Child | list[Child], timeout_s: float) -> None:
    watched = children if isinstance(children, list) else [children]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child in watched:
            if child.proc.poll() is not None:
                tail = child.log.read_text(errors="replace")[-3000:]
                raise SystemExit(f"{child.name} exited ({child.proc.returncode}):\n{tail}")
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out after {timeout_s:.0f} s; logs are in {watched[0].log.parent}")


def _register(url: str, key: str, name: str, spec: dict, models: dict[str, Path]) -> None:
    if httpx.get(f"{url}/api/checkpoints/{name}").status_code == 200:
        return
    body = {"name": name, "source": str(models[spec["source"]]), "template": spec["template"],
            "meta": {"demo": True}}
    if "adapter" in spec:
        body["adapter"] = str(models[spec["adapter"]])
    if "parent" in spec:
        body["parent"] = spec["parent"]
    response = httpx.post(f"{url}/api/checkpoints", json=body,
                          headers={"Authorization": f"Bearer {key}"}, timeout=300)
    if response.status_code != 201:
        raise SystemExit(f"registering {name} failed: {response.text}")


def _served(url: str) -> set[str]:
    return {m["id"] for m in httpx.get(url + "/v1/models").json()["data"]}


def _show_answer(url: str) -> None:
    question = "What is the capital of France?"
    response = httpx.post(url + "/v1/chat/completions", timeout=120, json={
        "model": "smollm2-135m-instruct", "temperature": 0, "max_tokens": 40,
        "messages": [{"role": "user", "content": question}],
    })
    answer = response.json()["choices"][0]["message"]["content"] if response.is_success else (
        response.text)
    out.print(f"[bold]smollm2-135m-instruct[/bold] — {question}\n  {answer.strip()}")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
