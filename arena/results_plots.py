"""Pictures of evaluation results as PNG bytes: a fine-tuning loss curve, a judge ratio per
category, benchmark accuracy per subject. matplotlib loads only when one is drawn."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from arena.ratings_plots import _figure, _png


def _message(fig: Any, text: str) -> bytes:
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    return _png(fig)


def plot_loss(job: Any, points: Sequence[Any]) -> bytes:
    """Training loss per optimizer step of a fine-tuning job."""
    fig = _figure(6.0, 3.5)
    if not points:
        return _message(fig, f"job {job.id}: no training steps yet ({job.state})")
    ax = fig.add_subplot()
    ax.plot([p.step for p in points], [p.loss for p in points], marker="." if len(points) < 60
            else None)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    name = job.params.get("output_name", "") if job.params else ""
    ax.set_title(f"job {job.id} {name} — {job.state}")
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_categories(values: Mapping[str, Mapping[str, float | None]], *, ylabel: str,
                    title: str, reference_line: float | None = None) -> bytes:
    """Grouped bars: one group per category, one bar per series (model)."""
    series = list(values)
    categories = sorted({c for per in values.values() for c, v in per.items() if v is not None})
    fig = _figure(max(5.0, 0.5 * len(categories) * max(1, len(series)) + 2.0), 4.0)
    if not categories:
        return _message(fig, "no results yet")
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(series))
    for k, name in enumerate(series):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(categories))]
        ys = [values[name].get(c) or 0.0 for c in categories]
        ax.bar(xs, ys, width=width, label=name)
    if reference_line is not None:
        ax.axhline(reference_line, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(categories)), categories, rotation=45, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_judge(ratios: Mapping[str, Mapping[str, Any]], reference: str) -> bytes:
    """Each model's score ratio against ``reference`` per question category (100% = equal)."""
    values = {model: dict(r.get("by_category") or {}) for model, r in ratios.items()}
    return plot_categories(values, ylabel="score ratio (%)", reference_line=100.0,
                           title=f"LLM-judge score ratio against {reference}, per category")


def plot_subjects(summary: Mapping[str, Any]) -> bytes:
    """Accuracy per subject of one benchmark result, sorted, with the overall accuracy."""
    subjects = {s: r.get("accuracy") for s, r in (summary.get("subjects") or {}).items()
                if r.get("accuracy") is not None}
    fig = _figure(max(5.0, 0.22 * len(subjects) + 2.0), 4.0)
    if not subjects:
        return _message(fig, "no scored subjects")
    ordered = sorted(subjects.items(), key=lambda kv: kv[1], reverse=True)
    ax = fig.add_subplot()
    ax.bar(range(len(ordered)), [100 * v for _, v in ordered])
    if summary.get("accuracy") is not None:
        ax.axhline(100 * summary["accuracy"], color="grey", linestyle="--", linewidth=1,
                   label=f"overall {100 * summary['accuracy']:.1f}%")
        ax.legend(fontsize="small")
    ax.axhline(25, color="red", linestyle=":", linewidth=1)  # chance with four choices
    ax.set_xticks(range(len(ordered)), [s for s, _ in ordered], rotation=90, fontsize=7)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{summary.get('suite', '')} {summary.get('split', '')} — "
                 f"{summary.get('model', '')}, per subject")
    return _png(fig)
