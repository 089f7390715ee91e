"""``arena bench``: score a checkpoint on MMLU, C-Eval or CMMLU and show stored results.

``run`` hands its options to :mod:`benchmarks.runs` (the same call the job queue makes): through
the control plane's ``/api/score`` (``--model``) or in-process with transformers
(``--model-path``), with the native engine or lm-eval's (``--engine``), and prints accuracy per
category and overall; ``show`` prints a stored result JSON the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from arena.cli.client import err
from benchmarks.engine import BenchmarkResults, ItemResult, ceval_submission
from benchmarks.prompts import DEFAULT_SHOTS
from benchmarks.runs import (
    BenchmarkRequestError,
    BenchRequest,
    run_benchmark,
    run_benchmark_local,
    validate_request,
)
from benchmarks.scorers import DEFAULT_BATCH, ScoringError
from benchmarks.suites import get_suite

app = typer.Typer(help="Multiple-choice benchmarks: MMLU, C-Eval, CMMLU.", no_args_is_help=True)
out = Console()


def _bad(exc: BenchmarkRequestError) -> typer.BadParameter:
    return typer.BadParameter(exc.message, param_hint=f"--{exc.field.replace('_', '-')}")


def _request(suite: str, data: Path, split: str | None, shots: int, limit: int | None,
             subjects: str | None, engine: str, batch_size: int,
             prompt_format: str | None) -> BenchRequest:
    names = None if subjects is None else [s.strip() for s in subjects.split(",") if s.strip()]
    request = BenchRequest(suite=suite, data=str(data), split=split, shots=shots, limit=limit,
                           subjects=names, engine=engine, batch_size=batch_size,
                           prompt_format=prompt_format)
    try:
        return validate_request(request)
    except BenchmarkRequestError as exc:
        raise _bad(exc) from None


def _submission(results: dict[str, Any]) -> dict[str, dict[str, str]]:
    items = [ItemResult(**{k: v for k, v in row.items() if k != "correct"})
             for row in results["items"]]
    return ceval_submission(BenchmarkResults(suite=results["suite"], shots=results["shots"],
                                             fingerprint=results["fingerprint"], items=items))


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
    fewer = summary.get("items_with_fewer_shots")
    note = f" ({fewer} with fewer to fit the context)" if fewer else ""
    out.print(f"items {items}, shots {summary['shots']}{note}, engine "
              f"{summary.get('engine', 'native')}, data fingerprint {summary['fingerprint']}",
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
    engine: Annotated[str, typer.Option(help="native | lm-eval (lm-eval 0.4.13's own tasks).")] = "native",
    prompt_format: Annotated[str | None, typer.Option(help="official | lm-eval (default: official "
                                                           "for native, lm-eval for lm-eval).")] = None,
    output: Annotated[Path | None, typer.Option(help="Write the full result JSON here.")] = None,
    submission: Annotated[Path | None, typer.Option(help="C-Eval test: write the official "
                                                         "submission JSON here.")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts per scoring batch.")] = DEFAULT_BATCH,
    device: Annotated[str, typer.Option(help="Torch device for --model-path.")] = "cpu",
) -> None:
    """Score a model k-shot on a benchmark; print accuracy per category and overall."""
    request = _request(suite, data, split, shots, limit, subjects, engine, batch_size,
                       prompt_format)
    if submission is not None and (request.suite, request.split) != ("ceval", "test"):
        raise typer.BadParameter("only for --suite ceval --split test", param_hint="--submission")
    if (model is None) == (model_path is None):
        raise typer.BadParameter("give exactly one of --model NAME and --model-path DIR",
                                 param_hint="--model / --model-path")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    title = f"{get_suite(request.suite).title} {request.split} ({request.engine})"
    try:
        with Progress(*columns, console=err) as progress:
            task = progress.add_task(title, total=None)

            def on_progress(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            if model_path is not None:
                summary = run_benchmark_local(request, model_path=model_path, device=device,
                                              on_progress=on_progress)
            else:
                from arena.settings import ClientSettings

                settings = ClientSettings()
                summary = run_benchmark(request, model=str(model), base_url=url or settings.url,
                                        api_key=settings.key(), on_progress=on_progress)
    except BenchmarkRequestError as exc:
        raise _bad(exc) from None
    except (ScoringError, RuntimeError, ValueError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    render(summary)
    if output is not None:
        output.write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
        out.print(f"results written to {output}")
    if submission is not None:
        submission.write_text(json.dumps(_submission(summary), ensure_ascii=False, indent=1),
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
