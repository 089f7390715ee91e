"""The ``vllm`` backend: vLLM's async engine in-process, one base model plus LoRA adapters.

Needs a CUDA machine with vLLM installed (it pins its own torch and transformers, so it lives in
its own virtualenv). Each adapter spec becomes a ``LoRARequest``; vLLM batches requests of all
adapters together. Prompts are tokenized here, so token counts and the BOS convention match the
``hf`` backend: a string prompt's BOS is context and is not listed in prompt logprobs.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from model_workers.backends.base import (
    BackendOptions,
    GenerationChunk,
    GenerationRequest,
    ModelSpec,
    PromptLogprobs,
    PromptLogprobsRequest,
    ScoreRequest,
    ScoreResult,
)
from model_workers.errors import BackendUnavailable, BadRequest, ModelNotFound

logger = logging.getLogger(__name__)

NOT_INSTALLED = (
    "vLLM is not installed; install it with `pip install 'alpaca-arena[vllm]'` on a CUDA machine "
    "(it pins its own torch/transformers, so use a separate virtualenv), or run `vllm serve "
    "MODEL` and use `--backend openai --upstream-url http://HOST:PORT/v1`."
)
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts


class VLLMBackend:
    """vLLM ``AsyncLLM`` backend; see the module docstring."""

    renders_chat = False

    def __init__(self, specs: list[ModelSpec], options: BackendOptions) -> None:
        try:
            import vllm  # noqa: F401  (only to fail early and clearly)
        except ImportError as exc:
            raise BackendUnavailable(NOT_INSTALLED) from exc
        if not specs:
            raise BadRequest("the vllm backend needs at least one model")
        bases = {(s.source, s.revision, s.gguf_file) for s in specs}
        if len(bases) > 1:
            raise BadRequest(
                "one vllm worker serves one base model and LoRA adapters on it; "
                f"got several bases: {sorted(map(str, bases))}"
            )
        self.specs = {spec.name: spec for spec in specs}
        self.options = options
        self.engine: Any = None
        self.tokenizer: Any = None
        self._loras: dict[str, Any] = {}
        self._context = 0
        self._in_flight = 0

    async def start(self) -> None:
        from vllm import AsyncEngineArgs
        from vllm.lora.request import LoRARequest

        try:
            from vllm.v1.engine.async_llm import AsyncLLM as Engine
        except ImportError:  # releases before the V1 engine
            from vllm import AsyncLLMEngine as Engine

        base = next(iter(self.specs.values()))
        adapters = [s for s in self.specs.values() if s.adapter]
        max_len = min(
            (s.max_model_len for s in self.specs.values() if s.max_model_len), default=None
        )
        args = AsyncEngineArgs(
            model=str(Path(base.source) / base.gguf_file) if base.gguf_file else base.source,
            tokenizer=base.source,
            revision=base.revision,
            dtype=self.options.dtype,
            gpu_memory_utilization=self.options.gpu_memory_utilization,
            max_num_seqs=self.options.max_batch_size,
            max_model_len=max_len,
            enable_lora=bool(adapters),
            max_loras=max(1, len(adapters)),
            max_lora_rank=_lora_rank(adapters),
        )
        self.engine = Engine.from_engine_args(args)
        self._loras = {
            s.name: LoRARequest(s.name, i + 1, s.adapter) for i, s in enumerate(adapters)
        }
        tokenizer = self.engine.get_tokenizer()
        self.tokenizer = await tokenizer if inspect.isawaitable(tokenizer) else tokenizer
        config = getattr(self.engine, "model_config", None)
        if config is None:
            config = await self.engine.get_model_config()
        self._context = config.max_model_len

    async def close(self) -> None:
        shutdown = getattr(self.engine, "shutdown", None)  # V0 engines stop with the process
        if shutdown is not None:
            shutdown()

    def model_names(self) -> list[str]:
        return list(self.specs)

    def context_length(self, model: str) -> int:
        self._spec(model)
        return self._context

    def count_tokens(self, model: str, text: str) -> int:
        self._spec(model)
        return len(self.tokenizer.encode(text))

    def queue_length(self) -> int:
        return self._in_flight

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self._spec(request.model)
        if request.prompt is None:
            raise BadRequest("the vllm backend needs a rendered prompt", param="prompt")
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        p = request.params
        params = SamplingParams(
            max_tokens=p.max_tokens,
            temperature=p.temperature,
            top_p=p.top_p,
            seed=p.seed,
            stop=p.stop or None,
            stop_token_ids=p.stop_token_ids or None,
            output_kind=RequestOutputKind.DELTA,
        )
        return self._stream(request, self._ids(request.prompt), params)

    async def _stream(
        self, request: GenerationRequest, ids: list[int], params: Any
    ) -> AsyncIterator[GenerationChunk]:
        completion_tokens = 0
        self._in_flight += 1
        try:
            async for output in self.engine.generate(
                {"prompt_token_ids": ids},
                params,
                request.request_id or uuid.uuid4().hex,
                lora_request=self._loras.get(request.model),
            ):
                piece = output.outputs[0]
                completion_tokens += len(piece.token_ids)
                finish = piece.finish_reason if output.finished else None
                yield GenerationChunk(
                    piece.text,
                    len(ids),
                    completion_tokens,
                    None if finish is None else ("length" if finish == "length" else "stop"),
                )
        finally:
            self._in_flight -= 1

    async def prompt_logprobs(self, requests: list[PromptLogprobsRequest]) -> list[PromptLogprobs]:
        return list(await asyncio.gather(*(self._prompt_logprobs(r) for r in requests)))

    async def _prompt_logprobs(self, request: PromptLogprobsRequest) -> PromptLogprobs:
        self._spec(request.model)
        ids = self._ids(request.prompt)
        skip = int(
            isinstance(request.prompt, str)
            and len(ids) > 1
            and ids[0] == self.tokenizer.bos_token_id
            and not request.prompt.startswith(self.tokenizer.bos_token or "\0")
        )
        rows = await self._prompt_rows(request.model, ids, request.top_logprobs)
        tokens, token_logprobs, top, offsets, offset = [], [], [], [], 0
        for position in range(skip, len(ids)):
            row = rows[position]
            chosen = row[ids[position]] if row else None
            piece = (
                chosen.decoded_token
                if chosen and chosen.decoded_token is not None
                else self.tokenizer.decode([ids[position]])
            )
            tokens.append(piece)
            offsets.append(offset)
            offset += len(piece)
            token_logprobs.append(None if chosen is None else chosen.logprob)
            top.append(
                {(lp.decoded_token or ""): lp.logprob for lp in row.values()}
                if row and request.top_logprobs
                else None
            )
        return PromptLogprobs(
            tokens=tokens, token_logprobs=token_logprobs, top_logprobs=top, text_offset=offsets
        )

    async def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """Each candidate's first token scored as one more prompt token (prefix-cached)."""
        results = []
        for request in requests:
            self._spec(request.model)
            ids = self._ids(request.prompt)
            tokens = [self._candidate_token(request.prompt, ids, c) for c in request.candidates]
            rows = await asyncio.gather(
                *(self._prompt_rows(request.model, [*ids, t], 0) for t in tokens)
            )
            results.append(
                ScoreResult(
                    logprobs=[row[-1][t].logprob for row, t in zip(rows, tokens, strict=True)],
                    token_ids=tokens,
                    prompt_tokens=len(ids),
                )
            )
        return results

    async def _prompt_rows(self, model: str, ids: list[int], top: int) -> list[Any]:
        """vLLM's prompt logprobs: per position None or {token id: Logprob} (chosen + top)."""
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=top)
        final = None
        self._in_flight += 1
        try:
            async for output in self.engine.generate(
                {"prompt_token_ids": ids},
                params,
                uuid.uuid4().hex,
                lora_request=self._loras.get(model),
            ):
                final = output
        finally:
            self._in_flight -= 1
        if final is None or final.prompt_logprobs is None:
            raise BadRequest("vLLM returned no prompt logprobs")
        return list(final.prompt_logprobs)

    def _candidate_token(self, prompt: str, prompt_ids: list[int], candidate: str) -> int:
        full = self.tokenizer.encode(prompt + candidate)
        if len(full) > len(prompt_ids) and full[: len(prompt_ids)] == prompt_ids:
            return full[len(prompt_ids)]
        alone = self.tokenizer.encode(candidate, add_special_tokens=False)
        if not alone:
            raise BadRequest(f"candidate {candidate!r} has no tokens", param="candidates")
        return alone[0]

    def _ids(self, prompt: str | list[int]) -> list[int]:
        return self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)

    def _spec(self, model: str) -> ModelSpec:
        spec = self.specs.get(model)
        if spec is None:
            raise ModelNotFound(
                f"model {model!r} is not served here; available: {', '.join(self.specs)}",
                param="model",
            )
        if self.engine is None:
            raise BackendUnavailable("the vllm backend has not been started")
        return spec


def _lora_rank(adapters: list[ModelSpec]) -> int:
    """The smallest rank vLLM accepts that fits every adapter (from adapter_config.json)."""
    rank = 8
    for spec in adapters:
        config = Path(str(spec.adapter)) / "adapter_config.json"
        if config.is_file():
            rank = max(rank, int(json.loads(config.read_text()).get("r", 8)))
    return next((r for r in LORA_RANKS if r >= rank), LORA_RANKS[-1])
