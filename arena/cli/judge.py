"""``arena judge ratio|pairwise|single``: LLM-as-a-judge over a question set, with progress
bars, a summary table and the full result as JSON. The run itself is
``evaluators.jobs.run_judge`` (the job queue's judge jobs call it too); judgments are cached in
a SQLite store, so a finished run re-run makes no judge calls."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from evaluators.errors import EvaluatorError, JudgeRequestError

if TYPE_CHECKING:
    from evaluators.jobs import JudgeRequest
    from evaluators.prompts import Kind

app = typer.Typer(help="Judge two models' answers with an LLM judge (ratio, pairwise, single).",
                  no_args_is_help=True)
out = Console()
err = Console(stderr=True)

QuestionsOpt = Annotated[str, typer.Option(
    "--questions", help="Question file (Vicuna/MT-bench or LLMZoo JSONL), or 'demo'.")]
ModelA = Annotated[str | None, typer.Option(
    "--model-a", help="Registered checkpoint whose answers are produced via the gateway.")]
AnswersA = Annotated[Path | None, typer.Option(
    "--answers-a", help="Answer file for side A (FastChat/Vicuna, MT-bench or LLMZoo JSONL).",
    exists=True, dir_okay=False)]
ModelB = Annotated[str | None, typer.Option("--model-b", help="Registered checkpoint, side B.")]
AnswersB = Annotated[Path | None, typer.Option(
    "--answers-b", help="Answer file for side B.", exists=True, dir_okay=False)]
JudgeModel = Annotated[str | None, typer.Option(
    "--judge-model", help="The judge's model name; default: env ARENA_JUDGE_MODEL, else gpt-4.")]
JudgeUrl = Annotated[str | None, typer.Option(
    "--judge-base-url", help="OpenAI-compatible base URL of the judge (ending in /v1); "
    "default: env ARENA_JUDGE_BASE_URL, else https://api.openai.com/v1.")]
JudgeKey = Annotated[str | None, typer.Option(
    "--judge-api-key", help="API key for the judge; default: env ARENA_JUDGE_API_KEY, else "
    "'EMPTY'.")]
JudgeRetries = Annotated[int, typer.Option(
    "--judge-retries", min=0, help="Retries per failed judge call (429, 5xx, connection).")]
Concurrency = Annotated[int, typer.Option(
    "--concurrency", min=1, help="Judge calls (and answer requests) in flight at once.")]
Store = Annotated[Path | None, typer.Option(
    "--store", help="Judgment cache (SQLite); default <ARENA_DATA_DIR>/judgments.db.")]
Output = Annotated[Path | None, typer.Option("--output", help="Write the result as JSON here.")]
Url = Annotated[str | None, typer.Option(
    "--url", help="Control-plane URL for --model-a/--model-b (env ARENA_URL).")]
ApiKey = Annotated[str | None, typer.Option(
    "--api-key", help="Control-plane API key (env ARENA_API_KEY).")]
MaxTokens = Annotated[int, typer.Option(
    "--max-tokens", min=1, help="Longest answer turn produced via the gateway, in tokens.")]


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err)


def _store_path(store: Path | None) -> Path:
    if store is not None:
        return store
    from arena.settings import Settings

    return Settings().data_dir / "judgments.db"


def _run(request: JudgeRequest, *, judge_api_key: str | None, store: Path | None,
         output: Path | None, url: str | None, api_key: str | None) -> None:
    from arena.settings import ClientSettings
    from evaluators.answering import AnsweringError
    from evaluators.jobs import run_judge

    # each failed call is logged as a warning; the CLI reports them once, after the bar
    logging.getLogger("evaluators.client").setLevel(logging.ERROR)
    client = ClientSettings()
    base = url or client.url
    store_path = _store_path(store)
    with _progress() as progress:
        bars: dict[str, Any] = {}

        def on_progress(stage: str, done: int, total: int) -> None:
            if stage not in bars:
                bars[stage] = progress.add_task(stage, total=total)
            progress.update(bars[stage], completed=done, total=total)

        try:
            payload = run_judge(request, store_path=store_path, base_url=base,
                                api_key=api_key or client.key(), judge_api_key=judge_api_key,
                                on_progress=on_progress)
        except JudgeRequestError as exc:
            progress.stop()
            raise typer.BadParameter(exc.reason, param_hint=" / ".join(
                "--" + field.replace("_", "-") for field in exc.fields)) from exc
        except AnsweringError as exc:
            progress.stop()
            err.print(f"[red]error:[/red] {exc} (control plane {base})")
            raise typer.Exit(1) from exc
        except EvaluatorError as exc:  # JudgeRunError names the judge's URL
            progress.stop()
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
    _print_summary(request.kind, payload["result"], payload["models"])
    out.print(f"judge calls: {payload['judge_calls']} (cost ${payload['cost_usd']:.4f}); "
              f"store {store_path}")
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(payload, ensure_ascii=False, indent=1) + "\n",
                          encoding="utf-8")
        out.print(f"wrote {output}")


def _pct(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.1f}%"


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _rows(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Per category, then per turn (multi-turn sets), then overall."""
    return [*result["by_category"].items(),
            *((f"turn {turn}", stats) for turn, stats in result.get("by_turn", {}).items()),
            ("overall", result["overall"])]


def _table(title: str, first: str, columns: tuple[str, ...]) -> Table:
    table = Table(title=title)
    for col in (first, *columns):
        table.add_column(col, justify="left" if col == first else "right", no_wrap=True)
    return table


def _print_summary(kind: str, result: dict[str, Any], names: list[str]) -> None:
    if kind == "ratio":
        table = _table(f"score ratio {names[0]} / {names[1]}", "category",
                       ("n", "ratio", "95% CI", "wins", "ties", "losses", "beat rate"))
        for name, s in _rows(result):
            table.add_row(name, str(s["n"]), _pct(s["ratio"]),
                          f"{_pct(s['ci_low'])} – {_pct(s['ci_high'])}", str(s["wins"]),
                          str(s["ties"]), str(s["losses"]), _rate(s["beat_rate"]))
    elif kind == "pairwise":
        table = _table(f"pairwise {names[0]} vs {names[1]} (both orders)", "category",
                       ("n", "wins", "ties", "losses", "win rate", "adjusted win rate"))
        for name, p in _rows(result):
            table.add_row(name, str(p["n"]), str(p["wins"]), str(p["ties"]), str(p["losses"]),
                          _rate(p["win_rate"]), _rate(p["adjusted_win_rate"]))
    else:
        categories = sorted({c for cats in result["by_category"].values() for c in cats})
        turns = sorted({t for per in result.get("by_turn", {}).values() for t in per}, key=int)
        table = _table("single-answer grading (mean rating, 1–10)", "model",
                       ("n", "overall", *(f"turn {t}" for t in turns), *categories))
        for model, mean in result["mean"].items():
            cats, per_turn = result["by_category"][model], result.get("by_turn", {}).get(model, {})
            table.add_row(model, str(result["count"][model]), f"{mean:.2f}",
                          *(f"{per_turn[t]:.2f}" if t in per_turn else "–" for t in turns),
                          *(f"{cats[c]:.2f}" if c in cats else "–" for c in categories))
    out.print(table)
    unparseable = result["unparseable"]
    total = sum(unparseable.values()) if isinstance(unparseable, dict) else unparseable
    out.print(f"unparseable judgments: {total}; question turns missing an answer: "
              f"{result['missing']}")


def _request(kind: Kind, *, questions: str, sides: list[tuple[str | None, Path | None]],
             judge_model: str | None, judge_base_url: str | None, **options: Any) -> JudgeRequest:
    from evaluators.jobs import JudgeRequest

    fields: dict[str, Any] = {}
    for label, (model, answers) in zip("ab", sides, strict=False):
        fields[f"model_{label}"] = model
        fields[f"answers_{label}"] = None if answers is None else str(answers)
    return JudgeRequest(kind=kind, questions=questions, judge_model=judge_model,
                        judge_base_url=judge_base_url, **fields, **options)


@app.command()
def ratio(questions: QuestionsOpt = "demo", model_a: ModelA = None, answers_a: AnswersA = None,
          model_b: ModelB = None, answers_b: AnswersB = None, judge_model: JudgeModel = None,
          judge_base_url: JudgeUrl = None, judge_api_key: JudgeKey = None,
          judge_retries: JudgeRetries = 4, concurrency: Concurrency = 8,
          swap: Annotated[bool, typer.Option("--swap", help="Judge both orders, average.")] = False,
          store: Store = None, output: Output = None, url: Url = None, api_key: ApiKey = None,
          max_tokens: MaxTokens = 512) -> None:
    """Vicuna-style score ratio of A over B (100 × ΣA / ΣB) with a bootstrap 95% interval;
    MT-bench questions are scored on both turns (rows per turn)."""
    request = _request("ratio", questions=questions,
                       sides=[(model_a, answers_a), (model_b, answers_b)],
                       judge_model=judge_model, judge_base_url=judge_base_url, swap=swap,
                       judge_retries=judge_retries, concurrency=concurrency,
                       max_tokens=max_tokens)
    _run(request, judge_api_key=judge_api_key, store=store, output=output, url=url,
         api_key=api_key)


@app.command()
def pairwise(questions: QuestionsOpt = "demo", model_a: ModelA = None,
             answers_a: AnswersA = None, model_b: ModelB = None, answers_b: AnswersB = None,
             judge_model: JudgeModel = None, judge_base_url: JudgeUrl = None,
             judge_api_key: JudgeKey = None, judge_retries: JudgeRetries = 4,
             concurrency: Concurrency = 8, store: Store = None, output: Output = None,
             url: Url = None, api_key: ApiKey = None, max_tokens: MaxTokens = 512) -> None:
    """MT-bench pairwise verdicts in both orders: wins, ties, losses, adjusted win rate
    (per turn for MT-bench questions)."""
    request = _request("pairwise", questions=questions,
                       sides=[(model_a, answers_a), (model_b, answers_b)],
                       judge_model=judge_model, judge_base_url=judge_base_url,
                       judge_retries=judge_retries, concurrency=concurrency,
                       max_tokens=max_tokens)
    _run(request, judge_api_key=judge_api_key, store=store, output=output, url=url,
         api_key=api_key)


@app.command()
def single(questions: QuestionsOpt = "demo", model_a: ModelA = None, answers_a: AnswersA = None,
           judge_model: JudgeModel = None, judge_base_url: JudgeUrl = None,
           judge_api_key: JudgeKey = None, judge_retries: JudgeRetries = 4,
           concurrency: Concurrency = 8, store: Store = None, output: Output = None,
           url: Url = None, api_key: ApiKey = None, max_tokens: MaxTokens = 512) -> None:
    """Single-answer grading (1–10) of one model: mean overall, per turn (MT-bench questions)
    and per category."""
    request = _request("single", questions=questions, sides=[(model_a, answers_a)],
                       judge_model=judge_model, judge_base_url=judge_base_url,
                       judge_retries=judge_retries, concurrency=concurrency,
                       max_tokens=max_tokens)
    _run(request, judge_api_key=judge_api_key, store=store, output=output, url=url,
         api_key=api_key)
