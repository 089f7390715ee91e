"""The one Celery task, ``arena.run_job``: claim the job, keep its lease, run it, record the end.

The message carries only the job id. The task is safe to run twice: ``claim`` lets one worker
take a queued job; a second delivery (or one for a finished job) does nothing. While the job
runs, a thread renews the lease and watches for a cancellation; if this process dies, the lease
expires and a reaper (in every job worker) queues the job again.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from arena import jobs
from arena.celery_app import celery_app
from arena.db import make_engine
from arena.models import Job, JobMetric
from arena.settings import ClientSettings, Settings, get_settings

logger = logging.getLogger(__name__)
PROGRESS_EVERY_S = 0.5  # progress writes are throttled to this


class JobCancelled(Exception):
    """The job's cancellation was requested; the executor stopped."""


class JobFailed(Exception):
    """An expected failure, reported with this message only (no traceback)."""


@cache
def engine() -> Engine:
    return make_engine(get_settings().resolved_database_url())


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class JobContext:
    """What an executor gets: the job, settings, and calls to report progress and check for a
    cancellation."""

    job: Job
    owner: str
    settings: Settings
    engine: Engine
    lease: Lease
    _last: float = 0.0
    _pending: list[JobMetric] = field(default_factory=list)

    @property
    def job_id(self) -> int:
        assert self.job.id is not None
        return self.job.id

    def client(self) -> tuple[str, str | None]:
        """The control plane's URL and API key (ARENA_URL, ARENA_API_KEY / ARENA_ADMIN_KEY)."""
        client = ClientSettings()
        return client.url, client.key()

    def should_stop(self) -> bool:
        return self.lease.cancelled.is_set() or self.lease.lost.is_set()

    def check(self) -> None:
        if self.should_stop():
            raise JobCancelled()

    def progress(self, force: bool = False, metric: JobMetric | None = None,
                 **values: Any) -> None:
        if metric is not None:
            self._pending.append(metric)
        now = time.monotonic()
        if not force and now - self._last < PROGRESS_EVERY_S:
            return
        self._last = now
        self.job.progress = {**self.job.progress, **values, "updated": time.time()}
        pending, self._pending = self._pending, []
        jobs.set_progress(self.engine, self.job_id, owner=self.owner,
                          progress=self.job.progress, new_metrics=pending)

    def event(self, message: str, level: str = "info") -> None:
        jobs.add_event(self.engine, self.job_id, message, level)

    def results_path(self, suffix: str) -> Path:
        folder = self.settings.data_dir / "results"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"job-{self.job_id}-{suffix}.json"


class Lease(threading.Thread):
    """Renews a running job's lease every third of its length; notices cancellations and a
    lease lost to the reaper (this worker was presumed dead)."""

    def __init__(self, engine: Engine, job_id: int, owner: str, lease_s: float) -> None:
        super().__init__(name=f"lease-{job_id}", daemon=True)
        self.engine, self.job_id, self.owner, self.lease_s = engine, job_id, owner, lease_s
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.lease_s / 3):
            try:
                ours, cancel = jobs.renew(self.engine, self.job_id, owner=self.owner,
                                          lease_s=self.lease_s)
            except Exception:  # a busy database: try again at the next tick
                logger.exception("lease renewal of job %s failed", self.job_id)
                continue
            if not ours:
                self.lost.set()
                return
            if cancel:
                self.cancelled.set()

    def __enter__(self) -> Lease:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()


Executor = Callable[[JobContext], dict[str, Any]]


def _executors() -> dict[str, Executor]:
    from arena import executors

    return {"bench": executors.run_bench, "judge": executors.run_judge,
            "finetune": executors.run_finetune}


def run_job_now(job_id: int, *, settings: Settings | None = None,
                db: Engine | None = None) -> str | None:
    """Claim and run a job in this process; returns its final state, None if not claimed."""
    settings = settings or get_settings()
    db = db or engine()
    owner = owner_id()
    job = jobs.claim(db, job_id, owner=owner, lease_s=settings.job_lease_s)
    if job is None:
        logger.info("job %s is not queued (taken, finished or cancelled): nothing to do", job_id)
        return None
    with Lease(db, job_id, owner, settings.job_lease_s) as lease:
        ctx = JobContext(job=job, owner=owner, settings=settings, engine=db, lease=lease)
        executor = _executors()[job.kind]
        try:
            outcome = executor(ctx)
        except JobCancelled:
            if lease.lost.is_set():
                logger.warning("job %s: lease lost to the reaper; stopping", job_id)
                return None
            jobs.finish(db, job_id, owner=owner, state="cancelled")
            return "cancelled"
        except JobFailed as exc:
            jobs.finish(db, job_id, owner=owner, state="failed", error=str(exc))
            return "failed"
        except Exception as exc:
            ctx.event(traceback.format_exc(), "error")
            jobs.finish(db, job_id, owner=owner, state="failed",
                        error=f"{type(exc).__name__}: {exc}")
            return "failed"
        ctx.progress(force=True)
        jobs.finish(db, job_id, owner=owner, state="succeeded", **outcome)
        return "succeeded"


@celery_app().task(name="arena.run_job", acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: int) -> None:
    run_job_now(int(job_id))


def dump_json(path: Path, payload: Any) -> None:
    """Write atomically: a reader never sees half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)
