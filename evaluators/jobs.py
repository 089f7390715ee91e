"""A judge run as one synchronous call: ``JudgeRequest`` in, the JSON-able result out.

The ``arena judge`` CLI and the job queue's ``judge`` jobs both call ``run_judge``: questions
(a file or the shipped demo set), each side's answers from an answer file or from a registered
checkpoint through the control plane's gateway (cached next to the judgment store), then one
judging protocol against an OpenAI-compatible judge, with every judgment cached in the store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from evaluators.errors import EvaluatorError, JudgeRequestError, JudgeRunError
from evaluators.protocols import Judge, JudgeReply, Messages
from evaluators.questions import Question

if TYPE_CHECKING:
    from evaluators.store import JudgmentStore

__all__ = ["JudgeRequest", "JudgeRequestError", "run_judge", "validate_request"]

Progress = Callable[[str, int, int], None]  # (stage, done, total)
Turns = dict[str, tuple[str, ...]]          # question id → answer turns


class JudgeRequest(BaseModel):
    """One judge run. Each side is a registered checkpoint (answers via the gateway) or an
    answer file (FastChat/Vicuna, MT-bench or LLMZoo JSONL); ``single`` has side a only."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["ratio", "pairwise", "single"] = Field(
        description="ratio: LLMZoo score ratio A/B; pairwise: MT-bench verdicts in both "
        "orders; single: 1-10 grading of side a.")
    questions: str = Field(default="demo", description="Question file path, or 'demo'.")
    model_a: str | None = Field(default=None, description="Registered checkpoint, side a.")
    answers_a: str | None = Field(default=None, description="Answer file, side a.")
    model_b: str | None = Field(default=None, description="Registered checkpoint, side b.")
    answers_b: str | None = Field(default=None, description="Answer file, side b.")
    judge_model: str | None = Field(
        default=None, description="The judge's model name; None: ARENA_JUDGE_MODEL.")
    judge_base_url: str | None = Field(
        default=None, description="The judge's base URL (ending in /v1); None: "
        "ARENA_JUDGE_BASE_URL.")
    swap: bool = Field(default=False, description="ratio: judge both orders and average.")
    concurrency: int = Field(default=8, ge=1, description="Requests in flight at once.")
    max_tokens: int = Field(default=512, ge=1,
                            description="Longest answer turn produced via the gateway.")
    judge_retries: int = Field(default=4, ge=0,
                               description="Retries per failed judge call (429, 5xx, network).")
    judge_max_tokens: int | None = Field(
        default=None, ge=1, description="Longest judgment asked of the judge; None: "
        "ARENA_JUDGE_MAX_TOKENS (unset: the judge's own limit).")
    judge_timeout_s: float | None = Field(
        default=None, gt=0, description="Per-call timeout of the judge; None: "
        "ARENA_JUDGE_TIMEOUT_S.")


@dataclasses.dataclass(frozen=True)
class _Side:
    label: str               # "a" or "b"
    model: str | None        # registered checkpoint
    name: str                # the model's name in results
    answers: Turns | None    # from the answer file; None: produce via the gateway


def load_questions(spec: str) -> list[Question]:
    """The question set a request names: ``"demo"`` or a file path."""
    from evaluators.questions import demo_questions, read_questions

    if spec == "demo":
        return demo_questions()
    if not Path(spec).is_file():
        raise JudgeRequestError("questions", f"no such file: {spec}")
    try:
        questions = read_questions(spec)
    except (EvaluatorError, OSError, UnicodeDecodeError) as exc:
        raise JudgeRequestError("questions", str(exc)) from exc
    if not questions:
        raise JudgeRequestError("questions", f"no questions in {spec}")
    return questions


def read_answer_file(path: str, field: str) -> tuple[str, Turns]:
    """``(model name, question id → turns)``; lines without ``model_id`` are named after
    the file (``vicuna-7b.jsonl`` → ``vicuna-7b``)."""
    from evaluators.answers import read_answers, turns_by_question

    if not Path(path).is_file():
        raise JudgeRequestError(field, f"no such file: {path}")
    try:
        rows = read_answers(path, default_model=Path(path).stem)
        table = turns_by_question(rows)
    except (EvaluatorError, ValueError, OSError) as exc:
        raise JudgeRequestError(field, str(exc)) from exc
    return (rows[0].model if rows else Path(path).stem), table


def _sides(request: JudgeRequest) -> list[_Side]:
    labels = "a" if request.kind == "single" else "ab"
    if request.kind == "single" and (request.model_b or request.answers_b):
        raise JudgeRequestError(("model_b", "answers_b"),
                                "single-answer grading judges side a only")
    sides = []
    for label in labels:
        model, answers = getattr(request, f"model_{label}"), getattr(request, f"answers_{label}")
        if (model is None) == (answers is None):
            raise JudgeRequestError((f"model_{label}", f"answers_{label}"),
                                    "give exactly one: a registered model or an answer file")
        if model is not None:
            sides.append(_Side(label, model, model, None))
        else:
            name, table = read_answer_file(answers, f"answers_{label}")
            sides.append(_Side(label, None, name, table))
    return sides


def validate_request(request: JudgeRequest) -> list[Question]:
    """Check a request completely before it runs (or is queued): exactly one of model/answers
    per side (no side b for ``single``), answer files exist and parse, the questions parse.
    Returns the questions; raises ``JudgeRequestError`` (a ``ValueError``) naming the field."""
    questions = load_questions(request.questions)
    _sides(request)
    return questions


class _ProgressJudge:
    """A ``Judge`` that reports ``("judging", done, total)`` as each reply arrives."""

    def __init__(self, inner: Judge, on_progress: Progress) -> None:
        self.inner = inner
        self.model = inner.model
        self.on_progress = on_progress

    async def judge(self, prompts: Sequence[Messages], *,
                    on_reply: Callable[[int, JudgeReply], None] | None = None,
                    ) -> list[JudgeReply]:
        done = 0
        self.on_progress("judging", 0, len(prompts))

        def advance(index: int, reply: JudgeReply) -> None:
            nonlocal done
            done += 1
            self.on_progress("judging", done, len(prompts))
            if on_reply is not None:
                on_reply(index, reply)

        return await self.inner.judge(prompts, on_reply=advance)


def _produce(model: str, request: JudgeRequest, questions: list[Question], *, store_path: Path,
             base_url: str, api_key: str | None, on_progress: Progress | None) -> Turns:
    """``model``'s answers via the gateway, cached next to the judgment store."""
    from evaluators.answering import answers_cache_path, produce_answers

    stage, done = f"answers {model}", 0

    def answered(_question_id: str) -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(stage, done, len(questions))

    if on_progress is not None:
        on_progress(stage, 0, len(questions))
    return asyncio.run(produce_answers(
        base_url=base_url, model=model, questions=questions, api_key=api_key,
        max_tokens=request.max_tokens, concurrency=request.concurrency,
        cache_path=answers_cache_path(store_path, model), on_answer=answered))


def run_judge(request: JudgeRequest, *, store_path: Path, base_url: str, api_key: str | None,
              judge_api_key: str | None = None,
              on_progress: Progress | None = None) -> dict[str, Any]:
    """Run ``request`` to the end and return its JSON-able payload (what ``arena judge
    --output`` writes): ``kind``, ``models``, ``judge_model``, ``judge_base_url``,
    ``questions`` (count), ``swap``, ``judge_calls``, ``cost_usd``, ``prompt_version``,
    ``result`` (the protocol's result; NaN → null, turn keys as strings) and, for ratio and
    pairwise, ``categories``: one ``{"category", **stats}`` per category, for a bar chart.

    ``base_url``/``api_key``: the control plane that answers for model sides; the judge's
    URL and model default to ``Settings()`` (``ARENA_JUDGE_*``), its key to
    ``Settings().judge_api_key`` or ``"EMPTY"``. ``on_progress(stage, done, total)`` with stage
    ``"answers <model>"`` (questions answered, cached ones included) or ``"judging"`` (judge
    calls still to make). Raises ``JudgeRequestError`` for a bad request, ``AnsweringError``
    or ``JudgeRunError`` when answers or judgments failed (what completed is cached).
    """
    from evaluators.client import JudgeClient
    from evaluators.prompts import PROMPT_VERSION
    from evaluators.store import JudgmentStore

    questions = load_questions(request.questions)
    sides = _sides(request)
    judge_model, judge_url, judge_key = judge_settings(request, judge_api_key)
    store_path = Path(store_path)
    store_path.parent.mkdir(parents=True, exist_ok=True)
    tables = [_produce(side.model, request, questions, store_path=store_path,
                       base_url=base_url, api_key=api_key, on_progress=on_progress)
              if side.model is not None else side.answers or {}
              for side in sides]
    max_tokens, timeout_s = judge_limits(request)
    client = JudgeClient(base_url=judge_url, model=judge_model, api_key=judge_key,
                         concurrency=request.concurrency, max_retries=request.judge_retries,
                         max_tokens=max_tokens, timeout_s=timeout_s)
    judge: Judge = client if on_progress is None else _ProgressJudge(client, on_progress)
    with JudgmentStore(store_path) as store:
        try:
            result = asyncio.run(_protocol(request, judge, store, questions, sides, tables))
        except JudgeRunError as exc:
            raise JudgeRunError(exc.failed, exc.total, exc.first_error,
                                judge_url=judge_url) from None
    payload: dict[str, Any] = {
        "kind": request.kind, "models": [side.name for side in sides],
        "judge_model": judge_model, "judge_base_url": judge_url, "questions": len(questions),
        "swap": request.swap, "judge_calls": client.usage.calls,
        "cost_usd": client.usage.cost_usd, "prompt_version": PROMPT_VERSION,
        "result": jsonable(dataclasses.asdict(result))}
    if request.kind != "single":
        payload["categories"] = [{"category": name, **stats}
                                 for name, stats in payload["result"]["by_category"].items()]
    return payload


def judge_settings(request: JudgeRequest, judge_api_key: str | None) -> tuple[str, str, str]:
    """The judge's ``(model, base URL, key)``: the request's (and ``judge_api_key``), else
    ``Settings()``'s (``ARENA_JUDGE_MODEL``/``_BASE_URL``/``_API_KEY``); the key "EMPTY" when
    neither has one."""
    if request.judge_model and request.judge_base_url and judge_api_key:
        return request.judge_model, request.judge_base_url, judge_api_key
    from arena.settings import Settings

    settings = Settings()
    return (request.judge_model or settings.judge_model,
            request.judge_base_url or settings.judge_base_url,
            judge_api_key or settings.judge_api_key or "EMPTY")


def judge_limits(request: JudgeRequest) -> tuple[int | None, float]:
    """The judge's ``(max_tokens, timeout_s)``: the request's, else ``Settings()``'s."""
    from arena.settings import Settings

    settings = Settings()
    return (request.judge_max_tokens or settings.judge_max_tokens,
            request.judge_timeout_s or settings.judge_timeout_s)


async def _protocol(request: JudgeRequest, judge: Judge, store: JudgmentStore,
                    questions: list[Question], sides: list[_Side], tables: list[Turns]) -> Any:
    from evaluators import runner

    if request.kind == "ratio":
        return await runner.run_ratio(judge=judge, store=store, questions=questions,
                                      answers_a=tables[0], answers_b=tables[1],
                                      swap=request.swap)
    if request.kind == "pairwise":
        return await runner.run_pairwise(judge=judge, store=store, questions=questions,
                                         answers_a=tables[0], answers_b=tables[1])
    return await runner.run_single(judge=judge, store=store, questions=questions,
                                   answers={sides[0].name: tables[0]})


def jsonable(value: Any) -> Any:
    """NaN (a ratio over nothing) becomes ``null`` (JSON has no NaN); keys become strings."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
