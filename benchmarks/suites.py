"""Benchmark suites as data: subjects, categories and prompt formats read from ``data/*.json``.

The tables follow the official mappings: MMLU (hendrycks/test ``categories.py``: subject →
subcategory → one of four categories), C-Eval (``subject_mapping.json``; ``clinical_medicine``,
which that file leaves without a category, is "Other" as in the paper) plus its "hard" subset,
and CMMLU (``categories.py``: a subject can sit in two of the five groups, e.g. "China specific").

Each suite has two prompt formats: ``official`` (the suite's own evaluation code, the default)
and ``lm-eval`` (lm-eval 0.4.13's task definition of the suite: stripped questions, a space
before the answer letter, C-Eval without "考试", CMMLU without "题目："), so that the native
engine can reproduce what the lm-eval engine scores, item for item.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data"
SUITE_NAMES = ("mmlu", "ceval", "cmmlu")
PROMPT_FORMATS = ("official", "lm-eval")


@dataclass(frozen=True, slots=True)
class PromptFormat:
    """How one question is written: ``question_prefix + question``, ``\\nA. …`` for each choice,
    then ``answer_prefix``; a shot adds ``answer_separator + letter + "\\n\\n"``."""

    header: str  # "{subject}" is replaced by the subject's title
    question_prefix: str
    answer_prefix: str
    answer_separator: str
    candidates: tuple[str, ...]  # scored as the next token after ``answer_prefix``
    strip_question: bool = False  # lm-eval writes ``question.strip()``


@dataclass(frozen=True, slots=True)
class LmEvalTasks:
    """Where lm-eval 0.4.13 defines the suite: one task (and config file) per subject."""

    task: str  # task name, "{subject}" replaced: "mmlu_{subject}"
    config: str  # its YAML under ``lm_eval/tasks``: "mmlu/default/mmlu_{subject}.yaml"
    split_key: str  # the split the task evaluates ("test"; "val" for ceval-valid)
    splits: tuple[str, ...]  # our splits it can score (those with answers)


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
    prompt: PromptFormat  # the official format
    lm_eval: LmEvalTasks
    lm_eval_prompt: PromptFormat
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def prompt_format(self, name: str) -> PromptFormat:
        """``official`` or ``lm-eval``."""
        if name == "official":
            return self.prompt
        if name == "lm-eval":
            return self.lm_eval_prompt
        raise KeyError(f"unknown prompt format {name!r} (known: {', '.join(PROMPT_FORMATS)})")

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
    lm_eval = raw["lm_eval"]
    return Suite(
        name=raw["name"],
        title=raw["title"],
        language=raw["language"],
        splits=tuple(raw["splits"]),
        categories=tuple(raw["categories"]),
        subjects=subjects,
        prompt=_prompt_format(raw["prompt"]),
        lm_eval=LmEvalTasks(task=lm_eval["task"], config=lm_eval["config"],
                            split_key=lm_eval["split_key"], splits=tuple(lm_eval["splits"])),
        lm_eval_prompt=_prompt_format(lm_eval["prompt"]),
        groups={k: tuple(v) for k, v in raw.get("groups", {}).items()},
    )


def _prompt_format(raw: dict[str, Any]) -> PromptFormat:
    return PromptFormat(header=raw["header"], question_prefix=raw["question_prefix"],
                        answer_prefix=raw["answer_prefix"],
                        answer_separator=raw["answer_separator"],
                        candidates=tuple(raw["candidates"]),
                        strip_question=bool(raw.get("strip_question", False)))
