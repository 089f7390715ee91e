"""Token budgets: the scored model's context length and an exact token counter, so that a prompt
that would overflow gets fewer shots (the count is recorded per item).

Counting is exact, with the model's own tokenizer (special tokens included, as the scorer reads
the prompt). Most prompts are not counted at all: no tokenizer makes more tokens than a text has
UTF-8 bytes, plus a few special tokens (``MARGIN``), so a prompt whose byte length fits is known
to fit.

Where the tokenizer comes from:

* a checkpoint folder scored in-process: its tokenizer and config;
* a model behind the control plane: its registry entry (``GET /api/checkpoints/{name}``) gives
  the context length and the source the workers load; that source's tokenizer is used when it is
  on this machine (a folder, or the local Hugging Face cache; never downloaded), else the
  ``/worker/tokenize`` endpoint of a healthy worker serving the model (``GET /api/workers``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from benchmarks.scorers import ScoringError

logger = logging.getLogger(__name__)

MARGIN = 8  # special tokens (BOS, EOS, a SentencePiece dummy prefix) a tokenizer may add
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


@dataclass
class TokenBudget:
    """``max_tokens`` for prompt + answer token; ``count`` tokenizes exactly."""

    max_tokens: int
    count: Callable[[str], int]
    source: str  # where the counts come from, for the report

    def count_tokens(self, text: str) -> int:
        """The exact count, or an upper bound where that bound already fits the budget."""
        bound = len(text.encode("utf-8")) + MARGIN
        return bound if bound + 1 <= self.max_tokens else self.count(text)


def context_length(config: Any, tokenizer: Any = None) -> int | None:
    """A transformers config's context length (the keys the hf worker backend reads), else the
    tokenizer's ``model_max_length`` when it is set."""
    for key in _CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else None  # unset: ~1e30


def tokenizer_counter(tokenizer: Any) -> Callable[[str], int]:
    return lambda text: len(tokenizer(text)["input_ids"])


def local_budget(tokenizer: Any, config: Any) -> TokenBudget | None:
    """The budget of a model loaded in-process."""
    limit = context_length(config, tokenizer)
    if limit is None:
        return None
    return TokenBudget(max_tokens=limit, count=tokenizer_counter(tokenizer), source="tokenizer")


def checkpoint_entry(client: httpx.Client, base_url: str, model: str) -> dict[str, Any] | None:
    """The registry entry of ``model``; None when the control plane does not know it."""
    url = f"{base_url.rstrip('/')}/api/checkpoints/{model}"
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        raise ScoringError(f"{url}: {exc!r}") from exc
    if response.status_code != 200:
        logger.warning("no registry entry for %s at %s (%s)", model, base_url,
                       response.status_code)
        return None
    entry: dict[str, Any] = response.json()
    return entry


def load_checkpoint_tokenizer(entry: dict[str, Any]) -> Any | None:
    """The tokenizer workers load for a registry entry, if its files are on this machine."""
    from transformers import AutoTokenizer

    materialized = entry.get("materialized_path")
    source = materialized or entry.get("source")
    try:
        return AutoTokenizer.from_pretrained(
            source, revision=None if materialized else entry.get("revision"),
            gguf_file=None if materialized else entry.get("gguf_file"), local_files_only=True)
    except (OSError, ValueError) as exc:
        logger.info("the tokenizer of %s is not on this machine: %s", source, exc)
        return None


def _worker_counter(client: httpx.Client, base_url: str, model: str) -> Callable[[str], int] | None:
    """Counting through ``/worker/tokenize`` of a healthy worker that serves ``model``."""
    try:
        rows = client.get(f"{base_url.rstrip('/')}/api/workers").json()
    except (httpx.HTTPError, ValueError):
        return None
    addresses = [r["address"] for r in rows if r.get("healthy") and model in r.get("models", [])]
    if not addresses:
        return None
    url = addresses[0].rstrip("/") + "/worker/tokenize"

    def count(text: str) -> int:
        response = client.post(url, json={"model": model, "text": text})
        response.raise_for_status()
        return int(response.json()["count"])

    try:
        count("Answer:")
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        logger.warning("the worker at %s does not tokenize for us: %s", url, exc)
        return None
    return count


def remote_budget(client: httpx.Client, base_url: str, model: str,
                  tokenizer: Any | None = None) -> TokenBudget | None:
    """The budget of a registered model (see the module docstring); None, with a warning, when
    the context length or a way to count is missing: prompts are then sent whole."""
    entry = checkpoint_entry(client, base_url, model)
    limit = entry.get("context_length") if entry else None
    if not limit:
        logger.warning("the context length of %s is unknown: prompts keep all their shots", model)
        return None
    if tokenizer is None and entry is not None:
        tokenizer = load_checkpoint_tokenizer(entry)
    if tokenizer is not None:
        return TokenBudget(max_tokens=int(limit), count=tokenizer_counter(tokenizer),
                           source="tokenizer")
    count = _worker_counter(client, base_url, model)
    if count is None:
        logger.warning("no tokenizer for %s here and no worker to count tokens: prompts keep "
                       "all their shots", model)
        return None
    return TokenBudget(max_tokens=int(limit), count=count, source="worker")
