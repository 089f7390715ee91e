"""Run a judging protocol: cached judgments first, the rest judged and stored one by one as
they complete, then aggregated. A finished run re-run makes zero judge calls; an interrupted
one resumes with only the missing calls.

Multi-turn (MT-bench) questions are judged per turn: turn 1 like a single-turn question, turn
2 with each assistant's whole conversation, judging its answer to the second question (all
three protocols). Multi-turn questions in ``prompts.REFERENCE_CATEGORIES`` show their reference
answers; single-turn questions are judged without one, as they always were. A turn is judged
when every side answered it; the others count as ``missing``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evaluators import aggregate, parsing, prompts
from evaluators.errors import JudgeRunError
from evaluators.protocols import Judge, JudgeReply, Messages
from evaluators.questions import Question
from evaluators.store import JudgmentStore, StoredJudgment, judgment_key

Answer = str | Sequence[str]        # one text, or one per turn (MT-bench answer files)
AnswerTable = Mapping[str, Answer]  # question id → answer


def as_turns(answer: Answer) -> tuple[str, ...]:
    """An answer as its turns: a plain text is a one-turn answer."""
    return (answer,) if isinstance(answer, str) else tuple(answer)


def reference_for(question: Question, turn: int) -> tuple[str, ...] | None:
    """The reference answers the judge sees for turns 1..``turn``: only for multi-turn
    questions in a reference category that carry one per turn."""
    ref = question.reference
    if (len(question.turns) < 2 or ref is None or len(ref) < turn
            or question.category.lower() not in prompts.REFERENCE_CATEGORIES):
        return None
    return ref[:turn]


@dataclass(frozen=True)
class _Task:
    key: str
    kind: str
    question: Question
    turn: int
    order: str
    messages: Messages


def _task(judge: Judge, kind: prompts.Kind, question: Question, turn: int,
          sides: Sequence[tuple[str, ...]], order: str) -> _Task:
    """Judge ``sides`` (each side's answer turns, in prompt order) on ``question``'s ``turn``."""
    reference = reference_for(question, turn)
    shown = [side[:turn] for side in sides]
    key = judgment_key(judge_model=judge.model, prompt_version=prompts.PROMPT_VERSION,
                       kind=kind, question_id=question.id, question_text=question.turns,
                       answers=[side[0] for side in shown] if turn == 1 else shown,
                       order=order, turn=turn, reference=reference)
    messages = prompts.judge_messages(kind, question.turns[:turn], shown, reference)
    return _Task(key=key, kind=kind, question=question, turn=turn, order=order,
                 messages=messages)


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
            order=task.order, turn=task.turn, raw_text=reply.text,
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


def _plan(questions: Sequence[Question], *tables: Mapping[str, tuple[str, ...]]
          ) -> tuple[list[tuple[Question, int]], int]:
    """The ``(question, turn)`` pairs every table answered, and how many question turns were
    left out for lack of an answer."""
    items: list[tuple[Question, int]] = []
    missing = 0
    for q in questions:
        answered = min(len(t[q.id]) if q.id in t else 0 for t in tables)
        judged = min(len(q.turns), answered)
        items.extend((q, turn) for turn in range(1, judged + 1))
        missing += len(q.turns) - judged
    return items, missing


def _table(answers: AnswerTable) -> dict[str, tuple[str, ...]]:
    return {qid: as_turns(a) for qid, a in answers.items()}


async def run_ratio(*, judge: Judge, store: JudgmentStore, questions: Sequence[Question],
                    answers_a: AnswerTable, answers_b: AnswerTable,
                    swap: bool = False, n_boot: int = 1000, seed: int = 0,
                    ) -> aggregate.RatioResult:
    """Score ratio of model A over model B (``answers_*``: question id → answer text, or its
    turns). Every answered turn is a scored item (``by_turn`` splits them).

    With ``swap`` each item is judged in both orders and the scores averaged. An item with an
    unparseable judgment (in either order) is left out; ``unparseable`` counts those
    judgments, ``missing`` the question turns lacking an answer.
    """
    table_a, table_b = _table(answers_a), _table(answers_b)
    items, missing = _plan(questions, table_a, table_b)
    tasks: list[tuple[_Task, _Task | None]] = []
    for q, turn in items:
        a, b = table_a[q.id], table_b[q.id]
        tasks.append((_task(judge, "ratio", q, turn, (a, b), "AB"),
                      _task(judge, "ratio", q, turn, (b, a), "BA") if swap else None))
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
        pairs.append(aggregate.ScorePair(ab.question.id, ab.question.category, a_score, b_score,
                                         turn=ab.turn))
    return aggregate.ratio_result(pairs, unparseable=unparseable, missing=missing,
                                  n_boot=n_boot, seed=seed)


def swap_average(first: Sequence[float], second: Sequence[float]) -> tuple[float, float]:
    return aggregate.swap_average((first[0], first[1]), (second[0], second[1]))


async def run_pairwise(*, judge: Judge, store: JudgmentStore, questions: Sequence[Question],
                       answers_a: AnswerTable, answers_b: AnswerTable,
                       ) -> aggregate.PairwiseResult:
    """MT-bench style pairwise verdicts, judged in both orders; disagreeing orders are a tie."""
    table_a, table_b = _table(answers_a), _table(answers_b)
    items, missing = _plan(questions, table_a, table_b)
    tasks = []
    for q, turn in items:
        a, b = table_a[q.id], table_b[q.id]
        tasks.append((_task(judge, "pairwise", q, turn, (a, b), "AB"),
                      _task(judge, "pairwise", q, turn, (b, a), "BA")))
    done = await _judge_all(judge, store, [t for pair in tasks for t in pair],
                            parsing.parse_verdict)
    verdicts, unparseable = [], 0
    for ab, ba in tasks:
        first, second = done[ab.key].parsed, done[ba.key].parsed
        if first is None or second is None:
            unparseable += (first is None) + (second is None)
            continue
        verdicts.append(aggregate.VerdictPair(ab.question.id, ab.question.category,
                                              first, second, turn=ab.turn))
    return aggregate.pairwise_result(verdicts, unparseable=unparseable, missing=missing)


async def run_single(*, judge: Judge, store: JudgmentStore, questions: Sequence[Question],
                     answers: Mapping[str, AnswerTable]) -> aggregate.SingleResult:
    """Single-answer grading; ``answers``: model → question id → answer text (or turns)."""
    tasks: list[tuple[str, _Task]] = []
    missing = 0
    for model, answer_table in answers.items():
        table = _table(answer_table)
        items, left_out = _plan(questions, table)
        missing += left_out
        tasks.extend((model, _task(judge, "single", q, turn, (table[q.id],), "A"))
                     for q, turn in items)
    done = await _judge_all(judge, store, [t for _, t in tasks], parsing.parse_rating)
    ratings, unparseable = [], dict.fromkeys(answers, 0)
    for model, task in tasks:
        value = done[task.key].parsed
        if value is None:
            unparseable[model] += 1
            continue
        ratings.append(aggregate.Rating(task.question.id, task.question.category, model, value,
                                        turn=task.turn))
    return aggregate.single_result(ratings, unparseable=unparseable, missing=missing)
