"""``arena bench``: score a checkpoint on MMLU, C-Eval or CMMLU and show stored results.

``run`` scores subject by subject (so the progress bar can count items) through the control
plane's ``/api/score`` (``--model``) or in-process with transformers (``--model-path``), then
prints accuracy per category and overall; ``show`` prints a stored result JSON the same way.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from arena.cli.client import err
from benchmarks.engine import BenchmarkResults, ItemResult, ceval_submission, score_items, summarize
from benchmarks.loaders import BenchmarkData, BenchmarkDataError, Item, load_benchmark
from benchmarks.prompts import DEFAULT_SHOTS
from benchmarks.scorers import DEFAULT_BATCH, LocalScorer, Scorer, ScoringError, WorkerScorer
from benchmarks.suites import Suite, get_suite

app = typer.Typer(help="Multiple-choice benchmarks: MMLU, C-Eval, CMMLU.", no_args_is_help=True)
out = Console()
DEFAULT_SPLIT = {"mmlu": "test", "ceval": "val", "cmmlu": "test"}  # C-Eval test hides answers
CHUNK = 4  # scorer batches per progress step


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What ``bench run`` scores, after its options are checked."""

    suite: Suite
    split: str
    shots: int
    limit: int | None
    subjects: list[str] | None


class ProgressScorer:
    """Wraps a scorer: hands it ``chunk`` prompts at a time and advances the progress bar."""

    def __init__(self, inner: Scorer, progress: Progress, task: Any, *, chunk: int) -> None:
        self.inner, self.progress, self.task, self.chunk = inner, progress, task, chunk

    async def score(self, prompts: list[str], candidates: list[str]) -> list[list[float]]:
        results: list[list[float]] = []
        for start in range(0, len(prompts), self.chunk):
            part = prompts[start: start + self.chunk]
            results += await self.inner.score(part, candidates)
            self.progress.advance(self.task, len(part))
        return results


def _suite(name: str) -> Suite:
    try:
        return get_suite(name)
    except KeyError as exc:
        raise typer.BadParameter(exc.args[0], param_hint="--suite") from None


def _subjects(suite: Suite, raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    names = [s.strip() for s in raw.split(",") if s.strip()]
    if not names:
        raise typer.BadParameter("no subject given", param_hint="--subjects")
    try:
        return [suite.subject(name).name for name in names]
    except KeyError as exc:
        raise typer.BadParameter(exc.args[0], param_hint="--subjects") from None


def _spec(suite_name: str, split: str | None, shots: int, limit: int | None,
          subjects: str | None) -> RunSpec:
    suite = _suite(suite_name)
    chosen = split or DEFAULT_SPLIT[suite.name]
    if chosen == "dev" or chosen not in suite.splits:
        known = ", ".join(s for s in suite.splits if s != "dev")
        raise typer.BadParameter(f"{suite.title} has no split {chosen!r} to score (it has {known})",
                                 param_hint="--split")
    if shots < 0:
        raise typer.BadParameter("must be 0 or more", param_hint="--shots")
    if limit is not None and limit < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--limit")
    return RunSpec(suite=suite, split=chosen, shots=shots, limit=limit,
                   subjects=_subjects(suite, subjects))


def _load(data: Path, spec: RunSpec) -> BenchmarkData:
    if not data.exists():
        raise typer.BadParameter(f"{data} does not exist", param_hint="--data")
    try:
        return load_benchmark(data, spec.suite.name, splits=["dev", spec.split],
                              subjects=spec.subjects)
    except BenchmarkDataError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


def _scorer(model: str | None, model_path: Path | None, url: str | None, *, batch_size: int,
            device: str) -> tuple[Scorer, str]:
    """The scorer and the model's name for the report."""
    if model is not None and model_path is None:
        from arena.settings import ClientSettings

        settings = ClientSettings()
        return WorkerScorer(url or settings.url, model, endpoint="/api/score",
                            batch_size=batch_size, api_key=settings.key()), model
    if model_path is None or model is not None:
        raise typer.BadParameter("give exactly one of --model NAME and --model-path DIR",
                                 param_hint="--model / --model-path")
    if not model_path.is_dir():
        raise typer.BadParameter(f"{model_path} is not a folder", param_hint="--model-path")
    return LocalScorer(model_path, batch_size=batch_size, device=device), str(model_path)


async def _score_all(groups: dict[str, list[Item]], dev: list[Item], scorer: Scorer,
                     spec: RunSpec, fingerprint: str) -> BenchmarkResults:
    """Score subject by subject; the progress bar counts items."""
    total = sum(len(items) for items in groups.values())
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    results: list[ItemResult] = []
    with Progress(*columns, console=err) as progress:
        task = progress.add_task(f"{spec.suite.title} {spec.split}", total=total)
        for subject, items in groups.items():
            progress.update(task, description=f"{spec.suite.title} {spec.split}: {subject}")
            chunk = getattr(scorer, "batch_size", DEFAULT_BATCH) * CHUNK
            wrapped = ProgressScorer(scorer, progress, task, chunk=chunk)
            scored = await score_items(items, scorer=wrapped, dev=dev, shots=spec.shots)
            results += scored.items
    return summarize(spec.suite.name, results, shots=spec.shots, fingerprint=fingerprint)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def render(summary: dict[str, Any]) -> None:
    """Accuracy per category (and group), overall micro and macro, items, shots, fingerprint."""
    suite = get_suite(summary["suite"])
    title = f"{suite.title} {summary.get('split', '')} — {summary.get('model', '?')}"
    table = Table(title=title.strip())
    for column in ("Category", "Accuracy", "Correct", "Total"):
        table.add_column(column, justify="left" if column == "Category" else "right")
    for label, key in (("", "categories"), (" (group)", "groups")):
        for name, row in summary.get(key, {}).items():
            table.add_row(f"{name}{label}", _fmt(row["accuracy"]), str(row["correct"]),
                          str(row["total"]))
    table.add_section()
    table.add_row("overall (micro)", _fmt(summary["accuracy"]), str(summary["correct"]),
                  str(summary["total"]))
    table.add_row("macro over subjects", _fmt(summary["macro_accuracy"]), "",
                  str(len(summary.get("subjects", {}))))
    out.print(table)
    items = summary.get("n_items", len(summary.get("items", [])))
    out.print(f"items {items}, shots {summary['shots']}, data fingerprint {summary['fingerprint']}",
              soft_wrap=True)
    if summary["accuracy"] is None:
        out.print("no answers in this split: accuracy is not computed")


@app.command()
def run(
    suite: Annotated[str, typer.Option(help="mmlu | ceval | cmmlu")],
    data: Annotated[Path, typer.Option(help="The dataset: official folder or zip.")],
    model: Annotated[str | None, typer.Option(help="Registered model, scored via /api/score.")] = None,
    model_path: Annotated[Path | None, typer.Option(help="Checkpoint folder, scored in-process.")] = None,
    url: Annotated[str | None, typer.Option(help="Control-plane URL (env ARENA_URL).")] = None,
    split: Annotated[str | None, typer.Option(help="test | val (default: test; val for ceval).")] = None,
    shots: Annotated[int, typer.Option(help="Dev examples per prompt.")] = DEFAULT_SHOTS,
    limit: Annotated[int | None, typer.Option(help="At most N items per subject.")] = None,
    subjects: Annotated[str | None, typer.Option(help="Comma-separated subjects (default all).")] = None,
    output: Annotated[Path | None, typer.Option(help="Write the full result JSON here.")] = None,
    submission: Annotated[Path | None, typer.Option(help="C-Eval test: write the official "
                                                         "submission JSON here.")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts per scoring batch.")] = DEFAULT_BATCH,
    device: Annotated[str, typer.Option(help="Torch device for --model-path.")] = "cpu",
) -> None:
    """Score a model k-shot on a benchmark; print accuracy per category and overall."""
    spec = _spec(suite, split, shots, limit, subjects)
    if submission is not None and (spec.suite.name, spec.split) != ("ceval", "test"):
        raise typer.BadParameter("only for --suite ceval --split test", param_hint="--submission")
    dataset = _load(data, spec)
    scorer, model_name = _scorer(model, model_path, url, batch_size=batch_size, device=device)
    groups = {s: items[: spec.limit] for s, items in dataset.by_subject(spec.split).items()}
    try:
        results = asyncio.run(_score_all(groups, dataset.items["dev"], scorer, spec,
                                         dataset.fingerprint))
    except (ScoringError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    summary = {**results.to_dict(), "split": spec.split, "model": model_name, "data": str(data),
               "limit": spec.limit, "n_items": len(results.items)}
    render(summary)
    if output is not None:
        output.write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
        out.print(f"results written to {output}")
    if submission is not None:
        submission.write_text(json.dumps(ceval_submission(results), ensure_ascii=False, indent=1),
                              encoding="utf-8")
        out.print(f"C-Eval submission written to {submission}")


@app.command()
def show(file: Annotated[Path, typer.Argument(help="A result JSON from `bench run --output`.")]) -> None:
    """Print a stored result as the same table."""
    try:
        summary = json.loads(file.read_text(encoding="utf-8"))
        render(summary)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise typer.BadParameter(f"not a benchmark result: {exc}", param_hint="FILE") from None
