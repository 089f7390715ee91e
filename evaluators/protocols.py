"""The ``Judge`` interface: a batch of chat prompts in, a batch of replies out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class JudgeReply:
    """One judge completion; ``text`` is ``None`` (and ``error`` set) when the call failed."""

    text: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = None


class Judge(Protocol):
    """A judge model. ``on_reply(index, reply)`` is called as each reply completes, so the
    caller can store it at once (an interrupted run then resumes where it stopped)."""

    model: str

    async def judge(self, prompts: Sequence[Messages], *,
                    on_reply: Callable[[int, JudgeReply], None] | None = None,
                    ) -> list[JudgeReply]: ...
