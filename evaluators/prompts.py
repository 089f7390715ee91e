"""The judges' prompt texts (our own wording), versioned: change ``PROMPT_VERSION`` whenever a
text changes, so cached judgments made with the old text are not reused.

Single-turn prompts show the question and the answers. A later turn of a multi-turn (MT-bench)
question shows each assistant's whole conversation so far and asks about its answer to the last
user turn. Questions in ``REFERENCE_CATEGORIES`` that carry reference answers show them too (the
judgment key records the turn and the reference, so these prompts are new texts, not changes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

PROMPT_VERSION = "arena-judge-v1"
REFERENCE_CATEGORIES = frozenset({"math", "reasoning", "coding"})  # MT-bench's, one right answer

Kind = Literal["ratio", "pairwise", "single"]
Messages = list[dict[str, str]]

RATIO_SYSTEM = "You are a careful and impartial reviewer of answers written by AI assistants."
RATIO_INSTRUCTION = (
    "Please compare the two answers above. Judge each on how helpful, relevant and accurate "
    "it is, and on its level of detail. Give each assistant one overall score from 1 to 10, "
    "where a higher score means a better answer.\n"
    "On the first line write only the two scores, Assistant 1's first and Assistant 2's "
    "second, separated by a single space. From the second line on, explain your scores. "
    "Do not let the order in which the answers appear, their length, or the assistants' names "
    "sway your judgment."
)
RATIO_TURN_INSTRUCTION = (
    "Above are the conversations of two AI assistants with a user. Please compare only the "
    "assistants' answers to the user's last question, reading the earlier turns as context. "
    "Judge each answer on how helpful, relevant and accurate it is, on how well it follows up "
    "on the conversation, and on its level of detail. Give each assistant one overall score "
    "from 1 to 10, where a higher score means a better answer.\n"
    "On the first line write only the two scores, Assistant 1's first and Assistant 2's "
    "second, separated by a single space. From the second line on, explain your scores. "
    "Do not let the order in which the conversations appear, their length, or the assistants' "
    "names sway your judgment."
)

PAIRWISE_SYSTEM = (
    "You act as an impartial judge of two AI assistants' answers to the user question shown "
    "below. Decide which assistant follows the instructions and answers the question better, "
    "weighing helpfulness, relevance, accuracy, depth and level of detail. Begin with a short "
    "comparison of the two answers. Stay objective: the order of the answers, their length and "
    "the assistants' names must not influence you. After your explanation, give the verdict "
    "in exactly this form: \"[[A]]\" if assistant A is better, \"[[B]]\" if assistant B is "
    "better, \"[[C]]\" for a tie."
)
PAIRWISE_TURN_SYSTEM = (
    "You act as an impartial judge of two AI assistants, each shown in a conversation with a "
    "user below. Decide which assistant answers the user's last question better, reading the "
    "earlier turns as context; weigh helpfulness, relevance, accuracy, depth, level of detail "
    "and how well the answer follows up on the conversation. Begin with a short comparison of "
    "the two last answers. Stay objective: the order of the conversations, their length and "
    "the assistants' names must not influence you. After your explanation, give the verdict "
    "in exactly this form: \"[[A]]\" if assistant A is better, \"[[B]]\" if assistant B is "
    "better, \"[[C]]\" for a tie."
)

SINGLE_SYSTEM = (
    "You act as an impartial judge of the quality of an AI assistant's answer to the user "
    "question shown below. Weigh helpfulness, relevance, accuracy, depth and level of detail. "
    "Begin with a short explanation, then rate the answer from 1 to 10 in exactly this form: "
    "\"[[rating]]\", for example \"Rating: [[6]]\"."
)
SINGLE_TURN_SYSTEM = (
    "You act as an impartial judge of an AI assistant in the conversation with a user shown "
    "below. Rate only the assistant's answer to the user's last question, reading the earlier "
    "turns as context; weigh helpfulness, relevance, accuracy, depth, level of detail and how "
    "well the answer follows up on the conversation. Begin with a short explanation, then rate "
    "the answer from 1 to 10 in exactly this form: \"[[rating]]\", for example "
    "\"Rating: [[6]]\"."
)

REFERENCE_NOTE = (
    "A correct reference answer is given as well. Compare each assistant's answer with it, "
    "point out the assistant's mistakes, and let correctness weigh most."
)


def _reference_block(reference: str | None) -> str:
    if reference is None:
        return ""
    return f"[The Start of Reference Answer]\n{reference}\n[The End of Reference Answer]\n\n"


def _with_note(system: str, reference: object) -> str:
    return system if reference is None else f"{system} {REFERENCE_NOTE}"


def ratio_messages(question: str, answer_1: str, answer_2: str, *,
                   reference: str | None = None) -> Messages:
    """Score-ratio prompt (LLMZoo / Vicuna layout): both answers, then the instruction."""
    note = "" if reference is None else f"\n{REFERENCE_NOTE}"
    user = (
        f"[Question]\n{question}\n\n{_reference_block(reference)}"
        f"[The Start of Assistant 1's Answer]\n{answer_1}\n[The End of Assistant 1's Answer]\n\n"
        f"[The Start of Assistant 2's Answer]\n{answer_2}\n[The End of Assistant 2's Answer]\n\n"
        f"[Instruction]\n{RATIO_INSTRUCTION}{note}\n"
    )
    return [{"role": "system", "content": RATIO_SYSTEM}, {"role": "user", "content": user}]


def pairwise_messages(question: str, answer_a: str, answer_b: str, *,
                      reference: str | None = None) -> Messages:
    """Pairwise prompt (MT-bench style): the verdict is ``[[A]]``, ``[[B]]`` or ``[[C]]``."""
    user = (
        f"[User Question]\n{question}\n\n{_reference_block(reference)}"
        f"[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n\n"
        f"[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]\n"
    )
    return [{"role": "system", "content": _with_note(PAIRWISE_SYSTEM, reference)},
            {"role": "user", "content": user}]


def single_messages(question: str, answer: str, *, reference: str | None = None) -> Messages:
    """Single-answer grading prompt: the rating is ``[[1..10]]``."""
    user = (
        f"[Question]\n{question}\n\n{_reference_block(reference)}"
        f"[The Start of the Assistant's Answer]\n{answer}\n[The End of the Assistant's Answer]\n"
    )
    return [{"role": "system", "content": _with_note(SINGLE_SYSTEM, reference)},
            {"role": "user", "content": user}]


def conversation(title: str, speaker: str, questions: Sequence[str],
                 answers: Sequence[str]) -> str:
    """One conversation as a block: ``### User:`` / ``### <speaker>:`` turns between
    ``[The Start of <title>]`` and ``[The End of <title>]``."""
    turns = "\n\n".join(f"### User:\n{q}\n\n### {speaker}:\n{a}"
                        for q, a in zip(questions, answers, strict=True))
    return f"[The Start of {title}]\n{turns}\n[The End of {title}]\n"


def _reference_conversation(questions: Sequence[str], reference: Sequence[str] | None) -> str:
    if reference is None:
        return ""
    return conversation("the Reference Conversation", "Reference answer", questions,
                        reference) + "\n"


def _assistant(label: str, questions: Sequence[str], answers: Sequence[str]) -> str:
    return conversation(f"{label}'s Conversation with the User", label, questions, answers)


def ratio_turn_messages(questions: Sequence[str], answers_1: Sequence[str],
                        answers_2: Sequence[str], *,
                        reference: Sequence[str] | None = None) -> Messages:
    """Score-ratio prompt for a later turn: both conversations, then the instruction."""
    note = "" if reference is None else f"\n{REFERENCE_NOTE}"
    user = (f"{_reference_conversation(questions, reference)}"
            f"{_assistant('Assistant 1', questions, answers_1)}\n"
            f"{_assistant('Assistant 2', questions, answers_2)}\n"
            f"[Instruction]\n{RATIO_TURN_INSTRUCTION}{note}\n")
    return [{"role": "system", "content": RATIO_SYSTEM}, {"role": "user", "content": user}]


def pairwise_turn_messages(questions: Sequence[str], answers_a: Sequence[str],
                           answers_b: Sequence[str], *,
                           reference: Sequence[str] | None = None) -> Messages:
    """Pairwise prompt for a later turn (MT-bench's multi-turn pairwise layout)."""
    user = (f"{_reference_conversation(questions, reference)}"
            f"{_assistant('Assistant A', questions, answers_a)}\n"
            f"{_assistant('Assistant B', questions, answers_b)}")
    return [{"role": "system", "content": _with_note(PAIRWISE_TURN_SYSTEM, reference)},
            {"role": "user", "content": user}]


def single_turn_messages(questions: Sequence[str], answers: Sequence[str], *,
                         reference: Sequence[str] | None = None) -> Messages:
    """Single-answer grading prompt for a later turn."""
    user = (_reference_conversation(questions, reference)
            + conversation("the Assistant's Conversation with the User", "Assistant", questions,
                           answers))
    return [{"role": "system", "content": _with_note(SINGLE_TURN_SYSTEM, reference)},
            {"role": "user", "content": user}]


def judge_messages(kind: Kind, questions: Sequence[str], answers: Sequence[Sequence[str]],
                   reference: Sequence[str] | None = None) -> Messages:
    """The prompt judging the answers to the last of ``questions`` (the user turns so far).

    ``answers`` holds, per assistant in prompt order, its answer to each of those turns;
    ``reference`` one reference answer per turn, or ``None``. One question: the single-turn
    layouts (unchanged by multi-turn support); more: the conversation layouts.
    """
    if len(questions) == 1:
        question, ref = questions[0], None if reference is None else reference[0]
        if kind == "ratio":
            return ratio_messages(question, answers[0][0], answers[1][0], reference=ref)
        if kind == "pairwise":
            return pairwise_messages(question, answers[0][0], answers[1][0], reference=ref)
        return single_messages(question, answers[0][0], reference=ref)
    if kind == "ratio":
        return ratio_turn_messages(questions, answers[0], answers[1], reference=reference)
    if kind == "pairwise":
        return pairwise_turn_messages(questions, answers[0], answers[1], reference=reference)
    return single_turn_messages(questions, answers[0], reference=reference)
