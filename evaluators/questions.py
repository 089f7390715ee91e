"""Question sets: Vicuna-bench / MT-bench JSONL and LLMZoo JSONL read into one record."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from evaluators.errors import InputFileError
from evaluators.jsonl import read_records, require

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
DEMO_QUESTIONS = "questions_demo.jsonl"


@dataclass(frozen=True)
class Question:
    """One question: ``turns`` holds the user turns (one for Vicuna-bench and LLMZoo)."""

    id: str
    category: str
    turns: tuple[str, ...]
    reference: tuple[str, ...] | None = None
    language: str = "en"

    @property
    def text(self) -> str:
        """The first turn, which is what the single-turn judges see."""
        return self.turns[0]


def detect_language(text: str) -> str:
    """``"zh"`` when the text has CJK characters, else ``"en"`` (enough for the shipped sets)."""
    return "zh" if _CJK.search(text) else "en"


def read_questions(path: str | Path) -> list[Question]:
    """Read a question file; the format is told per line by its fields.

    * Vicuna-bench / MT-bench: ``question_id``, ``category``, ``text`` or ``turns``,
      optional ``reference`` (list) and ``language``.
    * LLMZoo: ``id``, ``label`` (the category), ``query``.
    """
    questions: list[Question] = []
    seen: set[str] = set()
    for line, record in read_records(path):
        if "query" in record:
            qid = require(record, path, line, "id", "question_id")
            category = require(record, path, line, "label", "category")
            turns: object = [record["query"]]
        else:
            qid = require(record, path, line, "question_id", "id")
            category = require(record, path, line, "category", "label")
            turns = require(record, path, line, "turns", "text")
            if isinstance(turns, str):
                turns = [turns]
        if not (isinstance(turns, list) and turns and all(isinstance(t, str) and t.strip()
                                                          for t in turns)):
            raise InputFileError(str(path), line, "the question text must be non-empty strings")
        reference = record.get("reference")
        if reference is not None and not (isinstance(reference, list)
                                          and all(isinstance(r, str) for r in reference)):
            raise InputFileError(str(path), line, "'reference' must be a list of strings")
        qid = str(qid)
        if qid in seen:
            raise InputFileError(str(path), line, f"duplicate question id {qid!r}")
        seen.add(qid)
        questions.append(Question(
            id=qid, category=str(category), turns=tuple(turns),
            reference=tuple(reference) if reference is not None else None,
            language=str(record.get("language") or detect_language(turns[0]))))
    return questions


def demo_questions() -> list[Question]:
    """The small bilingual question set shipped with the package."""
    with resources.as_file(resources.files("evaluators") / "data" / DEMO_QUESTIONS) as path:
        return read_questions(path)
