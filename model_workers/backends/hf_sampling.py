"""Per-request pieces of the ``hf`` backend: next-token sampling, streaming detokenisation and
stop strings. Nothing here knows about batching; :mod:`model_workers.backends.hf_batching` calls
these once per row per step.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence

import torch

from model_workers.backends.base import SamplingParams

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
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator | None],
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

    def __init__(self, decode: Callable[[list[int]], str], context: Sequence[int] = ()) -> None:
        self._decode = decode
        self._ids = list(context[-_DETOK_CONTEXT:])
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


class StopStrings:
    """Cuts the output before the first stop string and holds back text that may begin one.

    Invariant: no emitted text ends with a proper prefix of a stop string, so a stop string can
    only start in the held-back buffer plus the new delta.
    """

    def __init__(self, stops: Sequence[str]) -> None:
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
