"""``arena``: an lm-eval model class that scores through our control plane (or one worker).

Importing this module registers it, after which lm-eval runs any task against a registered
checkpoint::

    simple_evaluate(model="arena", model_args={"model": "tiny-llama",
                    "base_url": "http://127.0.0.1:8000", "tokenizer": "/ckpt"}, tasks=[...])

``loglikelihood`` is exact. lm-eval splits each (context, continuation) into tokens with the
model's tokenizer (its ``_encode_pair``); requests that share a context and whose continuations
are one token each, a multiple-choice question's letters, go to ``/api/score`` as one prompt
with those candidates: one forward pass per question. The answer is checked (the prompt's token
count and each candidate's token id must be what lm-eval computed); anything else (longer
continuations, a mismatch, ``greedy=True``) goes through ``/v1/completions`` with the token ids,
``max_tokens=0``, ``echo`` and ``logprobs``, summing the continuation's tokens as lm-eval's own
API models do. ``is_greedy`` is only computed on that path (``greedy=True`` sends everything
there); on the score path it is False: multiple-choice metrics do not read it.

With ``endpoint="/worker/score"`` and a worker's URL as ``base_url`` it talks to one worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
import lm_eval.models  # noqa: F401  # lm-eval's own names first: its registry fills itself only
from lm_eval.api.model import TemplateLM  # while empty, so registering "arena" first would
from lm_eval.api.registry import register_model  # hide "hf" and the rest

logger = logging.getLogger(__name__)

Request = tuple[tuple[str, str], list[int], list[int]]  # (context, continuation), their tokens


@register_model("arena")
class ArenaLM(TemplateLM):
    """lm-eval's ``LM`` over the arena's HTTP surface (see the module docstring)."""

    def __init__(self, model: str, base_url: str, tokenizer: Any = None, *,
                 api_key: str | None = None, batch_size: int | str = 16,
                 endpoint: str = "/api/score", greedy: bool = False, timeout_s: float = 600.0,
                 max_gen_toks: int = 256,
                 on_progress: Callable[[int, int], None] | None = None, **_ignored: Any) -> None:
        super().__init__()
        if tokenizer is None:
            raise ValueError("the arena lm-eval model needs the checkpoint's tokenizer "
                             "(model_args tokenizer=<folder or loaded tokenizer>)")
        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        self.tokenizer = tokenizer
        self.model, self.base_url = model, base_url.rstrip("/")
        self.endpoint, self.greedy = endpoint, bool(greedy)
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 16  # "auto": 16
        self.max_gen_toks, self.on_progress = int(max_gen_toks), on_progress
        self.scored = self.echoed = 0  # requests answered by each path, for reports and tests
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(timeout=timeout_s, headers=headers)

    # -- tokens -------------------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        return int(eos if eos is not None else 0)

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return int(bos if bos is not None else self.eot_token_id)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None,
                   **kwargs: Any) -> list[int]:
        """As the worker tokenizes a text prompt: the tokenizer's default special tokens."""
        special = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        return list(self.tokenizer(string, **special)["input_ids"])

    # -- scoring ------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = self.base_url + path
        try:
            response = self.client.post(url, json=body)
        except httpx.HTTPError as exc:
            raise RuntimeError(f"{url}: {exc!r}") from exc
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:500]}")
        answer: dict[str, Any] = response.json()
        return answer

    def _loglikelihood_tokens(self, requests: list[Request],
                              **kwargs: Any) -> list[tuple[float, bool]]:
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}  # context text → request indices
        echo: list[int] = []
        for i, ((context, _), _, continuation_enc) in enumerate(requests):
            if self.greedy or len(continuation_enc) != 1 or not context.strip():
                echo.append(i)
            else:
                groups.setdefault(context, []).append(i)
        contexts = sorted(groups)  # neighbours share their k-shot prefix: the worker runs it once
        done, total = 0, len(requests)
        for start in range(0, len(contexts), self.batch_size):
            batch = contexts[start: start + self.batch_size]
            echo += self._score_batch(requests, [groups[c] for c in batch], results)
            done += sum(len(groups[c]) for c in batch)
            self._progress(done, total)
        for start in range(0, len(echo), self.batch_size):
            chosen = echo[start: start + self.batch_size]
            self._echo_batch(requests, chosen, results)
            done += len(chosen)
            self._progress(done, total)
        return results  # type: ignore[return-value]

    def _progress(self, done: int, total: int) -> None:
        if self.on_progress is not None:
            self.on_progress(min(done, total), total)

    def _score_batch(self, requests: list[Request], groups: list[list[int]],
                     results: list[tuple[float, bool] | None]) -> list[int]:
        """Score each group's continuations as candidates after its context (one forward pass per
        group); returns the request indices whose answer did not check out."""
        body = {"model": self.model, "requests": [
            {"prompt": requests[g[0]][0][0].rstrip(),  # lm-eval moves trailing spaces over
             "candidates": [_candidate(requests[i][0]) for i in g]} for g in groups]}
        rows = self._post(self.endpoint, body).get("results", [])
        if len(rows) != len(groups):
            raise RuntimeError(f"{self.endpoint} returned {len(rows)} results for {len(groups)}")
        retry: list[int] = []
        for group, row in zip(groups, rows, strict=True):
            context_enc = requests[group[0]][1]
            expected = [requests[i][2][0] for i in group]
            if row["prompt_tokens"] != len(context_enc) or list(row["token_ids"]) != expected:
                logger.info("score endpoint tokenized differently; using the echo path")
                retry += group
                continue
            for i, logprob in zip(group, row["logprobs"], strict=True):
                results[i] = (float(logprob), False)
            self.scored += len(group)
        return retry

    def _echo_batch(self, requests: list[Request], batch: list[int],
                    results: list[tuple[float, bool] | None]) -> None:
        """Prompt log-probabilities of context + continuation token ids (nothing generated)."""
        prompts = [requests[i][1] + requests[i][2] for i in batch]
        body = {"model": self.model, "prompt": prompts, "max_tokens": 0, "echo": True,
                "logprobs": 1 if self.greedy else 0, "temperature": 0}
        choices = sorted(self._post("/v1/completions", body)["choices"], key=lambda c: c["index"])
        for i, choice in zip(batch, choices, strict=True):
            n = len(requests[i][2])
            logprobs = choice["logprobs"]
            values = logprobs["token_logprobs"][-n:]
            if any(v is None for v in values):
                raise RuntimeError("the echo has no log-probability for a continuation token")
            greedy = False
            if self.greedy:
                tops = logprobs["top_logprobs"][-n:]
                tokens = logprobs["tokens"][-n:]
                greedy = all(top and max(top, key=top.get) == tok
                             for top, tok in zip(tops, tokens, strict=True))
            results[i] = (float(sum(values)), greedy)
        self.echoed += len(batch)

    def loglikelihood_rolling(self, requests: list[Any],
                              disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError("the arena model scores loglikelihood and generate_until "
                                  "requests; use lm-eval's local-completions for perplexity")

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy completions through ``/v1/completions``, cut at the task's stop strings."""
        out = []
        for request in requests:
            context, gen_kwargs = request.args
            until = gen_kwargs.get("until") or []
            body = {"model": self.model, "prompt": context, "temperature": 0,
                    "max_tokens": int(gen_kwargs.get("max_gen_toks", self.max_gen_toks)),
                    "stop": [until] if isinstance(until, str) else list(until)}
            text = self._post("/v1/completions", body)["choices"][0]["text"]
            for stop in body["stop"]:
                text = text.split(stop)[0]
            out.append(text)
        return out


def _candidate(pair: tuple[str, str]) -> str:
    context, continuation = pair
    return context[len(context.rstrip()):] + continuation
