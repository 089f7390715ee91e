"""Answers from registered checkpoints, produced through the control plane's OpenAI gateway.

Sampling follows the category: greedy (temperature 0) where there is one right answer (math,
coding, reasoning), 0.7 elsewhere. Answers are appended to a Vicuna-format JSONL cache as they
complete (readable by ``evaluators.answers.read_answers``), so a re-run asks only for the
questions not yet answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import openai

from evaluators.answers import read_answers
from evaluators.errors import EvaluatorError
from evaluators.questions import Question

logger = logging.getLogger(__name__)

GREEDY_CATEGORIES = frozenset({"math", "coding", "reasoning"})
DEFAULT_TEMPERATURE = 0.7


class AnsweringError(EvaluatorError):
    """Some answers could not be produced; those that were are cached, so a re-run resumes."""


def temperature_for(category: str) -> float:
    """0 for categories with one right answer, 0.7 for open-ended ones."""
    return 0.0 if category.lower() in GREEDY_CATEGORIES else DEFAULT_TEMPERATURE


def answers_cache_path(store_path: str | Path, model: str) -> Path:
    """``answers-<model>.jsonl`` next to the judgment store (``/`` and odd characters → ``_``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model)
    return Path(store_path).parent / f"answers-{safe}.jsonl"


def _read_cache(path: Path | None, model: str) -> dict[str, str]:
    if path is None or not path.exists():
        return {}
    return {a.question_id: a.text for a in read_answers(path, model=model)}


async def produce_answers(*, base_url: str, model: str, questions: Sequence[Question],
                          api_key: str | None = None, max_tokens: int = 512,
                          concurrency: int = 4, timeout_s: float = 600.0,
                          cache_path: Path | None = None,
                          on_answer: Callable[[str], None] | None = None) -> dict[str, str]:
    """``question_id -> answer`` from ``model`` served behind ``base_url`` (the control plane,
    without ``/v1``). Cached answers are reused; ``on_answer(question_id)`` is called as each
    new one completes. Raises ``AnsweringError`` when some questions got no answer."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    answers = _read_cache(cache_path, model)
    todo = [q for q in questions if q.id not in answers]
    if not todo:
        return {q.id: answers[q.id] for q in questions}
    errors: list[str] = []
    limit = asyncio.Semaphore(concurrency)
    async with openai.AsyncOpenAI(base_url=base_url.rstrip("/") + "/v1",
                                  api_key=api_key or "EMPTY", timeout=timeout_s,
                                  max_retries=2) as client:

        async def one(question: Question) -> None:
            temperature = temperature_for(question.category)
            try:
                async with limit:
                    response = await client.chat.completions.create(
                        model=model, messages=[{"role": "user", "content": question.text}],
                        temperature=temperature, max_tokens=max_tokens)
            except openai.APIError as exc:
                logger.warning("answer to %s from %s failed: %s", question.id, model, exc)
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            text = (response.choices[0].message.content if response.choices else None) or ""
            answers[question.id] = text
            if cache_path is not None:
                _append(cache_path, {"question_id": question.id, "model_id": model,
                                     "text": text, "metadata": {"temperature": temperature,
                                                                "max_tokens": max_tokens}})
            if on_answer is not None:
                on_answer(question.id)

        await asyncio.gather(*(one(q) for q in todo))
    if errors:
        raise AnsweringError(f"{len(errors)} of {len(todo)} answers from {model} failed "
                             f"(first: {errors[0]}); answers so far are cached, re-run to resume")
    return {q.id: answers[q.id] for q in questions}


def _append(path: Path, record: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
