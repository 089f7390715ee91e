"""The native engine: k-shot prompts → candidate log-probs → predictions and accuracies.

Results of either engine (this one, or lm-eval's through ``benchmarks.lm_eval_engine``) share
one shape, so :func:`compare_predictions` can check that they agree item by item.

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
    engine: str = "native"  # native | lm-eval
    prompt_format: str = "official"  # official | lm-eval
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
                "engine": self.engine, "prompt_format": self.prompt_format,
                "items_with_fewer_shots": sum(r.shots < self.shots for r in self.items),
                "accuracy": self.overall.value, "macro_accuracy": self.macro,
                "correct": self.overall.correct, "total": self.overall.total,
                "subjects": table(self.subjects), "categories": table(self.categories),
                "groups": table(self.groups),
                "items": [{**asdict(r), "correct": r.correct} for r in self.items]}


def summarize(suite_name: str, results: list[ItemResult], *, shots: int, fingerprint: str,
              engine: str = "native", prompt_format: str = "official") -> BenchmarkResults:
    """Per subject, category, group and overall accuracy of scored items."""
    suite = get_suite(suite_name)
    out = BenchmarkResults(suite=suite.name, shots=shots, fingerprint=fingerprint, items=results,
                           engine=engine, prompt_format=prompt_format)
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


def predict(logprobs: Sequence[float]) -> str:
    """The letter with the highest log-prob; the first one on an exact tie (as numpy's argmax,
    which lm-eval uses)."""
    return LETTERS[max(range(len(LETTERS)), key=lambda i: (logprobs[i], -i))]


async def score_items(items: Sequence[Item], *, scorer: Scorer, dev: Sequence[Item],
                      shots: int = DEFAULT_SHOTS, count_tokens: Callable[[str], int] | None = None,
                      max_tokens: int | None = None, fingerprint: str = "",
                      prompt_format: str = "official", chunk: int = 64,
                      on_progress: Callable[[int, int], None] | None = None) -> BenchmarkResults:
    """Score ``items`` (one suite) k-shot with shots from ``dev``; the prediction is the letter
    with the highest log-prob (the first on a tie).

    Prompts go to the scorer ``chunk`` at a time, subject by subject and longest first (so a
    call holds prompts that share their shots, and its batches prompts of similar length);
    ``on_progress(done, total)`` is called after each chunk.
    """
    suites = {item.suite for item in items}
    if len(suites) != 1:
        raise ValueError(f"score_items needs items of exactly one suite, got {sorted(suites)}")
    (suite_name,) = suites
    candidates = list(get_suite(suite_name).prompt_format(prompt_format).candidates)
    prompts = build_prompts(items, dev, shots=shots, count_tokens=count_tokens,
                            max_tokens=max_tokens, prompt_format=prompt_format)
    by_subject: dict[str, list[int]] = {}
    for i in sorted(range(len(prompts)), key=lambda i: -len(prompts[i].text)):
        by_subject.setdefault(prompts[i].item.subject, []).append(i)
    parts = [order[start: start + max(1, chunk)] for order in by_subject.values()
             for start in range(0, len(order), max(1, chunk))]
    scores: list[list[float]] = [[] for _ in prompts]
    done = 0
    for part in parts:
        got = await scorer.score([prompts[i].text for i in part], candidates)
        if len(got) != len(part):
            raise ValueError(f"the scorer returned {len(got)} results for {len(part)} prompts")
        for i, logprobs in zip(part, got, strict=True):
            scores[i] = logprobs
        done += len(part)
        if on_progress is not None:
            on_progress(done, len(prompts))
    results = []
    for prompt, logprobs in zip(prompts, scores, strict=True):
        item = prompt.item
        results.append(ItemResult(subject=item.subject, split=item.split, index=item.index,
                                  id=item.id, answer=item.answer, prediction=predict(logprobs),
                                  logprobs=list(logprobs), shots=prompt.shots))
    return summarize(suite_name, results, shots=shots, fingerprint=fingerprint,
                     prompt_format=prompt_format)


@dataclass(slots=True)
class Agreement:
    """How two runs over the same items compare."""

    items: int
    same: int
    ties: list[str] = field(default_factory=list)  # differing items where a run had an exact tie
    differing: list[str] = field(default_factory=list)  # differing items without a tie

    @property
    def identical(self) -> bool:
        return not self.differing


def _is_tie(logprobs: Sequence[float]) -> bool:
    best = max(logprobs)
    return sum(x == best for x in logprobs) > 1


def compare_predictions(a: BenchmarkResults, b: BenchmarkResults) -> Agreement:
    """Item-by-item agreement of two runs; a difference where either run had an exact tie in
    log-probability is counted apart (the first letter wins a tie, which is arbitrary)."""
    key = lambda r: (r.subject, r.split, r.index)  # noqa: E731
    left, right = {key(r): r for r in a.items}, {key(r): r for r in b.items}
    if left.keys() != right.keys():
        raise ValueError(f"the runs scored different items ({len(left)} and {len(right)})")
    out = Agreement(items=len(left), same=0)
    for k, x in left.items():
        y = right[k]
        if x.prediction == y.prediction:
            out.same += 1
        else:
            where = f"{k[0]}/{k[1]}#{k[2]}"
            (out.ties if _is_tie(x.logprobs) or _is_tie(y.logprobs) else out.differing).append(
                where)
    return out


def ceval_submission(results: BenchmarkResults) -> dict[str, dict[str, str]]:
    """C-Eval's submission file for the test split: ``{subject: {id: "A", ...}}``."""
    if results.suite != "ceval":
        raise ValueError(f"a C-Eval submission needs C-Eval results, not {results.suite}")
    submission: dict[str, dict[str, str]] = {}
    for result in results.items:
        submission.setdefault(result.subject, {})[result.id] = result.prediction
    return submission
