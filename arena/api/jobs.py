"""Jobs over HTTP: queue benchmark, judge and fine-tuning runs; read, follow and cancel them.

Reads are open; queuing and cancelling need a registrar (or admin) key. A request is checked
completely before anything is queued (the data file parses, the model is registered, the
options make sense); a refused request queues nothing.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field
from sqlmodel import Session

from arena import jobs, results
from arena.api.deps import get_session, get_settings, require
from arena.errors import ClientError, Conflict, NotFound
from arena.models import JobPublic
from arena.registry import get_checkpoint
from arena.settings import Settings

router = APIRouter(tags=["jobs"])


class EventPublic(BaseModel):
    id: int
    tstamp: float
    level: str
    message: str


class MetricPublic(BaseModel):
    step: int
    loss: float
    learning_rate: float | None
    tokens_per_s: float | None
    tstamp: float


class BenchRunCreate(BaseModel):
    model: str = Field(description="Registered checkpoint to score (served by a worker).")
    suite: Literal["mmlu", "ceval", "cmmlu"]
    data: str = Field(description="The suite's official folder or zip, on the job worker.")
    split: str | None = Field(default=None, description="test | val (default test; val for "
                                                        "ceval).")
    shots: int = Field(default=5, ge=0, le=25)
    limit: int | None = Field(default=None, ge=1, description="At most N items per subject.")
    subjects: list[str] | None = None
    engine: Literal["native", "lm-eval"] = "native"


class FinetuneCreate(BaseModel):
    base: str = Field(description="Registered checkpoint to start from.")
    data: str = Field(description="Alpaca/ShareGPT JSON(L) or a text file/folder, on the job "
                                  "worker.")
    output_name: str = Field(description="Name to register the candidate under.",
                             min_length=1, max_length=128,
                             pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/+-]*$")
    template: str | None = Field(default=None, description="Conversation template (default: "
                                                           "the base's).")
    config: dict[str, Any] = Field(default_factory=dict,
                                   description="Hyper-parameters (FinetuneConfig fields).")


def _submit(session: Session, settings: Settings, *, kind: str, params: dict[str, Any],
            checkpoint: str | None) -> JobPublic:
    engine = session.get_bind()
    job = jobs.submit(engine, kind=kind, params=params, checkpoint=checkpoint,  # type: ignore[arg-type]
                      trigger="api", max_attempts=settings.job_max_attempts)
    return jobs.to_public(job)


@router.get("/api/jobs", response_model=list[JobPublic])
def list_jobs(kind: str | None = Query(None, description="finetune | bench | judge"),
              state: str | None = Query(None, description="queued | running | succeeded | "
                                                          "failed | cancelled"),
              checkpoint: str | None = Query(None), limit: int = Query(100, ge=1, le=1000),
              session: Session = Depends(get_session, scope="function")) -> list[JobPublic]:
    rows = jobs.list_jobs(session, kind=kind, state=state, checkpoint=checkpoint, limit=limit)
    return [jobs.to_public(j) for j in rows]


@router.get("/api/jobs/{job_id}", response_model=JobPublic)
def show_job(job_id: int, session: Session = Depends(get_session, scope="function")) -> JobPublic:
    return jobs.to_public(jobs.get_job(session, job_id))


@router.get("/api/jobs/{job_id}/events", response_model=list[EventPublic])
def job_events(job_id: int, after: int = Query(0, ge=0, description="Only events after this id."),
               session: Session = Depends(get_session, scope="function")) -> list[EventPublic]:
    return [EventPublic.model_validate(e.model_dump()) for e in jobs.events(session, job_id,
                                                                             after=after)]


@router.get("/api/jobs/{job_id}/metrics", response_model=list[MetricPublic])
def job_metrics(job_id: int,
                session: Session = Depends(get_session, scope="function")) -> list[MetricPublic]:
    return [MetricPublic.model_validate(m.model_dump()) for m in jobs.metrics(session, job_id)]


@router.get("/api/jobs/{job_id}/loss.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
def job_loss_plot(job_id: int, session: Session = Depends(get_session, scope="function")) -> Response:
    from arena.results_plots import plot_loss

    job = jobs.get_job(session, job_id)
    return Response(plot_loss(job, jobs.metrics(session, job_id)), media_type="image/png")


@router.post("/api/jobs/{job_id}/cancel", response_model=JobPublic,
             dependencies=[Depends(require("register"))])
def cancel_job(job_id: int, session: Session = Depends(get_session, scope="function")) -> JobPublic:
    return jobs.to_public(jobs.request_cancel(session.get_bind(), job_id))  # type: ignore[arg-type]


@router.post("/api/benchmarks/runs", response_model=JobPublic, status_code=202,
             dependencies=[Depends(require("register"))])
def queue_bench(data: BenchRunCreate, session: Session = Depends(get_session, scope="function"),
                settings: Settings = Depends(get_settings)) -> JobPublic:
    from benchmarks.runs import BenchRequest, validate_request

    get_checkpoint(session, name=data.model)
    params = data.model_dump(exclude={"model"})
    try:
        validate_request(BenchRequest(**params))
    except ValueError as exc:
        raise ClientError(str(exc), param="body") from exc
    return _submit(session, settings, kind="bench", params=params, checkpoint=data.model)


@router.post("/api/judge/runs", response_model=JobPublic, status_code=202,
             dependencies=[Depends(require("register"))])
def queue_judge(data: dict[str, Any], session: Session = Depends(get_session, scope="function"),
                settings: Settings = Depends(get_settings)) -> JobPublic:
    """Body: the fields of ``evaluators.jobs.JudgeRequest`` (kind, questions, model_a or
    answers_a, model_b or answers_b, judge_model, judge_base_url, swap, …)."""
    from pydantic import ValidationError

    from evaluators.jobs import JudgeRequest, validate_request

    try:
        request = JudgeRequest(**data)
    except ValidationError as exc:
        error = exc.errors()[0]
        param = ".".join(str(p) for p in error["loc"]) or "body"
        raise ClientError(f"{param}: {error['msg']}", param=param) from None
    for model in (request.model_a, request.model_b):
        if model is not None:
            get_checkpoint(session, name=model)
    try:
        validate_request(request)
    except ValueError as exc:
        raise ClientError(str(exc), param="body") from exc
    return _submit(session, settings, kind="judge", params=request.model_dump(),
                   checkpoint=request.model_a)


@router.post("/api/finetune", response_model=JobPublic, status_code=202,
             dependencies=[Depends(require("register"))])
def queue_finetune(data: FinetuneCreate, session: Session = Depends(get_session, scope="function"),
                   settings: Settings = Depends(get_settings)) -> JobPublic:
    from arena.executors import base_folder
    from arena.tasks import JobFailed
    from arena.validation import check_template_name
    from model_workers.finetune import FinetuneConfig, FinetuneDataError, validate_data

    base = get_checkpoint(session, name=data.base)
    try:
        base_folder(base)
    except JobFailed as exc:
        raise ClientError(str(exc), param="base") from exc
    try:
        get_checkpoint(session, name=data.output_name)
    except NotFound:
        pass
    else:
        raise Conflict(f"a checkpoint named {data.output_name!r} is already registered",
                       param="output_name")
    pending = jobs.list_jobs(session, kind="finetune", limit=1000)
    if any(j.params.get("output_name") == data.output_name and
           j.state in ("queued", "running") for j in pending):
        raise Conflict(f"a fine-tuning job already produces {data.output_name!r}",
                       param="output_name")
    template = data.template or base.template
    if not template:
        raise ClientError(f"the base {base.name!r} has no conversation template; name one",
                          param="template")
    check_template_name(template)
    try:
        config = FinetuneConfig(**data.config)
    except ValueError as exc:
        raise ClientError(f"config: {exc}", param="config") from exc
    try:
        summary = validate_data(data.data, mode=config.mode, data_format=config.data_format)
    except (FinetuneDataError, OSError) as exc:
        raise ClientError(str(exc), param="data") from exc
    params = {**data.model_dump(), "template": template,
              "config": config.model_dump(mode="json"), "records": summary.records,
              "data_fingerprint": summary.fingerprint}
    return _submit(session, settings, kind="finetune", params=params, checkpoint=base.name)


@router.get("/api/runs")
def evaluation_runs(checkpoint: str | None = Query(None),
                    reference: str | None = Query(None),
                    session: Session = Depends(get_session, scope="function"),
                    settings: Settings = Depends(get_settings)) -> dict[str, Any]:
    """Evaluation state per checkpoint: its benchmark and judge jobs (newest first) and the
    finished results."""
    rows = jobs.list_jobs(session, checkpoint=checkpoint, limit=1000)
    runs = [jobs.to_public(j).model_dump(mode="json", exclude={"params", "progress"})
            | {"suite": j.params.get("suite"), "reference": j.params.get("model_b"),
               "done": j.progress.get("done"), "total": j.progress.get("total")}
            for j in rows if j.kind in ("bench", "judge")]
    reference, ratios = results.judge_ratios(session, reference or settings.leaderboard_reference)
    return {"runs": runs, "benchmarks": results.benchmark_scores(session),
            "judge_reference": reference, "judge_ratios": ratios}


@router.get("/api/runs/judge.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
def judge_plot(reference: str | None = Query(None),
               session: Session = Depends(get_session, scope="function"),
               settings: Settings = Depends(get_settings)) -> Response:
    """Every model's judge ratio against the reference, per question category."""
    from arena.results_plots import plot_judge

    reference, ratios = results.judge_ratios(session, reference or settings.leaderboard_reference)
    return Response(plot_judge(ratios, reference or "(none)"), media_type="image/png")


@router.get("/api/jobs/{job_id}/subjects.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
def bench_plot(job_id: int, session: Session = Depends(get_session, scope="function")) -> Response:
    """A finished benchmark run's accuracy per subject."""
    from arena.results_plots import plot_subjects

    job = jobs.get_job(session, job_id)
    if job.kind != "bench" or job.result is None:
        raise ClientError(f"job {job_id} is not a finished benchmark run", param="job_id")
    return Response(plot_subjects({**job.result, "model": job.checkpoint}),
                    media_type="image/png")
