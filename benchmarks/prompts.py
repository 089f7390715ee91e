"""The standard k-shot prompts of MMLU, C-Eval and CMMLU.

MMLU (hendrycks/test ``evaluate.py``)::

    The following are multiple choice questions (with answers) about {subject}.\\n\\n
    {question}\\nA. …\\nB. …\\nC. …\\nD. …\\nAnswer: {X}\\n\\n     (one block per shot)
    {question}\\nA. …\\nB. …\\nC. …\\nD. …\\nAnswer:

C-Eval (``以下是中国关于{科目}考试的单项选择题，请选出其中的正确答案。``, ``答案：X``) and CMMLU
(``以下是关于{科目}的单项选择题，请直接给出正确答案的选项。``, ``题目：…``, ``答案是：X``) use the
Chinese subject names. lm-eval's variants of the three (``prompt_format="lm-eval"``) are the
second format of each suite. The formats are data (``data/<suite>.json``). Shots are the first k dev
items of the subject, in file order; when a ``count_tokens`` budget is given, shots are dropped
from the end until the prompt fits (as MMLU's reference code does), and the count is recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from benchmarks.loaders import LETTERS, Item
from benchmarks.suites import PromptFormat, get_suite

DEFAULT_SHOTS = 5


@dataclass(frozen=True, slots=True)
class Prompt:
    item: Item
    text: str
    shots: int  # how many dev examples the text holds (fewer than asked when over budget)


def format_question(item: Item, fmt: PromptFormat, *, with_answer: bool) -> str:
    """One question block; with its answer (and the blank line) when it is a shot."""
    text = fmt.question_prefix + (item.question.strip() if fmt.strip_question else item.question)
    for letter, choice in zip(LETTERS, item.choices, strict=True):
        text += f"\n{letter}. {choice}"
    text += fmt.answer_prefix
    if with_answer:
        if item.answer is None:
            raise ValueError(f"{item.suite}/{item.subject} {item.split} #{item.index} has no "
                             "answer and can not be a shot")
        text += f"{fmt.answer_separator}{item.answer}\n\n"
    return text


def build_prompt(item: Item, dev: Sequence[Item], *, shots: int = DEFAULT_SHOTS,
                 count_tokens: Callable[[str], int] | None = None,
                 max_tokens: int | None = None, prompt_format: str = "official") -> Prompt:
    """The k-shot prompt for ``item`` with shots from ``dev`` (the subject's dev items).

    With ``count_tokens`` and ``max_tokens``, the prompt plus one answer token must fit in
    ``max_tokens``; shots are dropped from the end until it does (0 shots is the floor).
    """
    suite = get_suite(item.suite)
    fmt = suite.prompt_format(prompt_format)
    header = fmt.header.format(subject=suite.subject(item.subject).title)
    examples = [format_question(d, fmt, with_answer=True) for d in dev[:shots]]
    ending = format_question(item, fmt, with_answer=False)
    k = len(examples)
    text = header + "".join(examples[:k]) + ending
    if count_tokens is not None and max_tokens is not None:
        while k > 0 and count_tokens(text) + 1 > max_tokens:
            k -= 1
            text = header + "".join(examples[:k]) + ending
    return Prompt(item=item, text=text, shots=k)


def build_prompts(items: Sequence[Item], dev: Sequence[Item], *, shots: int = DEFAULT_SHOTS,
                  count_tokens: Callable[[str], int] | None = None,
                  max_tokens: int | None = None, prompt_format: str = "official") -> list[Prompt]:
    """Prompts for ``items``; each takes its shots from the dev items of its own subject."""
    dev_by_subject: dict[tuple[str, str], list[Item]] = {}
    for d in dev:
        dev_by_subject.setdefault((d.suite, d.subject), []).append(d)
    prompts = []
    for item in items:
        subject_dev = dev_by_subject.get((item.suite, item.subject), [])
        if shots and len(subject_dev) < shots:
            raise ValueError(f"{shots}-shot prompts need {shots} dev items for "
                             f"{item.suite}/{item.subject}; there are {len(subject_dev)}")
        prompts.append(build_prompt(item, subject_dev, shots=shots, count_tokens=count_tokens,
                                    max_tokens=max_tokens, prompt_format=prompt_format))
    return prompts
