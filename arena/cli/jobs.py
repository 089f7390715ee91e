"""``arena jobs-worker``, ``arena jobs list|show|cancel|logs``, ``arena finetune submit`` and
``arena runs``: the job queue from the command line."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from arena.cli.client import call, endpoint, err

app = typer.Typer(help="The job queue: list, show, cancel and follow jobs.", no_args_is_help=True)
finetune_app = typer.Typer(help="Fine-tune a registered checkpoint (LoRA, QLoRA or full).",
                           no_args_is_help=True)
out = Console()
logger = logging.getLogger(__name__)
FINAL = ("succeeded", "failed", "cancelled")

Url = Annotated[str | None, typer.Option(help="Control-plane URL (env ARENA_URL).")]
Key = Annotated[str | None, typer.Option(help="API key (env ARENA_API_KEY).")]


# --- the worker ----------------------------------------------------------------------------


def _reaper(stop: threading.Event) -> None:
    """Queue again the jobs whose worker died; re-send queued jobs whose message was lost."""
    from arena import jobs
    from arena.settings import get_settings
    from arena.tasks import engine

    settings = get_settings()
    while True:
        try:
            n = jobs.reap_and_resend(engine())
            n += jobs.resend_stale_queued(engine(), older_than_s=10 * settings.job_lease_s)
            if n:
                logger.info("reaper: %d job(s) sent again", n)
        except Exception:
            logger.exception("reaper pass failed")
        if stop.wait(settings.job_lease_s / 2):
            return


def jobs_worker(
    queues: Annotated[str, typer.Option(help="Comma-separated queues to take jobs from.")] =
    "finetune,bench,judge",
    concurrency: Annotated[int, typer.Option(min=1, help="Jobs run at once (threads).")] = 1,
    loglevel: Annotated[str, typer.Option(help="debug | info | warning")] = "info",
) -> None:
    """Start a job worker (Celery) on ARENA_BROKER_URL (default: the embedded SQLite broker)."""
    from celery.signals import worker_ready, worker_shutdown

    from arena.celery_app import QUEUES, celery_app
    from arena.settings import get_settings

    names = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(names) - set(QUEUES))
    if not names or unknown:
        raise typer.BadParameter(f"unknown queue(s) {unknown or names}: use "
                                 f"{', '.join(QUEUES)}", param_hint="--queues")
    logging.basicConfig(level=loglevel.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx", "httpx2", "openai"):  # one line per request is noise in a job log
        logging.getLogger(chatty).setLevel(logging.WARNING)
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    @worker_ready.connect(weak=False)
    def _start_reaper(**_: Any) -> None:
        threading.Thread(target=_reaper, args=(stop,), name="reaper", daemon=True).start()

    @worker_shutdown.connect(weak=False)
    def _stop_reaper(**_: Any) -> None:
        stop.set()

    import arena.tasks  # noqa: F401  (registers the task)

    out.print(f"job worker on queues {', '.join(names)} (broker "
              f"{settings.resolved_broker_url()}, database {settings.resolved_database_url()})")
    pool = ["--pool", "solo"] if concurrency == 1 else ["--pool", "threads", "-c",
                                                        str(concurrency)]
    celery_app().worker_main(["worker", "-Q", ",".join(names), "--loglevel", loglevel,
                              "--without-gossip", "--without-mingle", *pool])


# --- reading and cancelling ----------------------------------------------------------------


def _fmt_progress(job: dict[str, Any]) -> str:
    p = job.get("progress") or {}
    if job["state"] != "running":
        return ""
    if p.get("total_steps"):
        loss = f" loss {p['loss']:.3f}" if p.get("loss") is not None else ""
        return f"step {p.get('step', 0)}/{p['total_steps']}{loss}"
    if p.get("total"):
        return f"{p.get('stage', '')} {p.get('done', 0)}/{p['total']}"
    return str(p.get("stage", ""))


def _headline(job: dict[str, Any]) -> str:
    result = job.get("result") or {}
    if job["kind"] == "bench" and result.get("accuracy") is not None:
        return f"{result.get('suite')} {100 * result['accuracy']:.2f}%"
    if job["kind"] == "judge":
        overall = (result.get("result") or {}).get("overall") or {}
        if overall.get("ratio") is not None:
            return f"ratio {overall['ratio']:.1f}%"
    if job["kind"] == "finetune" and job.get("output_checkpoint"):
        loss = result.get("final_loss")
        return f"→ {job['output_checkpoint']}" + (f" (loss {loss:.3f})" if loss else "")
    return ""


def _job_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for column in ("id", "kind", "state", "checkpoint", "progress / result", "trigger",
                   "attempts", "created"):
        table.add_column(column, no_wrap=column != "progress / result")
    for job in rows:
        state = job["state"]
        colour = {"succeeded": "green", "failed": "red", "running": "cyan"}.get(state, "")
        detail = _fmt_progress(job) or _headline(job) or (job.get("error") or "")[:60]
        table.add_row(str(job["id"]), job["kind"], f"[{colour}]{state}[/{colour}]" if colour
                      else state, job.get("checkpoint") or "", detail, job["trigger"],
                      f"{job['attempts']}/{job['max_attempts']}", job["created_at"][:19])
    return table


@app.command("list")
def list_jobs(kind: Annotated[str | None, typer.Option(help="finetune | bench | judge")] = None,
              state: Annotated[str | None, typer.Option(help="queued | running | succeeded | "
                                                             "failed | cancelled")] = None,
              checkpoint: Annotated[str | None, typer.Option(help="Only this checkpoint.")] = None,
              limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
              url: Url = None) -> None:
    """Jobs, newest first."""
    base, _ = endpoint(url, None)
    query = "&".join(f"{k}={v}" for k, v in (("kind", kind), ("state", state),
                                             ("checkpoint", checkpoint), ("limit", limit)) if v)
    out.print(_job_table(call("GET", base, f"/api/jobs?{query}"), "jobs"))


@app.command()
def show(job_id: int, url: Url = None) -> None:
    """One job: its parameters, progress, result and error."""
    import json

    base, _ = endpoint(url, None)
    job = call("GET", base, f"/api/jobs/{job_id}")
    out.print(_job_table([job], f"job {job_id}"))
    for field in ("params", "progress", "result"):
        if job.get(field):
            out.print(f"[bold]{field}[/bold]")
            out.print_json(json.dumps(job[field], ensure_ascii=False))
    if job.get("error"):
        out.print(f"[red]error:[/red] {job['error']}")
    if job.get("result_path"):
        out.print(f"full result: {job['result_path']}")


@app.command()
def cancel(job_id: int, url: Url = None, api_key: Key = None) -> None:
    """Cancel a queued job, or ask a running one to stop (it saves a checkpoint first)."""
    base, key = endpoint(url, api_key)
    job = call("POST", base, f"/api/jobs/{job_id}/cancel", api_key=key)
    out.print(f"job {job_id}: {job['state']}"
              + (" (cancellation requested)" if job["cancel_requested"] and
                 job["state"] == "running" else ""))


@app.command()
def logs(job_id: int, follow: Annotated[bool, typer.Option("--follow", "-f",
                                                           help="Wait for new lines until the "
                                                                "job ends.")] = False,
         url: Url = None) -> None:
    """A job's log: state changes, warnings, the failure."""
    base, _ = endpoint(url, None)
    after = 0
    while True:
        for event in call("GET", base, f"/api/jobs/{job_id}/events?after={after}"):
            after = event["id"]
            stamp = time.strftime("%H:%M:%S", time.localtime(event["tstamp"]))
            style = {"error": "red", "warning": "yellow"}.get(event["level"], "")
            line = f"{stamp} {event['level']:7} {event['message']}"
            out.print(f"[{style}]{line}[/{style}]" if style else line, highlight=False,
                      markup=bool(style))
        if not follow or call("GET", base, f"/api/jobs/{job_id}")["state"] in FINAL:
            return
        time.sleep(1.0)


def watch(base: str, job_id: int) -> dict[str, Any]:
    """Follow a job with a progress bar until it ends; returns the final job."""
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
    with Progress(*columns, console=err) as progress:
        task = progress.add_task(f"job {job_id}", total=None, detail="queued")
        while True:
            job = call("GET", base, f"/api/jobs/{job_id}")
            p = job.get("progress") or {}
            total = p.get("total_steps") or p.get("total")
            done = p.get("step") if p.get("total_steps") else p.get("done")
            detail = job["state"]
            if p.get("total_steps"):
                bits = [f"epoch {p.get('epoch', 0):.2f}"]
                if p.get("loss") is not None:
                    bits.append(f"loss {p['loss']:.4f}")
                if p.get("learning_rate") is not None:
                    bits.append(f"lr {p['learning_rate']:.2e}")
                if p.get("tokens_per_s"):
                    bits.append(f"{p['tokens_per_s']:.0f} tok/s")
                if p.get("eta_s") is not None:
                    bits.append(f"ETA {p['eta_s']:.0f}s")
                if p.get("mfu") is not None:
                    bits.append(f"MFU {100 * p['mfu']:.1f}%")
                detail = " ".join(bits)
            elif p.get("stage"):
                detail = str(p["stage"])
            progress.update(task, total=total, completed=done or 0, detail=detail)
            if job["state"] in FINAL:
                return job
            time.sleep(1.0)


# --- fine-tuning ---------------------------------------------------------------------------


@finetune_app.command()
def submit(
    base: Annotated[str, typer.Option(help="Registered checkpoint to start from.")],
    data: Annotated[Path, typer.Option(help="Alpaca JSON/JSONL, ShareGPT JSON/JSONL, or a "
                                            "text file/folder (--mode pretrain).")],
    name: Annotated[str, typer.Option(help="Register the candidate under this name.")],
    method: Annotated[str, typer.Option(help="lora | qlora | full")] = "lora",
    mode: Annotated[str, typer.Option(help="instruct | pretrain")] = "instruct",
    data_format: Annotated[str, typer.Option(help="auto | alpaca | sharegpt | text")] = "auto",
    template: Annotated[str | None, typer.Option(help="Conversation template (default: the "
                                                      "base's).")] = None,
    epochs: Annotated[float | None, typer.Option(help="Passes over the data.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N optimizer steps.")] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr", help="Peak learning rate.")] =
    None,
    batch_size: Annotated[int | None, typer.Option(help="Sequences per micro-batch.")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Micro-batches per step.")] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per sequence.")] = None,
    lora_r: Annotated[int | None, typer.Option(help="LoRA rank.")] = None,
    lora_alpha: Annotated[int | None, typer.Option(help="LoRA alpha.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    save_steps: Annotated[int | None, typer.Option(help="Checkpoint every N steps (a crashed "
                                                        "job resumes from the last one).")] = None,
    merge: Annotated[bool, typer.Option("--merge", help="Register merged weights, not the "
                                                        "adapter.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job with a progress bar "
                                                      "until it ends.")] = False,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Queue a fine-tuning job: checked now (base, data, template, name), trained by a job
    worker, registered as NAME with BASE as parent, then evaluated by the policy."""
    base_url, key = endpoint(url, api_key)
    options = {"method": method, "mode": mode, "data_format": data_format, "epochs": epochs,
               "max_steps": max_steps, "learning_rate": learning_rate, "batch_size": batch_size,
               "gradient_accumulation_steps": grad_accum, "max_length": max_length,
               "lora_r": lora_r, "lora_alpha": lora_alpha, "seed": seed, "save_steps": save_steps,
               "merge": merge}
    config = {k: v for k, v in options.items() if v is not None}
    body = {"base": base, "data": str(data.resolve()), "output_name": name,
            "template": template, "config": config}
    job = call("POST", base_url, "/api/finetune", api_key=key, json=body)
    out.print(f"queued job {job['id']}: {base} → {name} ({job['params']['records']} records)")
    if wait:
        job = watch(base_url, job["id"])
        if job["state"] != "succeeded":
            err.print(f"[red]job {job['id']} {job['state']}:[/red] {job.get('error') or ''}")
            raise typer.Exit(1)
        loss = (job.get("result") or {}).get("final_loss")
        out.print(f"registered {job['output_checkpoint']} (final loss {loss})")


# --- evaluation runs -------------------------------------------------------------------------


def runs_command(checkpoint: Annotated[str | None, typer.Option(help="Only this checkpoint.")]
                 = None,
                 reference: Annotated[str | None, typer.Option(help="Judge reference.")] = None,
                 url: Url = None) -> None:
    """Evaluation runs (benchmarks, judge) per checkpoint and their results."""
    base, _ = endpoint(url, None)
    query = "&".join(f"{k}={v}" for k, v in (("checkpoint", checkpoint),
                                             ("reference", reference)) if v)
    data = call("GET", base, f"/api/runs?{query}")
    table = Table(title="evaluation runs")
    for column in ("id", "checkpoint", "run", "state", "progress / result"):
        table.add_column(column)
    for run in data["runs"]:
        what = (f"bench {run['suite']}" if run["kind"] == "bench"
                else f"judge vs {run.get('reference') or '?'}")
        detail = _headline(run)
        if run["state"] == "running" and run.get("total"):
            detail = f"{run.get('done') or 0}/{run['total']}"
        elif run["state"] == "failed":
            detail = (run.get("error") or "")[:70]
        table.add_row(str(run["id"]), run.get("checkpoint") or "", what, run["state"], detail)
    out.print(table)
    ref = data.get("judge_reference")
    if data["benchmarks"] or data["judge_ratios"]:
        summary = Table(title="results" + (f" (judge ratio against {ref})" if ref else ""))
        for column in ("checkpoint", "MMLU", "C-Eval", "CMMLU", "judge ratio"):
            summary.add_column(column, justify="left" if column == "checkpoint" else "right")
        names = sorted(set(data["benchmarks"]) | set(data["judge_ratios"]))
        for name in names:
            scores = data["benchmarks"].get(name, {})
            cells = [f"{100 * scores[s]['accuracy']:.2f}%" if scores.get(s, {}).get("accuracy")
                     is not None else "–" for s in ("mmlu", "ceval", "cmmlu")]
            ratio = data["judge_ratios"].get(name, {}).get("ratio")
            summary.add_row(name, *cells, f"{ratio:.1f}%" if ratio is not None else "–")
        out.print(summary)
