"""The native engine: k-shot prompts → candidate log-probs → predictions and accuracies.

Headline accuracy is micro (over items), as in MMLU's reference code; the macro average over
subjects is reported too. A category's accuracy is micro over the items of its subjects (a
CMMLU subject can count in two groups, e.g. "Social Science" and "China specific").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.loaders import LETTERS, Item
from benchmarks.prompts import DEFAULT_SHOTS, build_prompts
from benchmarks.scorers import Scorer
from benchmarks.suites import get_suite


@dataclass(slots=True)
class ItemResult:
    subject: str
    split: str
    index: int
    id: str
    answer: str | None
    prediction: str
    logprobs: list[float]  # one per letter A..D
    shots: int

    @property
    def correct(self) -> bool | None:
        return None if self.answer is None else self.prediction == self.answer


@dataclass(slots=True)
class Accuracy:
    correct: int = 0
    total: int = 0  # items with a known answer

    @property
    def value(self) -> float | None:
        return self.correct / self.total if self.total else None

    def add(self, result: ItemResult) -> None:
        if result.correct is not None:
            self.total += 1
            self.correct += int(result.correct)


@dataclass(slots=True)
class BenchmarkResults:
    suite: str
    shots: int  # asked for; each item records how many it got
    fingerprint: str
    items: list[ItemResult]
    subjects: dict[str, Accuracy] = field(default_factory=dict)
    categories: dict[str, Accuracy] = field(default_factory=dict)
    groups: dict[str, Accuracy] = field(default_factory=dict)  # e.g. C-Eval "hard"
    overall: Accuracy = field(default_factory=Accuracy)

    @property
    def macro(self) -> float | None:
        """Mean of the subject accuracies."""
        values = [a.value for a in self.subjects.values() if a.value is not None]
        return sum(values) / len(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        def table(accs: dict[str, Accuracy]) -> dict[str, Any]:
            return {k: {"accuracy": a.value, "correct": a.correct, "total": a.total}
                    for k, a in accs.items()}

        return {"suite": self.suite, "shots": self.shots, "fingerprint": self.fingerprint,
                "accuracy": self.overall.value, "macro_accuracy": self.macro,
                "correct": self.overall.correct, "total": self.overall.total,
                "subjects": table(self.subjects), "categories": table(self.categories),
                "groups": table(self.groups),
                "items": [{**asdict(r), "correct": r.correct} for r in self.items]}


def summarize(suite_name: str, results: list[ItemResult], *, shots: int,
              fingerprint: str) -> BenchmarkResults:
    """Per subject, category, group and overall accuracy of scored items."""
    suite = get_suite(suite_name)
    out = BenchmarkResults(suite=suite.name, shots=shots, fingerprint=fingerprint, items=results)
    for result in results:
        subject = suite.subject(result.subject)
        out.subjects.setdefault(subject.name, Accuracy()).add(result)
        for category in subject.categories:
            out.categories.setdefault(category, Accuracy()).add(result)
        for group, members in suite.groups.items():
            if subject.name in members:
                out.groups.setdefault(group, Accuracy()).add(result)
        out.overall.add(result)
    out.categories = {c: out.categories[c] for c in suite.categories if c in out.categories}
    return out


async def score_items(items: Sequence[Item], *, scorer: Scorer, dev: Sequence[Item],
                      shots: int = DEFAULT_SHOTS, count_tokens: Callable[[str], int] | None = None,
                      max_tokens: int | None = None, fingerprint: str = "") -> BenchmarkResults:
    """Score ``items`` (one suite) k-shot with shots from ``dev``; the prediction is the letter
    with the highest log-prob (the first on a tie)."""
    suites = {item.suite for item in items}
    if len(suites) != 1:
        raise ValueError(f"score_items needs items of exactly one suite, got {sorted(suites)}")
    (suite_name,) = suites
    candidates = list(get_suite(suite_name).prompt.candidates)
    prompts = build_prompts(items, dev, shots=shots, count_tokens=count_tokens,
                            max_tokens=max_tokens)
    scores = await scorer.score([p.text for p in prompts], candidates)
    if len(scores) != len(prompts):
        raise ValueError(f"the scorer returned {len(scores)} results for {len(prompts)} prompts")
    results = []
    for prompt, logprobs in zip(prompts, scores, strict=True):
        item = prompt.item
        best = max(range(len(LETTERS)), key=lambda i: (logprobs[i], -i))
        results.append(ItemResult(subject=item.subject, split=item.split, index=item.index,
                                  id=item.id, answer=item.answer, prediction=LETTERS[best],
                                  logprobs=list(logprobs), shots=prompt.shots))
    return summarize(suite_name, results, shots=shots, fingerprint=fingerprint)


def ceval_submission(results: BenchmarkResults) -> dict[str, dict[str, str]]:
    """C-Eval's submission file for the test split: ``{subject: {id: "A", ...}}``."""
    if results.suite != "ceval":
        raise ValueError(f"a C-Eval submission needs C-Eval results, not {results.suite}")
    submission: dict[str, dict[str, str]] = {}
    for result in results.items:
        submission.setdefault(result.subject, {})[result.id] = result.prediction
    return submission
