"""Per-request pieces of the ``hf`` backend: next-token sampling, streaming detokenisation, stop
strings, and the :class:`Sequence` that ties them together for one request. Nothing here knows
about batching; :mod:`model_workers.backends.hf_batching` calls these once per row per step.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from model_workers.backends.base import FinishReason, GenerationChunk, SamplingParams
from model_workers.errors import WorkerError

Delivery = Callable[[GenerationChunk | WorkerError], None]

# How many tokens before the unread ones are decoded with them, so that a SentencePiece
# tokenizer does not drop the leading space of the first new token (vLLM uses the same window).
_DETOK_CONTEXT = 5


def make_generator(params: SamplingParams) -> torch.Generator | None:
    """A CPU generator seeded from ``params.seed`` (a random seed when unset); None for greedy.

    Sampling always happens on the CPU so that a seed gives the same text on every device.
    """
    if params.temperature == 0:
        return None
    generator = torch.Generator(device="cpu")
    generator.manual_seed(params.seed if params.seed is not None else secrets.randbits(63))
    return generator


def next_tokens(
    logits: torch.Tensor,
    params: list[SamplingParams],
    generators: list[torch.Generator | None],
) -> list[int]:
    """One next token per row of ``logits`` ``[batch, vocab]``: argmax for greedy rows, else
    temperature + nucleus sampling with that row's own generator (independent of the batch)."""
    tokens = logits.argmax(dim=-1).tolist()
    sampled = [i for i, p in enumerate(params) if p.temperature > 0]
    if sampled:
        rows = logits[sampled].float().cpu()
        for row, i in zip(rows, sampled, strict=True):
            tokens[i] = _sample_row(row, params[i], generators[i])
    return tokens


def _sample_row(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
) -> int:
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        drop = sorted_probs.cumsum(-1) - sorted_probs >= params.top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator).item())


class Detokenizer:
    """Turns a growing list of token ids into text deltas without splitting a UTF-8 character.

    Only a short window is decoded each time (the last few already-read ids plus the new ones), and
    the delta is the decoded window minus the decoded prefix, so the cost per token is constant.
    A delta ending in U+FFFD (an incomplete byte sequence) is held back until the next token.
    """

    def __init__(
        self, decode: Callable[[list[int]], str], context: list[int] | None = None
    ) -> None:
        self._decode = decode
        self._ids = list(context or [])[-_DETOK_CONTEXT:]
        self._prefix = 0  # start of the decoding window
        self._read = len(self._ids)  # ids before this have been turned into text

    def push(self, token_id: int) -> str:
        """Add one token; return the new complete text (possibly empty)."""
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        if len(text) <= len(prefix_text) or text.endswith("\ufffd"):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(prefix_text) :]

    def flush(self) -> str:
        """The held-back text (an incomplete character decodes as U+FFFD) once output ends,
        so that the streamed text always equals the decoded output."""
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return text[len(prefix_text) :]


class StopStrings:
    """Cuts the output before the first stop string and holds back text that may begin one.

    Invariant: no emitted text ends with a proper prefix of a stop string, so a stop string can
    only start in the held-back buffer plus the new delta.
    """

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._pending = ""

    def feed(self, delta: str) -> tuple[str, bool]:
        """Return ``(text safe to emit, whether a stop string was reached)``."""
        if not self._stops:
            return delta, False
        buffer = self._pending + delta
        hits = [i for i in (buffer.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._pending = ""
            return buffer[: min(hits)], True
        hold = self._held_suffix(buffer)
        self._pending = buffer[len(buffer) - hold :]
        return buffer[: len(buffer) - hold], False

    def flush(self) -> str:
        """The held-back text, once the output ends for another reason."""
        text, self._pending = self._pending, ""
        return text

    def _held_suffix(self, buffer: str) -> int:
        longest = min(len(buffer), max(len(s) for s in self._stops) - 1)
        for size in range(longest, 0, -1):
            tail = buffer[-size:]
            if any(s.startswith(tail) for s in self._stops):
                return size
        return 0


@dataclass(eq=False)
class Sequence:
    """One request being generated; only the scheduler thread touches it (except ``cancelled``)."""

    adapter: str | None  # served model name of the LoRA adapter; None for the base
    prompt_ids: list[int]
    params: SamplingParams
    stop_ids: frozenset[int]
    detokenizer: Detokenizer
    stops: StopStrings
    generator: torch.Generator | None
    deliver: Delivery  # thread-safe hand-off to the waiting client
    output_ids: list[int] = field(default_factory=list)
    cancelled: bool = False  # set by the client when it stops listening
    arrived: float = field(default_factory=time.monotonic)

    def push(self, token: int) -> GenerationChunk | None:
        """Record one generated token; the chunk to deliver, if the token completes any text or
        ends the output (then ``finish_reason`` is set)."""
        self.output_ids.append(token)
        finish: FinishReason | None = None
        if token in self.stop_ids:  # the stop token's own text is not part of the output
            finish, delta = "stop", self.detokenizer.flush()
        else:
            delta = self.detokenizer.push(token)
            if len(self.output_ids) >= self.params.max_tokens:
                finish, delta = "length", delta + self.detokenizer.flush()
        text, hit = self.stops.feed(delta)
        if hit:
            finish = "stop"
        elif finish:
            text += self.stops.flush()
        if not (text or finish):
            return None
        return GenerationChunk(text, len(self.prompt_ids), len(self.output_ids), finish)
