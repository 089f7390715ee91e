"""Conversation templates: the text a chat checkpoint was trained to read, rendered from data.

Every template is a record in ``templates/templates.toml`` (system text, role labels, separators,
stop strings, the source it was taken from); one small table of styles says how a label and a
turn's text join. The special template ``hf`` means "use the tokenizer's own ``chat_template``"
(:func:`render_with_tokenizer`).

Messages are OpenAI chat messages: ``{"role": "system" | "user" | "assistant", "content": str}``
(``developer`` counts as ``system``; content may also be a list of ``{"type": "text"}`` parts).
A leading system message replaces the template's default system text; after it, turns alternate
user, assistant, user, ... A user message may carry an ``"input"`` key (the Alpaca "input"
context) for templates with an ``input_format`` (``alpaca_input``, ``dolly_v2``,
``chinese_alpaca``).
"""

from __future__ import annotations

import difflib
import functools
import tomllib
from collections.abc import Sequence
from dataclasses import fields
from importlib import resources
from typing import Any, Literal, NamedTuple

from pydantic import ConfigDict, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from model_workers.errors import BadRequest, WorkerError

TEMPLATES_FILE = "templates/templates.toml"  # inside the model_workers package (package-data)

Style = Literal["add_colon", "add_colon_space", "no_colon", "chatglm", "hf"]


class _StyleRule(NamedTuple):
    join: str  # between the role label and a turn's text
    open: str  # after the assistant label when the model is to continue
    round_header: str = ""  # before each user turn, with {n} the round from 0
    bare_first_question: bool = False  # a lone first question is sent without labels


_STYLES: dict[str, _StyleRule] = {
    # FastChat's ADD_COLON_*: "USER: hi" in history, but the prompt ends "ASSISTANT:" because
    # the LLaMA tokenizer makes the space part of the model's first token.
    "add_colon": _StyleRule(join=": ", open=":"),
    # The prompt ends with the space (BELLE trained on "\n\nAssistant: " + answer).
    "add_colon_space": _StyleRule(join=": ", open=": "),
    # Labels are literal prefixes with their own punctuation ("<|USER|>", "### Response:\n").
    "no_colon": _StyleRule(join="", open=""),
    # ChatGLM-6B's chat(): "[Round 0]\n问：...\n答：...\n", and a first question with no
    # history is passed as the bare query.
    "chatglm": _StyleRule(
        join="：", open="：", round_header="[Round {n}]\n", bare_first_question=True
    ),
}


class TemplateFileError(WorkerError):
    """``templates.toml`` is malformed: a bug in the shipped data, not in the request."""


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Template:
    """One model family's conversation format. Field docs are in ``templates.toml``'s header."""

    name: str
    family: str
    description: str
    source: str  # URL of the code or card the exact text was taken from
    style: Style
    system: str = ""  # default system text; a request's system message replaces it
    system_format: str = "{system}"  # how the system text is wrapped; omitted when it is empty
    roles: tuple[str, str] = ("", "")  # (user label, assistant label)
    sep: str = ""  # after each user turn (and after assistant turns when sep2 is unset)
    sep2: str | None = None  # after each assistant turn
    stop: tuple[str, ...] = ()  # stop strings, on top of the tokenizer's EOS
    stop_token_ids: tuple[int, ...] = ()
    examples: tuple[tuple[str, str], ...] = ()  # few-shot (user, assistant) turns, always sent
    input_format: str = ""  # appended to a user turn that has an "input", with {input}
    escape_newlines: bool = False  # write newlines/tabs as "\\n"/"\\t" (ChatYuan's T5 vocab)

    @model_validator(mode="after")
    def _placeholders(self) -> Template:
        if "{system}" not in self.system_format:
            raise ValueError("system_format must contain {system}")
        if self.input_format and "{input}" not in self.input_format:
            raise ValueError("input_format must contain {input}")
        return self


_FIELDS = frozenset(f.name for f in fields(Template))


@functools.cache
def _load() -> dict[str, Template]:
    text = resources.files("model_workers").joinpath(TEMPLATES_FILE).read_text(encoding="utf-8")
    return _parse_templates(text, origin=TEMPLATES_FILE)


def _parse_templates(text: str, *, origin: str) -> dict[str, Template]:
    """Validate a templates TOML document; a problem names the template and the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TemplateFileError(f"{origin}: {exc}") from exc
    if set(data) - {"template"}:
        raise TemplateFileError(
            f"{origin}: unknown top-level key(s) {sorted(set(data) - {'template'})}; "
            "templates are [[template]] tables"
        )
    templates: dict[str, Template] = {}
    for i, record in enumerate(data.get("template", [])):
        name = record.get("name", f"#{i + 1}")
        unknown = sorted(set(record) - _FIELDS)
        if unknown:
            raise TemplateFileError(f"{origin}: template {name!r}: unknown key(s) {unknown}")
        try:
            template = Template(**record)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in exc.errors()
            )
            raise TemplateFileError(f"{origin}: template {name!r}: {problems}") from exc
        if template.name in templates:
            raise TemplateFileError(f"{origin}: template {name!r} is defined twice")
        templates[template.name] = template
    return templates


def template_names() -> list[str]:
    """Every template name, sorted."""
    return sorted(_load())


def list_templates() -> list[Template]:
    """Every template, sorted by name (``hf`` included)."""
    templates = _load()
    return [templates[name] for name in sorted(templates)]


def get_template(name: str) -> Template:
    """The template called ``name``; an unknown name is a :class:`BadRequest` naming close ones."""
    templates = _load()
    if name in templates:
        return templates[name]
    close = difflib.get_close_matches(name, list(templates), n=3, cutoff=0.5)
    if close:
        hint = f"did you mean {', '.join(map(repr, close))}?"
    else:
        hint = f"known templates: {', '.join(sorted(templates))}"
    raise BadRequest(f"unknown conversation template {name!r}; {hint}", param="template")


def stop_strings(template: Template) -> list[str]:
    """The strings that end a reply in ``template``'s format (the tokenizer's EOS aside)."""
    return list(template.stop)


class _Turn(NamedTuple):
    is_user: bool
    text: str
    input: str | None = None


def _text(message: dict[str, Any], i: int) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not (
                isinstance(part, dict)
                and part.get("type") == "text"
                and isinstance(part.get("text"), str)
            ):
                raise BadRequest(
                    f"messages[{i}]: only text content parts are supported", param="messages"
                )
            parts.append(part["text"])
        return "".join(parts)
    raise BadRequest(f"messages[{i}]: content must be a string", param="messages")


def _parse(
    messages: Sequence[dict[str, Any]],
    *,
    add_generation_prompt: bool,
) -> tuple[str | None, list[_Turn]]:
    """Split ``messages`` into the system text (None: none given) and alternating turns."""
    if not messages:
        raise BadRequest(
            "messages is empty: a conversation needs at least one user message", param="messages"
        )
    system: str | None = None
    turns: list[_Turn] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"messages[{i}] is not an object", param="messages")
        role = message.get("role")
        if role in ("system", "developer"):
            if i != 0:
                raise BadRequest(
                    f"messages[{i}]: a system message may only come first", param="messages"
                )
            system = _text(message, i)
            continue
        if role not in ("user", "assistant"):
            raise BadRequest(
                f"messages[{i}]: unknown role {role!r} (expected system, user or assistant)",
                param="messages",
            )
        expected = "user" if len(turns) % 2 == 0 else "assistant"
        if role != expected:
            raise BadRequest(
                f"messages[{i}]: expected {'a user' if expected == 'user' else 'an assistant'} "
                f"message, got {role}: "
                "after the optional system message, roles must alternate "
                "user/assistant starting with user",
                param="messages",
            )
        extra = message.get("input")
        if extra is not None and (role != "user" or not isinstance(extra, str)):
            raise BadRequest(
                f"messages[{i}]: 'input' must be a string on a user message", param="messages"
            )
        turns.append(_Turn(role == "user", _text(message, i), extra))
    if not turns:
        raise BadRequest("messages has no user message", param="messages")
    if add_generation_prompt and not turns[-1].is_user:
        raise BadRequest(
            f"messages[{len(messages) - 1}]: the last message must come from the "
            "user for the assistant to reply",
            param="messages",
        )
    return system, turns


def render(
    template: Template, messages: Sequence[dict[str, Any]], *, add_generation_prompt: bool = True
) -> str:
    """The prompt text for ``messages`` in ``template``'s format.

    With ``add_generation_prompt`` the text ends with the assistant's label, so the model goes
    on as the assistant (the last message must then be a user message). Raises
    :class:`BadRequest` for a malformed conversation.
    """
    if template.style == "hf":
        raise BadRequest(
            "template 'hf' renders with the tokenizer's chat_template: use render_with_tokenizer",
            param="template",
        )
    system, turns = _parse(messages, add_generation_prompt=add_generation_prompt)
    rule = _STYLES[template.style]
    user, assistant = template.roles
    sep2 = template.sep if template.sep2 is None else template.sep2
    system_text = template.system if system is None else system
    prefix = template.system_format.replace("{system}", system_text) if system_text else ""

    all_turns = [t for u, a in template.examples for t in (_Turn(True, u), _Turn(False, a))]
    all_turns += turns

    if rule.bare_first_question and add_generation_prompt and len(all_turns) == 1:
        text = prefix + _with_input(template, all_turns[0])
    else:
        out = [prefix]
        for index, turn in enumerate(all_turns):
            if turn.is_user:
                if rule.round_header:
                    out.append(rule.round_header.format(n=index // 2))
                out.append(user + rule.join + _with_input(template, turn) + template.sep)
            else:
                out.append(assistant + rule.join + turn.text + sep2)
        if add_generation_prompt:
            out.append(assistant + rule.open)
        text = "".join(out)
    if template.escape_newlines:
        text = text.replace("\n", "\\n").replace("\t", "\\t")
    return text


def _with_input(template: Template, turn: _Turn) -> str:
    if turn.input is None:
        return turn.text
    if not template.input_format:
        raise BadRequest(
            f"template {template.name!r} has no input field; use e.g. 'alpaca_input' "
            "for an instruction with an input, or put the input in the content",
            param="messages",
        )
    return turn.text + template.input_format.replace("{input}", turn.input)


def render_with_tokenizer(
    tokenizer: Any, messages: Sequence[dict[str, Any]], *, add_generation_prompt: bool = True
) -> str:
    """The prompt text for ``messages`` from the tokenizer's own ``chat_template`` (``hf``).

    The conversation is checked as for :func:`render` first, so every template accepts the same
    requests. A tokenizer without a chat_template is a :class:`BadRequest`.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise BadRequest(
            "this checkpoint's tokenizer has no chat_template, so template 'hf' "
            "cannot render it; register the checkpoint with a named template "
            f"(one of: {', '.join(n for n in template_names() if n != 'hf')})",
            param="template",
        )
    system, turns = _parse(messages, add_generation_prompt=add_generation_prompt)
    if any(turn.input is not None for turn in turns):
        raise BadRequest(
            "template 'hf' has no input field; put the input in the content", param="messages"
        )
    chat = [{"role": "system", "content": system}] if system is not None else []
    chat += [{"role": "user" if t.is_user else "assistant", "content": t.text} for t in turns]
    from jinja2 import TemplateError  # transformers' own dependency; only needed here

    try:
        return tokenizer.apply_chat_template(
            chat, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except TemplateError as exc:  # the template's raise_exception(): e.g. no system role
        raise BadRequest(
            f"the tokenizer's chat_template refused the conversation: {exc}", param="messages"
        ) from exc


EXAMPLE_MESSAGES: tuple[dict[str, str], ...] = (
    {"role": "user", "content": "Hello!"},
    {"role": "assistant", "content": "Hi there."},
    {"role": "user", "content": "What is 2+2?"},
)


def render_example(name: str) -> str:
    """:data:`EXAMPLE_MESSAGES` rendered with template ``name``, ready for the assistant."""
    template = get_template(name)
    if template.style == "hf":
        return (
            "Template 'hf' renders with the checkpoint tokenizer's own chat_template "
            "(tokenizer.apply_chat_template), so what it looks like depends on the "
            "checkpoint; there is no fixed example."
        )
    return render(template, list(EXAMPLE_MESSAGES))


# --- training: which parts of a rendered conversation are the assistant's answers ---------

SegmentKind = Literal["context", "answer", "answer_end"]


class Segment(NamedTuple):
    """One piece of a rendered conversation, for masking the loss in fine-tuning.

    ``kind`` is ``"answer"`` for an assistant answer's text, ``"answer_end"`` for the text the
    template writes right after an answer (``sep2``: e.g. ``"</s>"`` or ``"\\n\\n### End\\n\\n"``;
    for ``hf``, what its chat_template writes after the final answer), and ``"context"`` for
    everything else (system text, few-shot examples, user turns, role labels).
    """

    text: str
    kind: SegmentKind


# Private-use characters mark where each answer goes: the conversation is rendered by the
# very function that renders prompts, so training text and serving text can not drift apart.
_MARK_OPEN, _MARK_CLOSE = "\ue000", "\ue001"


def _marked(messages: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """``messages`` with each assistant content replaced by a numbered marker, and the answers."""
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "assistant":
        raise BadRequest(
            "a training conversation must end with an assistant message", param="messages"
        )
    marked: list[dict[str, Any]] = []
    answers: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"messages[{i}] is not an object", param="messages")
        text = _text(message, i) if message.get("role") in ("system", "developer", "user",
                                                           "assistant") else ""
        if _MARK_OPEN in text or _MARK_CLOSE in text:
            raise BadRequest(f"messages[{i}]: contains reserved characters U+E000/U+E001",
                             param="messages")
        if message.get("role") == "assistant":
            marked.append({**message, "content": f"{_MARK_OPEN}{len(answers)}{_MARK_CLOSE}"})
            answers.append(text)
        else:
            marked.append(dict(message))
    return marked, answers


def _split_marked(text: str, answers: list[str], ends: list[str]) -> list[Segment]:
    segments: list[Segment] = []
    pos = 0
    for i, (answer, end) in enumerate(zip(answers, ends, strict=True)):
        mark = f"{_MARK_OPEN}{i}{_MARK_CLOSE}"
        at = text.index(mark, pos)
        if at > pos:
            segments.append(Segment(text[pos:at], "context"))
        segments.append(Segment(answer, "answer"))
        pos = at + len(mark)
        if end:
            if not text.startswith(end, pos):  # an invariant of the renderers, not user input
                raise TemplateFileError(f"answer {i} is not followed by {end!r}")
            segments.append(Segment(end, "answer_end"))
            pos += len(end)
    if pos < len(text):
        segments.append(Segment(text[pos:], "context"))
    return segments


def render_segments(template: Template, messages: Sequence[dict[str, Any]]) -> list[Segment]:
    """``messages`` (ending with an assistant answer) in ``template``'s format, as segments.

    The texts joined are ``render(template, messages, add_generation_prompt=False)``, except
    that the last answer always follows its serving prompt (``render(template, messages[:-1])``;
    the two differ only where a template sends a lone first question bare). Each answer segment is what the model writes after the serving prompt (``render`` with
    ``add_generation_prompt``): the message's content, and for style ``add_colon`` the space
    after the colon before it. The few-shot ``examples`` of a template are context.
    """
    marked, answers = _marked(messages)
    rule = _STYLES.get(template.style)
    text = render(template, marked, add_generation_prompt=False)
    sep2 = template.sep if template.sep2 is None else template.sep2
    if template.escape_newlines:  # markers hold no newline, so escaping piecewise is the same
        answers = [a.replace("\n", "\\n").replace("\t", "\\t") for a in answers]
        sep2 = sep2.replace("\n", "\\n").replace("\t", "\\t")
    serving = render(template, marked[:-1], add_generation_prompt=True)
    if not text.startswith(serving):  # ChatGLM sends a lone first question bare
        text = serving + marked[-1]["content"] + sep2
    segments = _split_marked(text, answers, [sep2] * len(answers))
    # An answer is what the model writes after the serving prompt, which ends with the label
    # and `open`: with add_colon ("ASSISTANT:") the space after the colon is the answer's.
    if rule is None or rule.join == rule.open or not rule.join.startswith(rule.open):
        return segments
    label, extra = template.roles[1] + rule.open, rule.join[len(rule.open):]
    for i, segment in enumerate(segments):
        before = segments[i - 1] if i else None
        if (segment.kind == "answer" and before is not None
                and before.text.endswith(label + extra)):
            segments[i - 1] = Segment(before.text[: -len(extra)], before.kind)
            segments[i] = Segment(extra + segment.text, "answer")
    return [s for s in segments if s.text]


def render_segments_with_tokenizer(
    tokenizer: Any, messages: Sequence[dict[str, Any]]
) -> list[Segment]:
    """As :func:`render_segments` for template ``hf`` (the tokenizer's ``chat_template``).

    An answer's ``answer_end`` is the text the chat_template writes after the final answer
    (e.g. ``"</s>\\n"`` or ``"<|im_end|>\\n"``) where the text after each earlier answer starts
    with it too; the rest is context.
    """
    marked, answers = _marked(messages)
    text = render_with_tokenizer(tokenizer, marked, add_generation_prompt=False)
    last = f"{_MARK_OPEN}{len(answers) - 1}{_MARK_CLOSE}"
    if text.count(last) != 1:
        raise BadRequest("the tokenizer's chat_template does not write each assistant answer "
                         "once, so answers can not be told apart for training", param="template")
    marks = [f"{_MARK_OPEN}{i}{_MARK_CLOSE}" for i in range(len(answers))]
    if any(mark not in text for mark in marks):
        raise BadRequest("the tokenizer's chat_template leaves out earlier assistant answers, "
                         "so they can not be trained on", param="template")
    closing = text[text.index(last) + len(last):]
    ends = []
    for mark in marks:
        after = text[text.index(mark) + len(mark):]
        ends.append(closing if after.startswith(closing) else "")
    return _split_marked(text, answers, ends)
