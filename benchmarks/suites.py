"""Benchmark suites as data: subjects, categories and prompt formats read from ``data/*.json``.

The tables follow the official mappings: MMLU (hendrycks/test ``categories.py``: subject →
subcategory → one of four categories), C-Eval (``subject_mapping.json``; ``clinical_medicine``,
which that file leaves without a category, is "Other" as in the paper) plus its "hard" subset,
and CMMLU (``categories.py``: a subject can sit in two of the five groups, e.g. "China specific").
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
SUITE_NAMES = ("mmlu", "ceval", "cmmlu")


@dataclass(frozen=True, slots=True)
class PromptFormat:
    """How one question is written: ``question_prefix + question``, ``\\nA. …`` for each choice,
    then ``answer_prefix``; a shot adds ``answer_separator + letter + "\\n\\n"``."""

    header: str  # "{subject}" is replaced by the subject's title
    question_prefix: str
    answer_prefix: str
    answer_separator: str
    candidates: tuple[str, ...]  # scored as the next token after ``answer_prefix``


@dataclass(frozen=True, slots=True)
class Subject:
    name: str
    categories: tuple[str, ...]
    subcategories: tuple[str, ...] = ()
    name_zh: str | None = None
    name_en: str | None = None

    @property
    def title(self) -> str:
        """The name a prompt uses: the Chinese name where there is one, else MMLU's
        ``format_subject`` (underscores to spaces)."""
        return self.name_zh or self.name.replace("_", " ")


@dataclass(frozen=True, slots=True)
class Suite:
    name: str
    title: str
    language: str
    splits: tuple[str, ...]
    categories: tuple[str, ...]
    subjects: dict[str, Subject]
    prompt: PromptFormat
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def subject(self, name: str) -> Subject:
        try:
            return self.subjects[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.subjects, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"{self.title} has no subject {name!r}{hint}") from None

    def category_subjects(self, category: str) -> list[str]:
        return [s.name for s in self.subjects.values() if category in s.categories]


@cache
def get_suite(name: str) -> Suite:
    """The suite called ``name`` (``mmlu``, ``ceval``, ``cmmlu``), read from its data table."""
    if name not in SUITE_NAMES:
        close = difflib.get_close_matches(name, SUITE_NAMES, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown benchmark suite {name!r} (known: {', '.join(SUITE_NAMES)}){hint}")
    raw = json.loads((DATA_DIR / f"{name}.json").read_text(encoding="utf-8"))
    subjects = {
        key: Subject(
            name=key,
            categories=tuple(value["categories"]),
            subcategories=tuple(value.get("subcategories", ())),
            name_zh=value.get("name_zh"),
            name_en=value.get("name_en"),
        )
        for key, value in raw["subjects"].items()
    }
    prompt = raw["prompt"]
    return Suite(
        name=raw["name"],
        title=raw["title"],
        language=raw["language"],
        splits=tuple(raw["splits"]),
        categories=tuple(raw["categories"]),
        subjects=subjects,
        prompt=PromptFormat(
            header=prompt["header"],
            question_prefix=prompt["question_prefix"],
            answer_prefix=prompt["answer_prefix"],
            answer_separator=prompt["answer_separator"],
            candidates=tuple(prompt["candidates"]),
        ),
        groups={k: tuple(v) for k, v in raw.get("groups", {}).items()},
    )
