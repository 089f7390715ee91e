"""Scorers: log-probabilities of candidate answer letters as the token after a prompt.

A candidate is tokenized in context (``prompt + candidate``) and its first token after the
prompt's tokens is scored, exactly as the worker's ``/worker/score`` does; so " A" after MMLU's
"Answer:" and "A" after the Chinese "答案：" both pick the letter token the model would emit.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
from pathlib import Path
from typing import Any, Protocol

import httpx

DEFAULT_BATCH = 16  # prompts per request/forward pass; 5-shot MMLU prompts are ~0.5-1k tokens


class Scorer(Protocol):
    """Batch in, batch out: one list of log-probs (one per candidate) for each prompt."""

    async def score(self, prompts: list[str], candidates: list[str]) -> list[list[float]]: ...


class ScoringError(RuntimeError):
    """The scoring backend failed or answered something other than what was asked."""


def _length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped longest first, so each batch holds prompts of similar length."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


def _common_prefix(sequences: list[list[int]]) -> int:
    """Length of the longest common prefix: that of the lexicographic minimum and maximum."""
    low, high = min(sequences), max(sequences)
    for n, (a, b) in enumerate(zip(low, high, strict=False)):
        if a != b:
            return n
    return len(low)


class WorkerScorer:
    """Scores through a worker's ``POST /worker/score`` (or the control plane's ``/api/score``:
    pass ``endpoint="/api/score"`` and an ``api_key`` if it asks for one)."""

    def __init__(self, base_url: str, model: str, *, endpoint: str = "/worker/score",
                 batch_size: int = DEFAULT_BATCH, api_key: str | None = None,
                 timeout_s: float = 600.0) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.url = base_url.rstrip("/") + endpoint
        self.model, self.batch_size, self.timeout_s = model, batch_size, timeout_s
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def score(self, prompts: list[str], candidates: list[str]) -> list[list[float]]:
        results: list[list[float]] = [[] for _ in prompts]
        async with httpx.AsyncClient(timeout=self.timeout_s, headers=self.headers) as client:
            for batch in _length_batches([len(p) for p in prompts], self.batch_size):
                body = {"model": self.model,
                        "requests": [{"prompt": prompts[i], "candidates": candidates}
                                     for i in batch]}
                try:
                    response = await client.post(self.url, json=body)
                except httpx.HTTPError as exc:
                    raise ScoringError(f"{self.url}: {exc!r}") from exc
                if response.status_code != 200:
                    raise ScoringError(f"{self.url} answered {response.status_code}: "
                                       f"{response.text[:500]}")
                rows = response.json().get("results", [])
                if len(rows) != len(batch):
                    raise ScoringError(f"{self.url} returned {len(rows)} results for "
                                       f"{len(batch)} prompts")
                for i, row in zip(batch, rows, strict=True):
                    if len(row["logprobs"]) != len(candidates):
                        raise ScoringError(f"{self.url} scored {len(row['logprobs'])} of "
                                           f"{len(candidates)} candidates")
                    results[i] = [float(x) for x in row["logprobs"]]
        return results


class LocalScorer:
    """transformers in-process, one forward pass per question, without recomputing what
    questions share.

    The prompts of one subject share their k-shot prefix (header and shots: most of each
    prompt). Prompts whose token ids share at least ``MIN_PREFIX`` leading tokens are scored
    as that prefix, computed once into a KV cache, plus each prompt's own rest in left-padded
    batches on top of it; the rest of the prompts as whole left-padded batches. Either way
    only the last position's logits are computed. The log-probabilities are those of one
    unpadded forward pass per prompt, up to float rounding (the tests hold them to 1e-4).
    """

    MIN_PREFIX = 32  # tokens; a shorter shared prefix is not worth its own forward pass

    def __init__(self, model_dir: str | Path, *, batch_size: int = DEFAULT_BATCH,
                 device: str = "cpu") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer: Any = AutoTokenizer.from_pretrained(model_dir)
        auto: Any = AutoModelForCausalLM  # transformers' stubs type ``.to`` oddly
        self.model: Any = auto.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
        self.device, self.batch_size = device, batch_size
        parameters = inspect.signature(self.model.forward).parameters
        self._positions = "position_ids" in parameters
        self._keep = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}
        self._prefixes = self._positions and "past_key_values" in parameters
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)

    async def score(self, prompts: list[str], candidates: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._score, prompts, candidates)

    def _candidate_tokens(self, prompts: list[str], encoded: list[list[int]],
                          candidates: list[str]) -> list[list[int]]:
        """Each candidate's first token after each prompt, tokenized in context (one batched
        tokenizer call), else on its own when a merge crosses the prompt's end."""
        full = self.tokenizer([p + c for p in prompts for c in candidates])["input_ids"]
        alone = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in candidates]
        out = []
        for k, ids in enumerate(encoded):
            row = []
            for j, candidate in enumerate(candidates):
                tokens = full[k * len(candidates) + j]
                if len(tokens) > len(ids) and tokens[: len(ids)] == ids:
                    row.append(tokens[len(ids)])
                elif alone[j]:
                    row.append(alone[j][0])
                else:
                    raise ScoringError(f"candidate {candidate!r} has no tokens")
            out.append(row)
        return out

    def _score(self, prompts: list[str], candidates: list[str]) -> list[list[float]]:
        encoded = list(self.tokenizer(prompts)["input_ids"])
        tokens = self._candidate_tokens(prompts, encoded, candidates)
        results: list[list[float]] = [[] for _ in prompts]
        whole: list[int] = []  # prompts without a long shared prefix: whole-prompt batches
        runs: list[tuple[list[int], int]] = []
        for members, shared in self._prefix_groups(encoded):
            if len(members) > 1 and shared >= self.MIN_PREFIX:
                runs.append((members, shared))
            else:
                whole += members
        if whole:
            runs.append((whole, 0))
        for members, prefix in runs:
            rows = self._last_logprobs([encoded[i] for i in members], prefix=prefix)
            for i, row in zip(members, rows, strict=True):
                results[i] = row[tokens[i]].tolist()
        return results

    def _prefix_groups(self, encoded: list[list[int]]) -> list[tuple[list[int], int]]:
        """Prompts grouped by a long shared prefix (the k-shot part of one subject): sorted
        token lists, split where the next one shares less than half of the group's prefix."""
        if not self._prefixes:
            return [(list(range(len(encoded))), 0)]
        order = sorted(range(len(encoded)), key=lambda i: encoded[i])
        groups: list[tuple[list[int], int]] = []
        members, shared = [order[0]], len(encoded[order[0]]) - 1
        for i in order[1:]:  # sorted: a group's common prefix is its first and last one's
            common = min(_common_prefix([encoded[members[0]], encoded[i]]), len(encoded[i]) - 1)
            if common >= self.MIN_PREFIX and 2 * common >= shared:
                members.append(i)
                shared = min(shared, common)
            else:
                groups.append((members, shared))
                members, shared = [i], len(encoded[i]) - 1
        groups.append((members, shared))
        return groups

    def _last_logprobs(self, sequences: list[list[int]], *, prefix: int) -> list[Any]:
        """Next-token log-probs after each sequence; the first ``prefix`` tokens (the same in
        every sequence) are computed once and reused from the KV cache."""
        import torch

        out: list[Any] = [None] * len(sequences)
        cache = None
        with torch.no_grad():
            if prefix:
                head = torch.tensor([sequences[0][:prefix]], device=self.device)
                cache = self.model(input_ids=head, use_cache=True, **self._keep).past_key_values
            rests = [s[prefix:] for s in sequences]
            for batch in _length_batches([len(r) for r in rests], self.batch_size):
                width = max(len(rests[i]) for i in batch)
                input_ids = torch.tensor([[self.pad_id] * (width - len(rests[i])) + rests[i]
                                          for i in batch], device=self.device)
                own = torch.tensor([[0] * (width - len(rests[i])) + [1] * len(rests[i])
                                    for i in batch], device=self.device)
                mask = torch.cat([torch.ones(len(batch), prefix, dtype=own.dtype,
                                             device=self.device), own], dim=1)
                kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask,
                                          **self._keep}
                if self._positions:  # left padding: positions count real tokens only
                    kwargs["position_ids"] = prefix + (own.cumsum(-1) - 1).clamp(min=0)
                if cache is not None:
                    past = copy.deepcopy(cache)
                    past.batch_repeat_interleave(len(batch))
                    kwargs.update(past_key_values=past, use_cache=True)
                logits = self.model(**kwargs).logits[:, -1, :]
                logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
                for row, i in enumerate(batch):
                    out[i] = logprobs[row]
        return out
