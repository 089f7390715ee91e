"""Run a judging protocol: cached judgments first, the rest judged and stored one by one as
they complete, then aggregated. A finished run re-run makes zero judge calls; an interrupted
one resumes with only the missing calls."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evaluators import aggregate, parsing, prompts
from evaluators.errors import JudgeRunError
from evaluators.protocols import Judge, JudgeReply, Messages
from evaluators.questions import Question
from evaluators.store import JudgmentStore, StoredJudgment, judgment_key


@dataclass(frozen=True)
class _Task:
    key: str
    kind: str
    question: Question
    order: str
    messages: Messages


def _task(judge: Judge, kind: str, question: Question, answers: Sequence[str], order: str,
          messages: Messages) -> _Task:
    key = judgment_key(judge_model=judge.model, prompt_version=prompts.PROMPT_VERSION,
                       kind=kind, question_id=question.id, question_text=question.turns,
                       answers=answers, order=order)
    return _Task(key=key, kind=kind, question=question, order=order, messages=messages)


async def _judge_all(judge: Judge, store: JudgmentStore, tasks: Sequence[_Task],
                     parse: Callable[[str], Any]) -> dict[str, StoredJudgment]:
    done = store.get_many(t.key for t in tasks)
    todo = list({t.key: t for t in tasks if t.key not in done}.values())
    errors: list[str] = []

    def on_reply(index: int, reply: JudgeReply) -> None:
        if reply.text is None:  # failed calls are not cached: the re-run asks again
            errors.append(reply.error or "unknown error")
            return
        task = todo[index]
        parsed = parse(reply.text)
        judgment = StoredJudgment(
            key=task.key, kind=task.kind, judge_model=judge.model,
            prompt_version=prompts.PROMPT_VERSION, question_id=task.question.id,
            order=task.order, raw_text=reply.text,
            parsed=list(parsed) if isinstance(parsed, tuple) else parsed,
            prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
            cost_usd=reply.cost_usd)
        store.put(judgment)
        done[task.key] = judgment

    if todo:
        await judge.judge([t.messages for t in todo], on_reply=on_reply)
    if errors:
        raise JudgeRunError(len(errors), len(todo), errors[0])
    return done


def _answered(questions: Sequence[Question], *tables: Mapping[str, str]
              ) -> tuple[list[Question], int]:
    kept = [q for q in questions if all(q.id in t for t in tables)]
    return kept, len(questions) - len(kept)


async def run_ratio(*, judge: Judge, store: JudgmentStore, questions: Sequence[Question],
                    answers_a: Mapping[str, str], answers_b: Mapping[str, str],
                    swap: bool = False, n_boot: int = 1000, seed: int = 0,
                    ) -> aggregate.RatioResult:
    """Score ratio of model A over model B (``answers_*``: question id → answer text).

    With ``swap`` each question is judged in both orders and the scores averaged. A question
    with an unparseable judgment (in either order) is left out; ``unparseable`` counts those
    judgments, ``missing`` the questions lacking an answer.
    """
    kept, missing = _answered(questions, answers_a, answers_b)
    tasks: list[tuple[_Task, _Task | None]] = []
    for q in kept:
        a, b = answers_a[q.id], answers_b[q.id]
        ab = _task(judge, "ratio", q, (a, b), "AB", prompts.ratio_messages(q.text, a, b))
        ba = (_task(judge, "ratio", q, (b, a), "BA", prompts.ratio_messages(q.text, b, a))
              if swap else None)
        tasks.append((ab, ba))
    flat = [t for pair in tasks for t in pair if t is not None]
    done = await _judge_all(judge, store, flat, parsing.parse_pair_scores)
    pairs, unparseable = [], 0
    for ab, ba in tasks:
        first = done[ab.key].parsed
        second = done[ba.key].parsed if ba is not None else None
        bad = (first is None) + (ba is not None and second is None)
        if bad:
            unparseable += bad
            continue
        a_score, b_score = (swap_average(first, second) if second is not None
                            else (first[0], first[1]))
        pairs.append(aggregate.ScorePair(ab.question.id, ab.question.category, a_score, b_score))
    return aggregate.ratio_result(pairs, unparseable=unparseable, missing=missing,
                                  n_boot=n_boot, seed=seed)


def swap_average(first: Sequence[float], second: Sequence[float]) -> tuple[float, float]:
    return aggregate.swap_average((first[0], first[1]), (second[0], second[1]))


async def run_pairwise(*, judge: Judge, store: JudgmentStore, questions: Sequence[Question],
                       answers_a: Mapping[str, str], answers_b: Mapping[str, str],
                       ) -> aggregate.PairwiseResult:
    """MT-bench style pairwise verdicts, judged in both orders; disagreeing orders are a tie."""
    kept, missing = _answered(questions, answers_a, answers_b)
    tasks = []
    for q in kept:
        a, b = answers_a[q.id], answers_b[q.id]
        tasks.append((
            _task(judge, "pairwise", q, (a, b), "AB", prompts.pairwise_messages(q.text, a, b)),
            _task(judge, "pairwise", q, (b, a), "BA", prompts.pairwise_messages(q.text, b, a))))
    done = await _judge_all(judge, store, [t for pair in tasks for t in pair],
                            parsing.parse_verdict)
    verdicts, unparseable = [], 0
    for ab, ba in tasks:
        first, second = done[ab.key].parsed, done[ba.key].parsed
        if first is None or second is None:
            unparseable += (first is None) + (second is None)
            continue
        verdicts.append(aggregate.VerdictPair(ab.question.id, ab.question.category,
                                              first, second))
    return aggregate.pairwise_result(verdicts, unparseable=unparseable, missing=missing)


async def run_single(*, judge: Judge, store: JudgmentStore, questions: Sequence[Question],
                     answers: Mapping[str, Mapping[str, str]]) -> aggregate.SingleResult:
    """Single-answer grading; ``answers``: model → question id → answer text."""
    tasks: list[tuple[str, _Task]] = []
    missing = 0
    for model, table in answers.items():
        for q in questions:
            if q.id not in table:
                missing += 1
                continue
            tasks.append((model, _task(judge, "single", q, (table[q.id],), "A",
                                       prompts.single_messages(q.text, table[q.id]))))
    done = await _judge_all(judge, store, [t for _, t in tasks], parsing.parse_rating)
    ratings, unparseable = [], dict.fromkeys(answers, 0)
    for model, task in tasks:
        value = done[task.key].parsed
        if value is None:
            unparseable[model] += 1
            continue
        ratings.append(aggregate.Rating(task.question.id, task.question.category, model, value))
    return aggregate.single_result(ratings, unparseable=unparseable, missing=missing)
