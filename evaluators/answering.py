"""Answers from registered checkpoints, produced through the control plane's OpenAI gateway.

A multi-turn (MT-bench) question is answered turn by turn, each request carrying the
conversation so far. Sampling follows the category, as MT-bench's answer generation does:
greedy (temperature 0) where there is one right answer (math, coding, reasoning, extraction),
0.1 for stem and humanities, 0.7 elsewhere. Answers are appended to a JSONL cache as they
complete (Vicuna format for one turn, MT-bench ``choices[0].turns`` for more; readable by
``evaluators.answers.read_answers``), so a re-run asks only for what is not answered yet, a
conversation cut short resuming at its next turn.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import openai

from evaluators.answers import read_answers
from evaluators.errors import EvaluatorError
from evaluators.jsonl import read_records
from evaluators.questions import Question

logger = logging.getLogger(__name__)

TEMPERATURES = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
                "reasoning": 0.0, "stem": 0.1, "humanities": 0.1}  # FastChat's MT-bench table
DEFAULT_TEMPERATURE = 0.7


class AnsweringError(EvaluatorError):
    """Some answers could not be produced; those that were are cached, so a re-run resumes."""


def temperature_for(category: str) -> float:
    """The sampling temperature for a question category (0.7 for one not in the table)."""
    return TEMPERATURES.get(category.lower(), DEFAULT_TEMPERATURE)


def answers_cache_path(store_path: str | Path, model: str) -> Path:
    """``answers-<model>.jsonl`` next to the judgment store (``/`` and odd characters → ``_``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model)
    return Path(store_path).parent / f"answers-{safe}.jsonl"


class _Cache:
    """The answer cache of one model: the newest record per question wins."""

    def __init__(self, path: Path | None, model: str) -> None:
        self.path = path
        self.model = model
        self.records: dict[str, dict[str, Any]] = {}
        self.turns: dict[str, tuple[str, ...]] = {}
        self.stale = False  # the file holds records that newer ones replaced
        if path is None or not path.exists():
            return
        answers = read_answers(path, model=model)
        for (_, record), answer in zip(read_records(path), answers, strict=True):
            self.stale |= answer.question_id in self.records
            self.records[answer.question_id] = record
            self.turns[answer.question_id] = answer.turns

    def put(self, question_id: str, turns: Sequence[str], metadata: dict[str, Any]) -> None:
        record: dict[str, Any] = {"question_id": question_id, "model_id": self.model}
        if len(turns) == 1:
            record["text"] = turns[0]
        else:
            record["choices"] = [{"index": 0, "turns": list(turns)}]
        record["metadata"] = metadata
        self.stale |= question_id in self.records
        self.records[question_id] = record
        self.turns[question_id] = tuple(turns)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def compact(self) -> None:
        """Rewrite the file with one record per question once some were replaced."""
        if self.path is None or not self.stale:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                               for r in self.records.values()), encoding="utf-8")
        os.replace(tmp, self.path)
        self.stale = False


async def produce_answers(*, base_url: str, model: str, questions: Sequence[Question],
                          api_key: str | None = None, max_tokens: int = 512,
                          concurrency: int = 4, timeout_s: float = 600.0,
                          cache_path: Path | None = None,
                          on_answer: Callable[[str], None] | None = None,
                          ) -> dict[str, tuple[str, ...]]:
    """``question_id -> answer turns`` from ``model`` served behind ``base_url`` (the control
    plane, without ``/v1``); ``max_tokens`` per turn. Cached answers are reused;
    ``on_answer(question_id)`` is called once per question as its answer is complete (all its
    turns; cached ones first, at once). Raises
    ``AnsweringError`` when some questions got no complete answer."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    cache = _Cache(cache_path, model)
    todo = [q for q in questions if len(cache.turns.get(q.id, ())) < len(q.turns)]
    if on_answer is not None:
        pending = {q.id for q in todo}
        for q in questions:
            if q.id not in pending:
                on_answer(q.id)
    errors: list[str] = []
    if todo:
        limit = asyncio.Semaphore(concurrency)
        async with openai.AsyncOpenAI(base_url=base_url.rstrip("/") + "/v1",
                                      api_key=api_key or "EMPTY", timeout=timeout_s,
                                      max_retries=2) as client:

            async def one(question: Question) -> None:
                temperature = temperature_for(question.category)
                metadata = {"temperature": temperature, "max_tokens": max_tokens}
                turns = list(cache.turns.get(question.id, ()))
                messages: list[dict[str, str]] = []
                for asked, said in zip(question.turns, turns, strict=False):
                    messages += [{"role": "user", "content": asked},
                                 {"role": "assistant", "content": said}]
                for asked in question.turns[len(turns):]:
                    messages.append({"role": "user", "content": asked})
                    try:
                        async with limit:
                            response = await client.chat.completions.create(
                                model=model, messages=messages,  # type: ignore[arg-type]
                                temperature=temperature, max_tokens=max_tokens)
                    except openai.APIError as exc:
                        logger.warning("answer to %s (turn %d) from %s failed: %s",
                                       question.id, len(turns) + 1, model, exc)
                        errors.append(f"{type(exc).__name__}: {exc}")
                        if len(turns) > len(cache.turns.get(question.id, ())):
                            cache.put(question.id, turns, metadata)  # resume at this turn
                        return
                    said = (response.choices[0].message.content
                            if response.choices else None) or ""
                    turns.append(said)
                    messages.append({"role": "assistant", "content": said})
                cache.put(question.id, turns, metadata)
                if on_answer is not None:
                    on_answer(question.id)

            try:
                await asyncio.gather(*(one(q) for q in todo))
            finally:
                cache.compact()
    if errors:
        raise AnsweringError(f"{len(errors)} of {len(todo)} answers from {model} failed "
                             f"(first: {errors[0]}); answers so far are cached, re-run to resume")
    return {q.id: cache.turns[q.id][:len(q.turns)] for q in questions}
