"""The evaluation policy: what is queued when a checkpoint is registered.

Settings (``ARENA_EVAL_*``) name the benchmark suites with their data, the k-shot and item
limit, and a judge reference (a checkpoint, or ``parent``). Queuing is idempotent: a checkpoint
that already has policy jobs gets no second set, so a fine-tuning job that runs again after a
crash does not evaluate its candidate twice.
"""

from __future__ import annotations

import logging

from sqlalchemy.engine import Engine
from sqlmodel import select

from arena import jobs
from arena.db import session_scope
from arena.models import Checkpoint, Job
from arena.settings import Settings

logger = logging.getLogger(__name__)


def planned(settings: Settings, checkpoint: Checkpoint, parent: str | None) -> list[tuple[str, dict]]:
    """``(kind, params)`` of the runs the policy wants for ``checkpoint``."""
    runs: list[tuple[str, dict]] = []
    for suite, data in settings.eval_suites.items():
        runs.append(("bench", {"suite": suite, "data": data, "shots": settings.eval_shots,
                               "limit": settings.eval_limit}))
    reference = settings.eval_judge_reference
    if reference == "parent":
        reference = parent
    if reference and reference != checkpoint.name:
        runs.append(("judge", {"kind": "ratio", "questions": settings.eval_judge_questions,
                               "model_a": checkpoint.name, "model_b": reference,
                               "max_tokens": settings.eval_judge_max_tokens}))
    return runs


def queue_evaluations(engine: Engine, settings: Settings, name: str) -> list[Job]:
    """Queue the policy's runs for checkpoint ``name`` (once). Returns the jobs queued."""
    with session_scope(engine) as session:
        row = session.exec(select(Checkpoint).where(Checkpoint.name == name)).first()
        if row is None:
            return []
        parent = session.get(Checkpoint, row.parent_id) if row.parent_id else None
        runs = planned(settings, row, parent.name if parent else None)
        already = session.exec(select(Job).where(Job.checkpoint == name,
                                                 Job.trigger == "policy")).first()
        if not runs or already is not None:
            return []
    queued = []
    for kind, params in runs:
        try:
            queued.append(jobs.submit(engine, kind=kind, params=params, checkpoint=name,
                                      trigger="policy", max_attempts=settings.job_max_attempts))
        except Exception:
            logger.exception("could not queue the %s run of %s", kind, name)
    return queued
