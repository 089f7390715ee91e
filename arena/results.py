"""Evaluation results per checkpoint, read from finished jobs: the leaderboard's benchmark and
judge columns, and ``arena runs``.

The newest succeeded run counts: a benchmark per (checkpoint, suite), a judge ratio per
(checkpoint, reference).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlmodel import Session, col, select

from arena.models import Job

SUITES = ("mmlu", "ceval", "cmmlu")


def _succeeded(session: Session, kind: str) -> list[Job]:
    query = (select(Job).where(Job.kind == kind, Job.state == "succeeded")
             .order_by(col(Job.id)))
    return list(session.exec(query).all())


def benchmark_scores(session: Session) -> dict[str, dict[str, dict[str, Any]]]:
    """``{checkpoint: {suite: {accuracy, macro_accuracy, split, shots, n_items, job_id}}}``."""
    scores: dict[str, dict[str, dict[str, Any]]] = {}
    for job in _succeeded(session, "bench"):
        result = job.result or {}
        if job.checkpoint is None or result.get("suite") not in SUITES:
            continue
        scores.setdefault(job.checkpoint, {})[result["suite"]] = {
            "accuracy": result.get("accuracy"), "macro_accuracy": result.get("macro_accuracy"),
            "split": result.get("split"), "shots": result.get("shots"),
            "n_items": result.get("n_items"), "engine": result.get("engine", "native"),
            "categories": result.get("categories", {}), "job_id": job.id}
    return scores


def _ratio_runs(session: Session) -> list[tuple[Job, str, str]]:
    """Succeeded ratio runs as ``(job, model, reference)``."""
    runs = []
    for job in _succeeded(session, "judge"):
        result = job.result or {}
        models = result.get("models") or []
        if result.get("kind") == "ratio" and len(models) == 2:
            runs.append((job, models[0], models[1]))
    return runs


def judge_ratios(session: Session,
                 reference: str | None = None) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """``(reference, {model: {ratio, ci_low, ci_high, n, wins, ties, losses, beat_rate,
    by_category, judge_model, job_id}})`` for ratio runs of each model against ``reference``
    (percentages); without one, against the reference most runs were judged against."""
    runs = _ratio_runs(session)
    if reference is None:
        counts = Counter(ref for _, _, ref in runs)
        reference = counts.most_common(1)[0][0] if counts else None
    ratios: dict[str, dict[str, Any]] = {}
    for job, model, ref in runs:
        if ref != reference:
            continue
        result = (job.result or {}).get("result") or {}
        overall = result.get("overall") or {}
        ratios[model] = {**{k: overall.get(k) for k in ("ratio", "ci_low", "ci_high", "n", "wins",
                                                        "ties", "losses", "beat_rate")},
                         "by_category": {c: s.get("ratio") for c, s in
                                         (result.get("by_category") or {}).items()},
                         "judge_model": (job.result or {}).get("judge_model"),
                         "job_id": job.id}
    return reference, ratios
