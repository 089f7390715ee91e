"""The judges' prompt texts (our own wording), versioned: change ``PROMPT_VERSION`` whenever a
text changes, so cached judgments made with the old text are not reused."""

from __future__ import annotations

from typing import Literal

PROMPT_VERSION = "arena-judge-v1"

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

PAIRWISE_SYSTEM = (
    "You act as an impartial judge of two AI assistants' answers to the user question shown "
    "below. Decide which assistant follows the instructions and answers the question better, "
    "weighing helpfulness, relevance, accuracy, depth and level of detail. Begin with a short "
    "comparison of the two answers. Stay objective: the order of the answers, their length and "
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


def ratio_messages(question: str, answer_1: str, answer_2: str) -> Messages:
    """Score-ratio prompt (LLMZoo / Vicuna layout): both answers, then the instruction."""
    user = (
        f"[Question]\n{question}\n\n"
        f"[The Start of Assistant 1's Answer]\n{answer_1}\n[The End of Assistant 1's Answer]\n\n"
        f"[The Start of Assistant 2's Answer]\n{answer_2}\n[The End of Assistant 2's Answer]\n\n"
        f"[Instruction]\n{RATIO_INSTRUCTION}\n"
    )
    return [{"role": "system", "content": RATIO_SYSTEM}, {"role": "user", "content": user}]


def pairwise_messages(question: str, answer_a: str, answer_b: str) -> Messages:
    """Pairwise prompt (MT-bench style): the verdict is ``[[A]]``, ``[[B]]`` or ``[[C]]``."""
    user = (
        f"[User Question]\n{question}\n\n"
        f"[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n\n"
        f"[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]\n"
    )
    return [{"role": "system", "content": PAIRWISE_SYSTEM}, {"role": "user", "content": user}]


def single_messages(question: str, answer: str) -> Messages:
    """Single-answer grading prompt: the rating is ``[[1..10]]``."""
    user = (
        f"[Question]\n{question}\n\n"
        f"[The Start of the Assistant's Answer]\n{answer}\n[The End of the Assistant's Answer]\n"
    )
    return [{"role": "system", "content": SINGLE_SYSTEM}, {"role": "user", "content": user}]
