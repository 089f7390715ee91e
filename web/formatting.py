"""How the UI writes numbers, times and job progress: pure functions, one place.

Absent or non-finite values show as "–". Fractions (accuracies, win rates: 0–1) and ratios that
are already percentages (the LLM-judge score ratio, 100 = as good as the reference) are kept
apart by name.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

DASH = "–"
FINAL_STATES = ("succeeded", "failed", "cancelled")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def number(value: Any, fmt: str = "{:.1f}") -> str:
    """``value`` through ``fmt``; "–" when absent."""
    return fmt.format(value) if _finite(value) else DASH


def percent(fraction: Any, digits: int = 1) -> str:
    """A fraction (0–1) as a percentage: 0.4512 → "45.1%"."""
    return f"{100 * fraction:.{digits}f}%" if _finite(fraction) else DASH


def ratio(value: Any) -> str:
    """A value that is already a percentage (the judge score ratio): 93.25 → "93.2%"."""
    return f"{value:.1f}%" if _finite(value) else DASH


def interval(low: Any, high: Any, fmt: str = "{:.1f}", suffix: str = "") -> str:
    """A confidence interval: "88.1 – 98.0%"; "–" unless both ends are known."""
    if _finite(low) and _finite(high):
        return f"{fmt.format(low)} – {fmt.format(high)}{suffix}"
    return DASH


def duration(seconds: Any) -> str:
    """A duration the way an ETA reads: "42s", "3m 05s", "2h 07m"."""
    if not _finite(seconds) or seconds < 0:
        return DASH
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def timestamp(value: Any, *, time_only: bool = False) -> str:
    """An API time (ISO 8601, naive means UTC, or unix seconds) as "YYYY-MM-DD HH:MM:SS" UTC."""
    moment: datetime | None = None
    if _finite(value):
        moment = datetime.fromtimestamp(float(value), tz=UTC)
    elif isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if moment is None:
        return DASH
    return moment.astimezone(UTC).strftime("%H:%M:%S" if time_only else "%Y-%m-%d %H:%M:%S")


def parse_job_id(text: Any) -> int | None:
    """A job id typed or picked in a text box ("12", " #12 "); None when there is none."""
    digits = str(text or "").strip().lstrip("#")
    return int(digits) if digits.isdigit() and int(digits) > 0 else None


def progress_text(progress: dict[str, Any] | None, state: str = "running") -> str:
    """A job's progress in one line: training steps, loss, learning rate, speed and ETA for a
    fine-tune; items done for an evaluation; else its stage."""
    p = progress or {}
    if _finite(p.get("total_steps")):
        bits = [f"step {p.get('step') or 0}/{p['total_steps']}"]
        if _finite(p.get("epoch")):
            bits.append(f"epoch {p['epoch']:.2f}")
        if _finite(p.get("loss")):
            bits.append(f"loss {p['loss']:.4f}")
        if _finite(p.get("learning_rate")):
            bits.append(f"lr {p['learning_rate']:.2e}")
        if _finite(p.get("tokens_per_s")):
            bits.append(f"{p['tokens_per_s']:,.0f} tokens/s")
        if _finite(p.get("mfu")):
            bits.append(f"MFU {percent(p['mfu'])}")
        if state not in FINAL_STATES and _finite(p.get("eta_s")):
            bits.append(f"ETA {duration(p['eta_s'])}")
        return " · ".join(bits)
    if _finite(p.get("total")) and p["total"]:
        done = p.get("done") or 0
        stage = f"{p['stage']}: " if p.get("stage") else ""
        return f"{stage}{done}/{p['total']} ({percent(done / p['total'], 0)})"
    return str(p.get("stage") or "")


def describe_job(job: dict[str, Any]) -> str:
    """What a job does, in a few words."""
    params = job.get("params") or {}
    kind = job.get("kind")
    if kind == "finetune":
        method = (params.get("config") or {}).get("method", "")
        return f"→ {params.get('output_name', '?')} ({method})".replace(" ()", "")
    if kind == "bench":
        split = f" {params['split']}" if params.get("split") else ""
        return f"{str(params.get('suite', '?')).upper()}{split}, {params.get('shots', '?')}-shot"
    if kind == "judge":
        against = params.get("model_b") or "answers"
        return f"{params.get('kind', 'judge')} vs {against}"
    return ""
