"""Scorers: log-probabilities of candidate answer letters as the token after a prompt.

A candidate is tokenized in context (``prompt + candidate``) and its first token after the
prompt's tokens is scored, exactly as the worker's ``/worker/score`` does; so " A" after MMLU's
"Answer:" and "A" after the Chinese "答案：" both pick the letter token the model would emit.
"""

from __future__ import annotations

import asyncio
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
    """transformers in-process: left-padded batches, one forward pass per batch."""

    def __init__(self, model_dir: str | Path, *, batch_size: int = DEFAULT_BATCH,
                 device: str = "cpu") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer: Any = AutoTokenizer.from_pretrained(model_dir)
        auto: Any = AutoModelForCausalLM  # transformers' stubs type ``.to`` oddly
        self.model: Any = auto.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
        self.device, self.batch_size = device, batch_size
        self._positions = "position_ids" in inspect.signature(self.model.forward).parameters
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)

    async def score(self, prompts: list[str], candidates: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._score, prompts, candidates)

    def _candidate_token(self, prompt: str, ids: list[int], candidate: str) -> int:
        full = self.tokenizer(prompt + candidate)["input_ids"]
        if len(full) > len(ids) and full[: len(ids)] == ids:
            return full[len(ids)]
        alone = self.tokenizer(candidate, add_special_tokens=False)["input_ids"]
        if not alone:
            raise ScoringError(f"candidate {candidate!r} has no tokens")
        return alone[0]

    def _score(self, prompts: list[str], candidates: list[str]) -> list[list[float]]:
        import torch

        encoded = [self.tokenizer(p)["input_ids"] for p in prompts]
        results: list[list[float]] = [[] for _ in prompts]
        for batch in _length_batches([len(ids) for ids in encoded], self.batch_size):
            width = max(len(encoded[i]) for i in batch)
            input_ids = torch.tensor([[self.pad_id] * (width - len(encoded[i])) + encoded[i]
                                      for i in batch], device=self.device)
            mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i])
                                 for i in batch], device=self.device)
            kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask}
            if self._positions:  # left padding: positions count real tokens only
                kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.no_grad():
                logits = self.model(**kwargs).logits[:, -1, :]
            logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
            for row, i in enumerate(batch):
                tokens = [self._candidate_token(prompts[i], encoded[i], c) for c in candidates]
                results[i] = logprobs[row, tokens].tolist()
        return results
