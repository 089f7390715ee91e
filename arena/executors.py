"""What each kind of job does: a benchmark run, a judge run, a fine-tuning run.

Each executor takes a ``JobContext`` and returns the fields ``finish`` stores (a compact
``result`` for the API and leaderboard, the full result on disk under ``result_path``). They
are written to be run again after a crash: a benchmark or judge run starts over (judgments are
cached, so a judge run pays only for what is missing); a fine-tuning run resumes from its last
checkpoint and registers its candidate once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from arena.db import session_scope
from arena.errors import ArenaError
from arena.models import Checkpoint, CheckpointCreate, JobMetric
from arena.tasks import JobContext, JobFailed, dump_json

if TYPE_CHECKING:
    from sqlmodel import Session

MODEL_WAIT_S = 120.0  # how long an evaluation waits for a worker to serve a new checkpoint


def wait_for_model(base_url: str, model: str, *, ctx: JobContext,
                   timeout_s: float = MODEL_WAIT_S) -> None:
    """Wait until the gateway lists ``model`` (a worker serves it), or fail with that."""
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while True:
        ctx.check()
        try:
            listed = httpx.get(f"{base_url.rstrip('/')}/v1/models", timeout=10).json()
            if any(m.get("id") == model for m in listed.get("data", [])):
                return
            last = "no worker serves it"
        except (httpx.HTTPError, ValueError) as exc:
            last = f"the control plane at {base_url} did not answer ({exc})"
        if time.monotonic() > deadline:
            raise JobFailed(f"model {model!r} is not available after {timeout_s:.0f} s: {last}")
        ctx.progress(stage=f"waiting for a worker to serve {model}")
        time.sleep(1.0)


def compact_bench(summary: dict[str, Any]) -> dict[str, Any]:
    """The stored result without items: what the leaderboard and the UI read."""
    return {k: v for k, v in summary.items() if k != "items"}


def run_bench(ctx: JobContext) -> dict[str, Any]:
    from benchmarks.runs import BenchRequest, run_benchmark, validate_request
    from benchmarks.scorers import ScoringError

    job = ctx.job
    assert job.checkpoint is not None
    try:
        request = validate_request(BenchRequest(**job.params))
    except (TypeError, ValueError) as exc:
        raise JobFailed(str(exc)) from exc
    base_url, key = ctx.client()
    wait_for_model(base_url, job.checkpoint, ctx=ctx)

    def on_progress(done: int, total: int) -> None:
        ctx.check()
        ctx.progress(stage="scoring", done=done, total=total)

    try:
        summary = run_benchmark(request, model=job.checkpoint, base_url=base_url, api_key=key,
                                on_progress=on_progress)
    except (ArenaError, ScoringError, ValueError, OSError) as exc:
        raise JobFailed(str(exc)) from exc
    path = ctx.results_path(f"bench-{request.suite}")
    dump_json(path, summary)
    return {"result": compact_bench(summary), "result_path": str(path)}


def run_judge(ctx: JobContext) -> dict[str, Any]:
    from evaluators.errors import EvaluatorError
    from evaluators.jobs import JudgeRequest
    from evaluators.jobs import run_judge as judge

    try:
        request = JudgeRequest(**ctx.job.params)
    except (TypeError, ValueError) as exc:
        raise JobFailed(str(exc)) from exc
    base_url, key = ctx.client()
    for model in (request.model_a, request.model_b):
        if model is not None:
            wait_for_model(base_url, model, ctx=ctx)

    def on_progress(stage: str, done: int, total: int) -> None:
        ctx.check()
        ctx.progress(stage=stage, done=done, total=total)

    store = ctx.settings.data_dir / "judgments.db"
    try:
        payload = judge(request, store_path=store, base_url=base_url, api_key=key,
                        judge_api_key=ctx.settings.judge_api_key, on_progress=on_progress)
    except (EvaluatorError, ArenaError, ValueError, OSError) as exc:
        raise JobFailed(str(exc)) from exc
    path = ctx.results_path(f"judge-{request.kind}")
    dump_json(path, payload)
    compact = {k: v for k, v in payload.items() if k not in {"judgments"}}
    return {"result": compact, "result_path": str(path)}


# --- fine-tuning ---------------------------------------------------------------------------


def base_folder(row: Checkpoint) -> str:
    """The weights folder a fine-tune starts from."""
    if row.adapter:
        raise JobFailed(f"the base {row.name!r} is a LoRA adapter; fine-tune its base "
                        f"{row.source!r} or register merged weights")
    if row.gguf_file:
        raise JobFailed(f"the base {row.name!r} is a GGUF file; register it as a transformers "
                        "folder to fine-tune it")
    folder = row.materialized_path or row.source
    if not Path(folder).is_dir():
        raise JobFailed(f"the base {row.name!r} is not a local folder ({folder}); fine-tuning "
                        "needs its weights on this machine")
    return folder


def _registered_by(session: Session, name: str, job_id: int) -> Checkpoint | None:
    """The candidate this job registered before (a run after a crash), else None; a name
    taken by something else is an error."""
    from sqlmodel import select

    row = session.exec(select(Checkpoint).where(Checkpoint.name == name)).first()
    if row is None:
        return None
    if row.meta.get("job_id") != job_id:
        raise JobFailed(f"a checkpoint named {name!r} was registered meanwhile by someone else")
    return row


def run_finetune(ctx: JobContext) -> dict[str, Any]:
    from arena import evaluation, registry
    from model_workers.finetune import (
        FinetuneConfig,
        FinetuneDataError,
        TrainingCancelled,
        train,
        validate_data,
    )

    params = ctx.job.params
    job_id = ctx.job_id
    try:
        config = FinetuneConfig(**params.get("config", {}))
    except ValueError as exc:
        raise JobFailed(f"bad hyper-parameters: {exc}") from exc
    name = params["output_name"]
    with session_scope(ctx.engine) as session:
        try:
            base = registry.get_checkpoint(session, name=params["base"])
        except ArenaError as exc:
            raise JobFailed(str(exc)) from exc
        done = _registered_by(session, name, job_id)
    if done is not None:  # trained and registered, then the worker died before finishing
        ctx.event(f"candidate {name!r} was already registered by this job")
        evaluation.queue_evaluations(ctx.engine, ctx.settings, name)
        return {"output_checkpoint": name, "result": done.meta.get("finetune", {})}
    template = params.get("template") or base.template
    if not template:
        raise JobFailed(f"the base {base.name!r} has no conversation template; name one")
    try:
        summary = validate_data(params["data"], mode=config.mode, data_format=config.data_format)
    except (FinetuneDataError, OSError) as exc:
        raise JobFailed(str(exc)) from exc
    folder = base_folder(base)
    out = ctx.settings.data_dir / "finetune" / f"job-{job_id}"
    ctx.progress(force=True, stage="training", records=summary.records)

    last_step = 0

    def on_progress(p: Any) -> None:
        nonlocal last_step
        metric = None
        if p.step > last_step and p.loss is not None:
            last_step = p.step
            metric = JobMetric(job_id=job_id, step=p.step, loss=float(p.loss),
                               learning_rate=p.learning_rate, tokens_per_s=p.tokens_per_s,
                               tstamp=time.time())
        ctx.progress(metric=metric, force=p.step >= p.total_steps, stage="training",
                     step=p.step, total_steps=p.total_steps, epoch=p.epoch, loss=p.loss,
                     learning_rate=p.learning_rate, tokens_per_s=p.tokens_per_s, eta_s=p.eta_s,
                     mfu=p.mfu, tokens_seen=p.tokens_seen)

    try:
        result = train(config, base_path=folder, template=template, data_path=params["data"],
                       output_dir=out, on_progress=on_progress, should_stop=ctx.should_stop)
    except TrainingCancelled as exc:
        from arena.tasks import JobCancelled

        raise JobCancelled() from exc
    except (FinetuneDataError, ValueError, OSError) as exc:
        raise JobFailed(str(exc)) from exc
    if result.resumed_from_step:
        ctx.event(f"resumed from step {result.resumed_from_step}")
    facts = {"method": config.method, "mode": config.mode, "final_loss": result.final_loss,
             "steps": result.steps, "tokens": result.tokens,
             "data": str(params["data"]), "data_fingerprint": result.data_fingerprint,
             "hyperparameters": config.model_dump(mode="json"),
             "trainable_params": result.trainable_params, "total_params": result.total_params}
    merged = config.merge or config.method == "full"
    create = CheckpointCreate(
        name=name, source=str(result.output_path) if merged else base.source,
        revision=None if merged else base.revision,
        adapter=None if merged else str(result.output_path), template=template,
        parent=base.name, meta={"job_id": job_id, "finetune": facts})
    ctx.progress(force=True, stage="registering")
    with session_scope(ctx.engine) as session:
        if _registered_by(session, name, job_id) is None:
            try:
                registry.register_checkpoint(
                    session, data=create,
                    materialize_dir=ctx.settings.data_dir / "materialized")
            except ArenaError as exc:
                raise JobFailed(f"the candidate could not be registered: {exc}") from exc
    ctx.event(f"registered {name!r} (parent {base.name!r})")
    evaluation.queue_evaluations(ctx.engine, ctx.settings, name)
    return {"output_checkpoint": name, "result": facts}
