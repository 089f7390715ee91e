"""``arena demo``: build demo checkpoints, start the control plane and workers, show an answer,
then run the whole loop: fine-tune a LoRA candidate, register it, evaluate it, put it in the arena.

The demo is a supervisor: it runs ``arena serve``, one ``arena worker`` per model and an
``arena jobs-worker`` as child processes on the embedded defaults (SQLite in the data directory,
the embedded broker, no external server), registers the demo checkpoints through the API like
any user would, and stops everything on Ctrl-C.

The loop: benchmark runs of the base on the project's own MMLU / C-Eval samples; a LoRA job on
the base with the project's small instruction set; the job worker registers the candidate (its
parent: the base), and the evaluation policy, set for the job worker only, queues the candidate's
benchmark runs and a judge ratio run against its parent (the judge: SmolLM2 itself, through the
gateway — a stand-in for GPT-4, whose judgments are often unparseable and counted as such). The
base's worker adopts the new adapter, so the candidate joins the arena beside its parent.
"""

from __future__ import annotations

import json
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
FINETUNE_STEPS = 40
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


def run_demo(*, host: str, port: int, finetune: bool = True,
             finetune_base: str = "smollm2-135m-instruct",
             finetune_steps: int = FINETUNE_STEPS) -> None:
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
            args = ["worker", "--controller", url, "--host", host, "--port", str(_free_port(host)),
                    "--adopt-adapters"]
            for name in group:
                args += ["--checkpoint", name]
            children.append(_start(f"worker {'+'.join(group)}", args, data_dir,
                                   {"ARENA_API_KEY": admin_key}))
        with out.status("loading models in the workers"):
            _wait(lambda: _served(url) >= set(DEMO_CHECKPOINTS), children, 300)
        out.print(f"[green]✓[/green] workers serving {', '.join(sorted(_served(url)))}")
        _show_answer(url)
        if finetune:
            policy = _policy_env(url, admin_key, data_dir)
            children.append(_start("jobs worker", ["jobs-worker"], data_dir, policy))
            _loop(url, admin_key, json.loads(policy["ARENA_EVAL_SUITES"]), base=finetune_base,
                  steps=finetune_steps, children=children)
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


def _policy_env(url: str, key: str, data_dir: Path) -> dict[str, str]:
    """The job worker's settings: the evaluation policy for the candidates it registers."""
    from benchmarks.samples import write_ceval_sample, write_mmlu_sample

    samples = data_dir / "samples"
    suites = {"mmlu": str(write_mmlu_sample(samples / "mmlu")),
              "ceval": str(write_ceval_sample(samples / "ceval"))}
    return {"ARENA_URL": url, "ARENA_API_KEY": key, "ARENA_EVAL_SUITES": json.dumps(suites),
            "ARENA_EVAL_JUDGE_REFERENCE": "parent", "ARENA_EVAL_JUDGE_MAX_TOKENS": "200",
            "ARENA_JUDGE_BASE_URL": f"{url}/v1", "ARENA_JUDGE_MAX_TOKENS": "48",
            "ARENA_JUDGE_TIMEOUT_S": "300",
            "ARENA_JUDGE_MODEL": "smollm2-135m-instruct", "ARENA_JUDGE_API_KEY": "EMPTY"}


def _api(method: str, url: str, key: str, path: str, body: dict | None = None) -> dict:
    response = httpx.request(method, url + path, json=body, timeout=120,
                             headers={"Authorization": f"Bearer {key}"})
    if response.status_code >= 400:
        raise SystemExit(f"{method} {path} failed ({response.status_code}): {response.text}")
    return response.json()


def _loop(url: str, key: str, samples: dict[str, str], *, base: str, steps: int,
          children: list[Child]) -> None:
    """Evaluate the base on ``samples`` (suite → data), fine-tune a candidate, follow its
    evaluation; print as it goes."""
    from importlib.resources import files

    candidate = f"{base}-demo-lora"
    done = {(j["checkpoint"], j["kind"], (j.get("params") or {}).get("suite"))
            for j in _api("GET", url, key, "/api/jobs?limit=1000")
            if j["state"] in ("queued", "running", "succeeded")}
    for suite, path in samples.items():
        if (base, "bench", suite) not in done:
            _api("POST", url, key, "/api/benchmarks/runs",
                 {"model": base, "suite": suite, "data": path, "shots": 5})
    if httpx.get(f"{url}/api/checkpoints/{candidate}").status_code != 200 and \
            (base, "finetune", None) not in done:
        data = files("model_workers.finetune") / "data" / "demo_instructions.jsonl"
        job = _api("POST", url, key, "/api/finetune", {
            "base": base, "data": str(data), "output_name": candidate,
            "config": {"method": "lora", "max_steps": steps, "batch_size": 4,
                       "learning_rate": 1e-3, "lora_r": 8, "max_length": 256, "seed": 0}})
        out.print(f"[green]✓[/green] queued fine-tuning job {job['id']}: LoRA on {base} → "
                  f"{candidate} ({job['params']['records']} instructions, {steps} steps)")
        _follow_finetune(url, job["id"], children)
    _follow_evaluations(url, children)


def _follow_finetune(url: str, job_id: int, children: list[Child]) -> None:
    last = 0.0
    while True:
        _check_children(children)
        job = httpx.get(f"{url}/api/jobs/{job_id}", timeout=30).json()
        p = job.get("progress") or {}
        if job["state"] in ("succeeded", "failed", "cancelled"):
            break
        if p.get("total_steps") and time.monotonic() - last > 10:
            last = time.monotonic()
            loss = f"{p['loss']:.3f}" if p.get("loss") is not None else "–"
            eta = f", ETA {p['eta_s']:.0f} s" if p.get("eta_s") is not None else ""
            out.print(f"  fine-tuning: step {p.get('step', 0)}/{p['total_steps']}, loss {loss}, "
                      f"{p.get('tokens_per_s') or 0:.0f} tokens/s{eta}")
        time.sleep(1.0)
    if job["state"] != "succeeded":
        out.print(f"[red]fine-tuning job {job_id} {job['state']}: {job.get('error')}[/red]")
        return
    out.print(f"[green]✓[/green] registered {job['output_checkpoint']} (parent "
              f"{job['checkpoint']}, final loss {job['result'].get('final_loss'):.3f}); "
              "its evaluations are queued")


def _follow_evaluations(url: str, children: list[Child], timeout_s: float = 1200) -> None:
    deadline = time.monotonic() + timeout_s
    with out.status("evaluating (benchmarks and the judge) on the job worker"):
        while time.monotonic() < deadline:
            _check_children(children)
            runs = httpx.get(f"{url}/api/runs", timeout=30).json()["runs"]
            if runs and all(r["state"] in ("succeeded", "failed", "cancelled") for r in runs):
                break
            time.sleep(2.0)
    runs = httpx.get(f"{url}/api/runs", timeout=30).json()
    for job in httpx.get(f"{url}/api/jobs?kind=judge&state=succeeded", timeout=30).json():
        result = job.get("result") or {}
        overall = (result.get("result") or {}).get("overall") or {}
        unparseable = (result.get("result") or {}).get("unparseable")
        bad = sum(unparseable.values()) if isinstance(unparseable, dict) else unparseable or 0
        models = " vs ".join(result.get("models") or [])
        ratio = overall.get("ratio")
        out.print(f"  judge ({result.get('judge_model')}) {models}: "
                  + (f"ratio {ratio:.1f}%" if ratio is not None else "no ratio")
                  + f"; {bad} judgments unparseable"
                  + (" — a small stand-in judge; point ARENA_JUDGE_* at a strong model"
                     if bad else ""))
    for run in runs["runs"]:
        if run["state"] == "failed":
            out.print(f"[yellow]run {run['id']} ({run['kind']} of {run['checkpoint']}) failed: "
                      f"{run['error']}[/yellow]")
    board = httpx.get(f"{url}/api/leaderboard", timeout=60).json()
    out.print(f"[bold]Leaderboard[/bold] (judge ratio against {board.get('judge_reference')})")
    for row in board["rows"]:
        cells = [f"{s} {100 * row[s]:.1f}%" for s in ("mmlu", "ceval") if row.get(s) is not None]
        if row.get("judge_ratio") is not None:
            cells.append(f"judge ratio {row['judge_ratio']:.1f}%")
        if cells:
            out.print(f"  {row['model']:<40} " + "  ".join(cells))


def _check_children(children: list[Child]) -> None:
    for child in children:
        if child.proc.poll() is not None:
            tail = child.log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"{child.name} exited ({child.proc.returncode}):\n{tail}")


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
        _check_children(watched)
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
