"""Answer files a user already has: FastChat/Vicuna JSONL (also MT-bench) and LLMZoo JSONL.

FastChat/Vicuna lines carry ``question_id``, ``text`` and ``model_id``; MT-bench answer lines
carry ``choices[0].turns`` instead of ``text``. LLMZoo answer files
(``llmzoo/eval/answers/answer_*.jsonl``) use the same fields as Vicuna's (``question_id``,
``text``, ``answer_id``, ``model_id``, ``metadata``); ``id`` is accepted for ``question_id``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from evaluators.errors import InputFileError
from evaluators.jsonl import read_records, require


@dataclass(frozen=True)
class Answer:
    """One model's answer to one question (multi-turn answers keep every turn in ``turns``)."""

    question_id: str
    model: str
    text: str
    turns: tuple[str, ...] = ()


def read_answers(path: str | Path, *, model: str | None = None,
                 default_model: str | None = None) -> list[Answer]:
    """Read an answer file. ``model`` names the model (overriding ``model_id``);
    ``default_model`` names it only on lines that lack ``model_id``."""
    answers: list[Answer] = []
    for line, record in read_records(path):
        qid = str(require(record, path, line, "question_id", "id"))
        name = model or record.get("model_id") or record.get("model") or default_model
        if not name:
            raise InputFileError(str(path), line, "missing field 'model_id' (or pass model=)")
        if "choices" in record:
            choices = record["choices"]
            if not (isinstance(choices, list) and choices and isinstance(choices[0], dict)):
                raise InputFileError(str(path), line, "'choices' must be a non-empty list")
            turns = choices[0].get("turns")
        else:
            turns = require(record, path, line, "text", "answer", "output")
            turns = [turns] if isinstance(turns, str) else turns
        if not (isinstance(turns, list) and turns and all(isinstance(t, str) for t in turns)):
            raise InputFileError(str(path), line, "the answer text must be strings")
        answers.append(Answer(question_id=qid, model=str(name), text=turns[0],
                              turns=tuple(turns)))
    return answers


def by_question(answers: Iterable[Answer]) -> dict[str, str]:
    """``question_id -> text`` (the first turn); a question answered twice is an error."""
    return {qid: turns[0] for qid, turns in turns_by_question(answers).items()}


def turns_by_question(answers: Iterable[Answer]) -> dict[str, tuple[str, ...]]:
    """``question_id -> turns``; a question answered twice is an error (which one to judge?)."""
    table: dict[str, tuple[str, ...]] = {}
    for answer in answers:
        if answer.question_id in table:
            raise ValueError(f"question {answer.question_id!r} answered twice by {answer.model}")
        table[answer.question_id] = answer.turns or (answer.text,)
    return table
