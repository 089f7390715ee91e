"""``arena judge ratio|pairwise|single``: LLM-as-a-judge over a question set, with a progress
bar, a summary table and the full result as JSON. Judgments are cached in a SQLite store, so a
finished run re-run makes no judge calls."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from evaluators.errors import EvaluatorError, JudgeRunError
from evaluators.protocols import JudgeReply, Messages

if TYPE_CHECKING:  # openai and numpy load only when a judge command runs
    from evaluators.aggregate import PairwiseStats
    from evaluators.client import JudgeClient
    from evaluators.questions import Question

app = typer.Typer(help="Judge two models' answers with an LLM judge (ratio, pairwise, single).",
                  no_args_is_help=True)
out = Console()
err = Console(stderr=True)

QuestionsOpt = Annotated[str, typer.Option(
    "--questions", help="Question file (Vicuna/MT-bench or LLMZoo JSONL), or 'demo'.")]
ModelA = Annotated[str | None, typer.Option(
    "--model-a", help="Registered checkpoint whose answers are produced via the gateway.")]
AnswersA = Annotated[Path | None, typer.Option(
    "--answers-a", help="Answer file for side A (FastChat/Vicuna or LLMZoo JSONL).",
    exists=True, dir_okay=False)]
ModelB = Annotated[str | None, typer.Option("--model-b", help="Registered checkpoint, side B.")]
AnswersB = Annotated[Path | None, typer.Option(
    "--answers-b", help="Answer file for side B.", exists=True, dir_okay=False)]
JudgeModel = Annotated[str, typer.Option("--judge-model", help="The judge's model name.")]
JudgeUrl = Annotated[str, typer.Option(
    "--judge-base-url", help="OpenAI-compatible base URL of the judge (ending in /v1).")]
JudgeKey = Annotated[str, typer.Option("--judge-api-key", help="API key for the judge.")]
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
    "--max-tokens", min=1, help="Longest answer produced via the gateway, in tokens.")]


@dataclasses.dataclass(frozen=True)
class JudgeOptions:
    """What every ``arena judge`` command shares."""

    questions: str
    judge_model: str
    judge_base_url: str
    judge_api_key: str
    judge_retries: int
    concurrency: int
    store: Path | None
    output: Path | None
    url: str | None
    api_key: str | None
    max_tokens: int


class _ProgressJudge:
    """A ``Judge`` that advances a rich progress bar as each reply arrives."""

    def __init__(self, inner: JudgeClient, progress: Progress) -> None:
        self.inner = inner
        self.model = inner.model
        self.progress = progress

    async def judge(self, prompts: Sequence[Messages], *,
                    on_reply: Callable[[int, JudgeReply], None] | None = None,
                    ) -> list[JudgeReply]:
        task = self.progress.add_task("judging", total=len(prompts))

        def advance(index: int, reply: JudgeReply) -> None:
            self.progress.advance(task)
            if on_reply is not None:
                on_reply(index, reply)

        return await self.inner.judge(prompts, on_reply=advance)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err)


def _load_questions(spec: str) -> list[Question]:
    from evaluators.questions import demo_questions, read_questions

    if spec == "demo":
        return demo_questions()
    if not Path(spec).is_file():
        raise typer.BadParameter(f"no such file: {spec}", param_hint="--questions")
    try:
        return read_questions(spec)
    except EvaluatorError as exc:
        raise typer.BadParameter(str(exc), param_hint="--questions") from exc


def _side(opts: JudgeOptions, questions: list[Question], side: str, model: str | None,
          answers: Path | None, store_path: Path) -> tuple[str, dict[str, str]]:
    """``(name, question_id -> answer)`` for one side, from a file or via the gateway."""
    from evaluators.answers import by_question, read_answers
    from evaluators.errors import InputFileError

    if (model is None) == (answers is None):
        raise typer.BadParameter(f"give exactly one of --model-{side} or --answers-{side}",
                                 param_hint=f"--model-{side} / --answers-{side}")
    if model is not None:
        return model, _produce(opts, questions, model, store_path)
    if answers is not None:
        try:
            try:
                rows = read_answers(answers)
            except InputFileError as exc:
                if "model_id" not in str(exc):
                    raise
                rows = read_answers(answers, model=answers.stem)
            return (rows[0].model if rows else answers.stem), by_question(rows)
        except (EvaluatorError, ValueError) as exc:
            raise typer.BadParameter(str(exc), param_hint=f"--answers-{side}") from exc
    raise typer.BadParameter("no answers", param_hint=f"--answers-{side}")


def _produce(opts: JudgeOptions, questions: list[Question], model: str,
             store_path: Path) -> dict[str, str]:
    from arena.settings import ClientSettings
    from evaluators.answering import answers_cache_path, produce_answers

    settings = ClientSettings()
    base = opts.url or settings.url
    with _progress() as progress:
        task = progress.add_task(f"answers from {model}", total=len(questions))
        try:
            return asyncio.run(produce_answers(
                base_url=base, model=model, questions=questions,
                api_key=opts.api_key or settings.key(), max_tokens=opts.max_tokens,
                concurrency=opts.concurrency, cache_path=answers_cache_path(store_path, model),
                on_answer=lambda _qid: progress.advance(task)))
        except EvaluatorError as exc:
            err.print(f"[red]error:[/red] {exc} (control plane {base})")
            raise typer.Exit(1) from exc


def _store_path(opts: JudgeOptions) -> Path:
    if opts.store is not None:
        return opts.store
    from arena.settings import Settings

    return Settings().data_dir / "judgments.db"


def _run(opts: JudgeOptions, kind: str, sides: list[tuple[str | None, Path | None]],
         swap: bool = False) -> None:
    from evaluators import runner
    from evaluators.client import JudgeClient
    from evaluators.store import JudgmentStore

    # each failed call is logged as a warning; the CLI reports them once, after the bar
    logging.getLogger("evaluators.client").setLevel(logging.ERROR)
    questions = _load_questions(opts.questions)
    store_path = _store_path(opts)
    store_path.parent.mkdir(parents=True, exist_ok=True)
    tables = [_side(opts, questions, label, model, answers, store_path)
              for label, (model, answers) in zip("ab", sides, strict=False)]
    client = JudgeClient(base_url=opts.judge_base_url, model=opts.judge_model,
                         api_key=opts.judge_api_key, concurrency=opts.concurrency,
                         max_retries=opts.judge_retries)
    result: Any
    with JudgmentStore(store_path) as store, _progress() as progress:
        judge = _ProgressJudge(client, progress)
        try:
            if kind == "ratio":
                result = asyncio.run(runner.run_ratio(
                    judge=judge, store=store, questions=questions, answers_a=tables[0][1],
                    answers_b=tables[1][1], swap=swap))
            elif kind == "pairwise":
                result = asyncio.run(runner.run_pairwise(
                    judge=judge, store=store, questions=questions, answers_a=tables[0][1],
                    answers_b=tables[1][1]))
            else:
                result = asyncio.run(runner.run_single(
                    judge=judge, store=store, questions=questions,
                    answers={name: table for name, table in tables}))
        except JudgeRunError as exc:
            progress.stop()
            err.print(f"[red]error:[/red] the judge at {opts.judge_base_url} failed: {exc}")
            raise typer.Exit(1) from exc
    names = [name for name, _ in tables]
    _print_summary(kind, result, names)
    out.print(f"judge calls: {client.usage.calls} (cost ${client.usage.cost_usd:.4f}); "
              f"store {store_path}")
    if opts.output is not None:
        payload = {"kind": kind, "models": names, "judge_model": opts.judge_model,
                   "questions": len(questions), "swap": swap, "judge_calls": client.usage.calls,
                   "result": _jsonable(dataclasses.asdict(result))}
        opts.output.parent.mkdir(parents=True, exist_ok=True)
        opts.output.write_text(json.dumps(payload, ensure_ascii=False, indent=1) + "\n",
                               encoding="utf-8")
        out.print(f"wrote {opts.output}")


def _jsonable(value: Any) -> Any:
    """NaN (a ratio over nothing) becomes ``null``: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _pct(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.1f}%"


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _print_summary(kind: str, result: Any, names: list[str]) -> None:
    if kind == "ratio":
        table = Table(title=f"score ratio {names[0]} / {names[1]}")
        for col in ("category", "n", "ratio", "95% CI", "wins", "ties", "losses", "beat rate"):
            table.add_column(col, justify="left" if col == "category" else "right", no_wrap=True)
        rows: list[tuple[str, Any]] = [*result.by_category.items(), ("overall", result.overall)]
        for name, s in rows:
            table.add_row(name, str(s.n), _pct(s.ratio),
                          f"{_pct(s.ci_low)} – {_pct(s.ci_high)}", str(s.wins), str(s.ties),
                          str(s.losses), _rate(s.beat_rate))
    elif kind == "pairwise":
        table = Table(title=f"pairwise {names[0]} vs {names[1]} (both orders)")
        for col in ("category", "n", "wins", "ties", "losses", "win rate", "adjusted win rate"):
            table.add_column(col, justify="left" if col == "category" else "right", no_wrap=True)
        stats: list[tuple[str, PairwiseStats]] = [
            *result.by_category.items(), ("overall", result.overall)]
        for name, p in stats:
            table.add_row(name, str(p.n), str(p.wins), str(p.ties), str(p.losses),
                          _rate(p.win_rate), _rate(p.adjusted_win_rate))
    else:
        categories = sorted({c for cats in result.by_category.values() for c in cats})
        table = Table(title="single-answer grading (mean rating, 1–10)")
        for col in ("model", "n", "overall", *categories):
            table.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
        for model, mean in result.mean.items():
            cats = result.by_category[model]
            table.add_row(model, str(result.count[model]), f"{mean:.2f}",
                          *(f"{cats[c]:.2f}" if c in cats else "–" for c in categories))
    out.print(table)
    unparseable = result.unparseable
    total = sum(unparseable.values()) if isinstance(unparseable, dict) else unparseable
    out.print(f"unparseable judgments: {total}; questions missing an answer: {result.missing}")


@app.command()
def ratio(questions: QuestionsOpt, judge_model: JudgeModel, model_a: ModelA = None,
          answers_a: AnswersA = None, model_b: ModelB = None, answers_b: AnswersB = None,
          judge_base_url: JudgeUrl = "https://api.openai.com/v1", judge_api_key: JudgeKey = "EMPTY",
          judge_retries: JudgeRetries = 4, concurrency: Concurrency = 8,
          swap: Annotated[bool, typer.Option("--swap", help="Judge both orders, average.")] = False,
          store: Store = None, output: Output = None, url: Url = None, api_key: ApiKey = None,
          max_tokens: MaxTokens = 512) -> None:
    """Vicuna-style score ratio of A over B (100 × ΣA / ΣB) with a bootstrap 95% interval."""
    opts = JudgeOptions(questions=questions, judge_model=judge_model,
                        judge_base_url=judge_base_url, judge_api_key=judge_api_key,
                        judge_retries=judge_retries, concurrency=concurrency, store=store,
                        output=output, url=url, api_key=api_key, max_tokens=max_tokens)
    _run(opts, "ratio", [(model_a, answers_a), (model_b, answers_b)], swap=swap)


@app.command()
def pairwise(questions: QuestionsOpt, judge_model: JudgeModel, model_a: ModelA = None,
             answers_a: AnswersA = None, model_b: ModelB = None, answers_b: AnswersB = None,
             judge_base_url: JudgeUrl = "https://api.openai.com/v1",
             judge_api_key: JudgeKey = "EMPTY", judge_retries: JudgeRetries = 4,
             concurrency: Concurrency = 8, store: Store = None, output: Output = None,
             url: Url = None, api_key: ApiKey = None, max_tokens: MaxTokens = 512) -> None:
    """MT-bench pairwise verdicts in both orders: wins, ties, losses, adjusted win rate."""
    opts = JudgeOptions(questions=questions, judge_model=judge_model,
                        judge_base_url=judge_base_url, judge_api_key=judge_api_key,
                        judge_retries=judge_retries, concurrency=concurrency, store=store,
                        output=output, url=url, api_key=api_key, max_tokens=max_tokens)
    _run(opts, "pairwise", [(model_a, answers_a), (model_b, answers_b)])


@app.command()
def single(questions: QuestionsOpt, judge_model: JudgeModel, model_a: ModelA = None,
           answers_a: AnswersA = None, judge_base_url: JudgeUrl = "https://api.openai.com/v1",
           judge_api_key: JudgeKey = "EMPTY", judge_retries: JudgeRetries = 4,
           concurrency: Concurrency = 8, store: Store = None, output: Output = None,
           url: Url = None, api_key: ApiKey = None, max_tokens: MaxTokens = 512) -> None:
    """Single-answer grading (1–10) of one model: mean overall and per category."""
    opts = JudgeOptions(questions=questions, judge_model=judge_model,
                        judge_base_url=judge_base_url, judge_api_key=judge_api_key,
                        judge_retries=judge_retries, concurrency=concurrency, store=store,
                        output=output, url=url, api_key=api_key, max_tokens=max_tokens)
    _run(opts, "single", [(model_a, answers_a)])
