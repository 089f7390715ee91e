"""Jobs in the database: submit, claim with a lease, renew, finish, cancel, reap.

Every state change is one conditional ``UPDATE`` (``WHERE state = … AND lease_owner = …``), so
two job workers handed the same message, or a reaper racing a slow worker, cannot both win: the
loser sees ``rowcount == 0`` and backs off. That is what makes tasks safe to run twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from arena.db import session_scope
from arena.errors import ClientError, Conflict, NotFound, ServerError
from arena.models import FINAL_STATES, Job, JobEvent, JobMetric, JobPublic, utcnow

logger = logging.getLogger(__name__)
KINDS = ("finetune", "bench", "judge")
STATES = ("queued", "running", "succeeded", "failed", "cancelled")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ClientError(f"unknown job kind {kind!r}: use one of {', '.join(KINDS)}", param="kind")


def log_event(session: Session, job_id: int, message: str, level: str = "info") -> None:
    session.add(JobEvent(job_id=job_id, tstamp=time.time(), level=level, message=message))


def create_job(session: Session, *, kind: str, params: dict[str, Any], checkpoint: str | None,
               trigger: str = "api", max_attempts: int = 3) -> Job:
    _check_kind(kind)
    # a queued job's lease_expires is when its message was last sent (see resend_stale_queued)
    job = Job(kind=kind, params=params, checkpoint=checkpoint, trigger=trigger,
              max_attempts=max_attempts, lease_expires=time.time())
    session.add(job)
    session.flush()
    assert job.id is not None
    log_event(session, job.id, f"queued ({trigger})")
    return job


def enqueue(job: Job) -> None:
    """Hand the job's id to the broker, on the queue of its kind."""
    from arena.celery_app import celery_app

    celery_app().send_task("arena.run_job", args=[job.id], queue=job.kind)


def submit(engine: Engine, *, kind: str, params: dict[str, Any], checkpoint: str | None,
           trigger: str = "api", max_attempts: int = 3) -> Job:
    """Store a queued job, then send it. If the broker cannot be reached the job is failed
    with that message (nothing waits forever on a message that was never sent)."""
    with session_scope(engine) as session:
        job = create_job(session, kind=kind, params=params, checkpoint=checkpoint,
                         trigger=trigger, max_attempts=max_attempts)
    try:
        enqueue(job)
    except Exception as exc:  # kombu raises many kinds; the message is what matters
        message = f"the job broker could not be reached: {exc}"
        with session_scope(engine) as session:
            _finish_row(session, job.id, state="failed", error=message)  # type: ignore[arg-type]
        raise ServerError(message) from exc
    return job


def to_public(job: Job) -> JobPublic:
    return JobPublic.model_validate(job.model_dump())


def get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist", param="job_id")
    return job


def list_jobs(session: Session, *, kind: str | None = None, state: str | None = None,
              checkpoint: str | None = None, limit: int = 100) -> list[Job]:
    if kind is not None:
        _check_kind(kind)
    if state is not None and state not in STATES:
        raise ClientError(f"unknown state {state!r}: use one of {', '.join(STATES)}",
                          param="state")
    query = select(Job)
    if kind is not None:
        query = query.where(Job.kind == kind)
    if state is not None:
        query = query.where(Job.state == state)
    if checkpoint is not None:
        query = query.where(Job.checkpoint == checkpoint)
    query = query.order_by(col(Job.id).desc()).limit(limit)
    return list(session.exec(query).all())


def events(session: Session, job_id: int, *, after: int = 0) -> list[JobEvent]:
    get_job(session, job_id)
    query = (select(JobEvent).where(JobEvent.job_id == job_id, col(JobEvent.id) > after)
             .order_by(col(JobEvent.id)))
    return list(session.exec(query).all())


def metrics(session: Session, job_id: int) -> list[JobMetric]:
    get_job(session, job_id)
    query = select(JobMetric).where(JobMetric.job_id == job_id).order_by(col(JobMetric.step))
    return list(session.exec(query).all())


# --- the worker side -------------------------------------------------------------------------


def claim(engine: Engine, job_id: int, *, owner: str, lease_s: float) -> Job | None:
    """Take a queued job: ``running`` under ``owner``'s lease. None when the job is gone,
    already taken, finished, cancelled, or out of attempts."""
    now = time.time()
    with session_scope(engine) as session:
        result = session.exec(  # type: ignore[call-overload]
            update(Job)
            .where(col(Job.id) == job_id, col(Job.state) == "queued",
                   col(Job.attempts) < col(Job.max_attempts))
            .values(state="running", lease_owner=owner, lease_expires=now + lease_s,
                    attempts=col(Job.attempts) + 1, started_at=utcnow(), error=None)
        )
        if result.rowcount != 1:
            return None
        job = get_job(session, job_id)
        log_event(session, job_id, f"started by {owner} (attempt {job.attempts} of "
                                   f"{job.max_attempts})")
        return job


def renew(engine: Engine, job_id: int, *, owner: str, lease_s: float) -> tuple[bool, bool]:
    """Extend the lease. Returns ``(still_ours, cancel_requested)``."""
    with session_scope(engine) as session:
        result = session.exec(  # type: ignore[call-overload]
            update(Job)
            .where(col(Job.id) == job_id, col(Job.state) == "running",
                   col(Job.lease_owner) == owner)
            .values(lease_expires=time.time() + lease_s)
        )
        if result.rowcount != 1:
            return False, True
        job = get_job(session, job_id)
        return True, job.cancel_requested


def set_progress(engine: Engine, job_id: int, *, owner: str, progress: dict[str, Any],
                 new_metrics: Iterable[JobMetric] = ()) -> bool:
    with session_scope(engine) as session:
        result = session.exec(  # type: ignore[call-overload]
            update(Job)
            .where(col(Job.id) == job_id, col(Job.state) == "running",
                   col(Job.lease_owner) == owner)
            .values(progress=progress)
        )
        if result.rowcount != 1:
            return False
        for metric in new_metrics:
            session.add(metric)
        return True


def add_event(engine: Engine, job_id: int, message: str, level: str = "info") -> None:
    with session_scope(engine) as session:
        log_event(session, job_id, message, level)


def _finish_row(session: Session, job_id: int, *, state: str, owner: str | None = None,
                result: dict[str, Any] | None = None, result_path: str | None = None,
                error: str | None = None, output_checkpoint: str | None = None) -> bool:
    where = [col(Job.id) == job_id, col(Job.state).not_in(FINAL_STATES)]
    if owner is not None:
        where.append(col(Job.lease_owner) == owner)
    values: dict[str, Any] = {"state": state, "finished_at": utcnow(), "lease_owner": None,
                              "error": error}
    if result is not None:
        values["result"] = result
    if result_path is not None:
        values["result_path"] = result_path
    if output_checkpoint is not None:
        values["output_checkpoint"] = output_checkpoint
    done = session.exec(update(Job).where(*where).values(**values))  # type: ignore[call-overload]
    if done.rowcount != 1:
        return False
    log_event(session, job_id, state if error is None else f"{state}: {error}",
              "error" if state == "failed" else "info")
    return True


def finish(engine: Engine, job_id: int, *, owner: str, state: str, **fields: Any) -> bool:
    """End a running job that ``owner`` still holds. False if it lost the lease meanwhile."""
    with session_scope(engine) as session:
        return _finish_row(session, job_id, state=state, owner=owner, **fields)


def request_cancel(engine: Engine, job_id: int) -> Job:
    """Cancel a queued job at once; ask a running one's worker to stop (it saves and ends)."""
    with session_scope(engine) as session:
        job = get_job(session, job_id)
        if job.state in FINAL_STATES:
            raise Conflict(f"job {job_id} has already {job.state}", param="job_id")
        if job.state == "queued":
            _finish_row(session, job_id, state="cancelled")
        else:
            session.exec(update(Job).where(col(Job.id) == job_id)  # type: ignore[call-overload]
                         .values(cancel_requested=True))
            log_event(session, job_id, "cancellation requested")
    with session_scope(engine) as session:
        return get_job(session, job_id)


def reap(engine: Engine) -> list[Job]:
    """Running jobs whose lease expired (their worker died): queued again, or failed once they
    used all their attempts. Returns the jobs to send to the broker again."""
    now = time.time()
    requeued: list[Job] = []
    with session_scope(engine) as session:
        lost = session.exec(select(Job).where(Job.state == "running",
                                              col(Job.lease_expires) < now)).all()
        for job in lost:
            assert job.id is not None
            owner = job.lease_owner
            if job.cancel_requested:
                _finish_row(session, job.id, state="cancelled")
                continue
            if job.attempts >= job.max_attempts:
                _finish_row(session, job.id, state="failed",
                            error=f"its job worker was lost {job.attempts} times "
                                  f"(last: {owner}); giving up")
                continue
            done = session.exec(  # type: ignore[call-overload]
                update(Job)
                .where(col(Job.id) == job.id, col(Job.state) == "running",
                       col(Job.lease_owner) == owner)
                .values(state="queued", lease_owner=None, lease_expires=now)
            )
            if done.rowcount == 1:
                log_event(session, job.id, f"worker {owner} stopped renewing its lease; "
                                           "queued again", "warning")
                requeued.append(job)
    return requeued


def reap_and_resend(engine: Engine) -> int:
    jobs = reap(engine)
    for job in jobs:
        try:
            enqueue(job)
        except Exception:  # still queued: resend_stale_queued tries again later
            logger.exception("could not re-send job %s", job.id)
    return len(jobs)


def resend_stale_queued(engine: Engine, *, older_than_s: float) -> int:
    """Queued jobs nobody took for a long time (their message was lost with a broker that
    keeps no unacknowledged copy): sent again. A duplicate is harmless: ``claim`` takes a job
    once."""
    cutoff = time.time() - older_than_s
    with session_scope(engine) as session:
        stale = list(session.exec(select(Job).where(Job.state == "queued",
                                                    col(Job.lease_expires) < cutoff)).all())
        for job in stale:
            session.exec(update(Job).where(col(Job.id) == job.id)  # type: ignore[call-overload]
                         .values(lease_expires=time.time()))
    for job in stale:
        try:
            enqueue(job)
        except Exception:
            logger.exception("could not re-send job %s", job.id)
    return len(stale)
