"""The ``hf`` backend: transformers models (causal LMs and T5-style seq2seq) with PEFT LoRA
adapters, served with step-level batching.

One worker serves one base model and any number of LoRA adapters on it (one :class:`ModelSpec`
each, all with the same ``source``). A background :class:`~.hf_batching.Scheduler` thread owns
the weights: ``generate`` enqueues a request and streams the chunks the thread hands back through
the event loop; ``score`` and ``prompt_logprobs`` run on the same thread between decode steps, so
nothing races on the model.

Prompt log-probabilities and BOS: a string prompt is tokenized with the tokenizer's defaults
(``add_special_tokens=True``). When that prepends a BOS token, the BOS is context, not a prompt
token: it is not listed, and the first real token gets its log-probability given the BOS (instead
of ``None``). A prompt given as token ids is scored exactly as given, first token ``None``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar

import torch

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
from model_workers.backends.hf_batching import (
    CausalRunner,
    Scheduler,
    Seq2SeqRunner,
    Sequence,
)
from model_workers.backends.hf_sampling import Detokenizer, StopStrings, make_generator
from model_workers.errors import (
    BackendUnavailable,
    BadRequest,
    ContextLengthExceeded,
    ModelNotFound,
    WorkerError,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
_T5_CONTEXT = 512  # T5 has relative positions and no hard limit; 512 is what it was trained on
_LOGITS_BUDGET = 1 << 26  # most logits (floats) one prompt_logprobs forward may produce (256 MB)
_DTYPE_ALIASES = {"fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp32": "float32"}


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable(f"device {name!r} was asked for but CUDA is not available")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``"auto"``: bf16 on GPUs that have it, else fp16 on CUDA, float32 on the CPU."""
    if name == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    dtype = getattr(torch, _DTYPE_ALIASES.get(name, name), None)
    if not isinstance(dtype, torch.dtype):
        raise BadRequest(f"unknown dtype {name!r}; use auto, float32, float16 or bfloat16")
    return dtype


def _base_of(spec: ModelSpec) -> tuple[str, str | None, str | None]:
    return spec.source, spec.revision, spec.gguf_file


class HFBackend:
    """transformers + PEFT backend; see the module docstring."""

    renders_chat = False

    def __init__(self, specs: list[ModelSpec], options: BackendOptions) -> None:
        if not specs:
            raise BadRequest("the hf backend needs at least one model")
        first = specs[0]
        for spec in specs[1:]:
            if _base_of(spec) != _base_of(first):
                raise BadRequest(
                    f"models {first.name!r} and {spec.name!r} have different bases "
                    f"({first.source}@{first.revision} vs {spec.source}@{spec.revision}); "
                    "one hf worker serves one base model and LoRA adapters on it"
                )
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise BadRequest(f"model names must be unique, got {names}")
        bases = [s.name for s in specs if s.adapter is None]
        if len(bases) > 1:
            raise BadRequest(f"models {bases} are all the same base model; serve it under one name")
        self.specs = {s.name: s for s in specs}
        self.options = options
        # A fast tokenizer must not be used from two threads at once ("Already borrowed").
        self._tok_lock = threading.Lock()
        self.tokenizer: Any = None
        self.model: Any = None
        self._peft: Any = None
        self._active_adapter: str | None = None
        self._runner: CausalRunner | Seq2SeqRunner | None = None
        self.scheduler: Scheduler | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        runner_cls = Seq2SeqRunner if self.model.config.is_encoder_decoder else CausalRunner
        self._runner = runner = runner_cls(self.model, pad_id=self._pad_id())
        self.scheduler = Scheduler(
            runner,
            self._activate,
            max_batch_size=self.options.max_batch_size,
            batch_wait_s=self.options.batch_wait_ms / 1000,
        )
        self.scheduler.start()

    def _load(self) -> None:
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForSeq2SeqLM,
            AutoTokenizer,
        )

        spec = next(iter(self.specs.values()))
        device = resolve_device(self.options.device)
        dtype = resolve_dtype(self.options.dtype, device)
        where: dict[str, Any] = {"revision": spec.revision}
        if spec.gguf_file:
            where["gguf_file"] = spec.gguf_file
        logger.info("loading %s (%s on %s)", spec.source, dtype, device)
        self.tokenizer = AutoTokenizer.from_pretrained(spec.source, **where)
        config = AutoConfig.from_pretrained(spec.source, **where)
        auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        model: Any = auto.from_pretrained(spec.source, dtype=dtype, **where)
        model = model.to(device).eval()
        adapters = [s for s in self.specs.values() if s.adapter]
        if adapters:
            from peft import PeftModel

            first, *others = [(str(s.adapter), s.name) for s in adapters]
            self._peft = PeftModel.from_pretrained(model, first[0], adapter_name=first[1])
            for path, name in others:
                self._peft.load_adapter(path, adapter_name=name)
            self._peft.to(device).eval()
            self._active_adapter = first[1]
            # The LoRA layers live inside the base model; the PeftModel only switches them.
            model = self._peft.get_base_model()
        self.model = model

    async def add_adapter(self, spec: ModelSpec) -> None:
        """Serve one more LoRA adapter on the loaded base (``arena worker --adopt-adapters``).
        Loaded on the scheduler thread between batch steps; the active adapter is unchanged."""
        if spec.name in self.specs:
            raise BadRequest(f"model {spec.name!r} is already served here", param="model")
        if spec.adapter is None or _base_of(spec) != _base_of(next(iter(self.specs.values()))):
            raise BadRequest(f"{spec.name!r} is not a LoRA adapter of this worker's base",
                             param="model")

        def load() -> None:
            from peft import PeftModel

            path = str(spec.adapter)
            if self._peft is None:
                # wraps the loaded base in place: the runner's model gains LoRA layers, which
                # stay off (the base keeps answering) until the adapter is activated
                self._peft = PeftModel.from_pretrained(self.model, path, adapter_name=spec.name)
                self._peft.to(self.model.device).eval()
                self._peft.base_model.disable_adapter_layers()
                self._active_adapter = None
            else:
                active = self._active_adapter
                self._peft.load_adapter(path, adapter_name=spec.name)
                self._peft.to(self.model.device).eval()
                if active is not None:
                    self._peft.set_adapter(active)

        await self._on_scheduler(load)
        self.specs[spec.name] = spec

    async def close(self) -> None:
        if self.scheduler is not None:
            await asyncio.to_thread(self.scheduler.stop)

    def _activate(self, adapter: str | None) -> None:
        """Make ``adapter`` (a served model name; None: the base) the active one. Scheduler thread only."""
        if self._peft is None or adapter == self._active_adapter:
            return
        if adapter is None:
            self._peft.base_model.disable_adapter_layers()
        else:
            if self._active_adapter is None:
                self._peft.base_model.enable_adapter_layers()
            self._peft.set_adapter(adapter)
        self._active_adapter = adapter

    # -- metadata -----------------------------------------------------------------------

    def model_names(self) -> list[str]:
        return list(self.specs)

    def _spec(self, model: str) -> ModelSpec:
        spec = self.specs.get(model)
        if spec is None:
            raise ModelNotFound(
                f"model {model!r} is not served here; available: {', '.join(self.specs)}",
                param="model",
            )
        self._started()
        return spec

    def _started(self) -> Scheduler:
        if self.scheduler is None:
            raise BackendUnavailable("the hf backend has not been started")
        return self.scheduler

    def context_length(self, model: str) -> int:
        spec = self._spec(model)
        if spec.max_model_len:
            return spec.max_model_len
        config = self.model.config
        for key in _CONTEXT_KEYS:
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        limit = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(limit, int) and 0 < limit < 1_000_000:  # unset means ~1e30
            return limit
        return _T5_CONTEXT if config.is_encoder_decoder else 2048

    def count_tokens(self, model: str, text: str) -> int:
        self._spec(model)
        return len(self._encode(text))

    def queue_length(self) -> int:
        return self.scheduler.queue_length() if self.scheduler else 0

    def _encode(self, text: str, *, special: bool = True) -> list[int]:
        with self._tok_lock:
            return self.tokenizer(text, add_special_tokens=special)["input_ids"]

    def _decode(self, ids: list[int], *, skip_special: bool = True) -> str:
        with self._tok_lock:
            return self.tokenizer.decode(ids, skip_special_tokens=skip_special)

    def _pad_id(self) -> int:
        for candidate in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if candidate is not None:
                return candidate
        return 0

    def _eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids.update(configured if isinstance(configured, list) else [configured])
        return {i for i in ids if i is not None}

    def _prompt_ids(self, prompt: str | list[int] | None) -> list[int]:
        if prompt is None:
            raise BadRequest("the hf backend needs a rendered prompt, not messages", param="prompt")
        ids = self._encode(prompt) if isinstance(prompt, str) else list(prompt)
        vocab = self.model.get_output_embeddings().weight.shape[0]
        if not ids:
            raise BadRequest("the prompt is empty", param="prompt")
        if any(not 0 <= i < vocab for i in ids):
            raise BadRequest(f"prompt token ids must be in [0, {vocab})", param="prompt")
        return ids

    # -- generation ---------------------------------------------------------------------

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Validate now (raising before anything streams), then stream from the scheduler."""
        spec = self._spec(request.model)
        params = request.params
        if params.max_tokens < 1:
            raise BadRequest("max_tokens must be at least 1", param="max_tokens")
        if params.temperature < 0 or not 0 < params.top_p <= 1:
            raise BadRequest("temperature must be >= 0 and top_p in (0, 1]", param="temperature")
        prompt_ids = self._prompt_ids(request.prompt)
        limit = self.context_length(request.model)
        total = len(prompt_ids) + params.max_tokens
        if total > limit:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{total} tokens ({len(prompt_ids)} in the prompt, {params.max_tokens} for the "
                "completion). Please reduce the prompt or the completion length.",
                param="max_tokens",
            )
        seq = Sequence(
            adapter=spec.name if spec.adapter else None,
            prompt_ids=prompt_ids,
            params=params,
            stop_ids=frozenset(self._eos_ids() | set(params.stop_token_ids)),
            detokenizer=Detokenizer(
                self._decode, None if self.model.config.is_encoder_decoder else prompt_ids
            ),
            stops=StopStrings(params.stop),
            generator=make_generator(params),
            deliver=lambda item: None,
        )
        return self._stream(seq)

    async def _stream(self, seq: Sequence) -> AsyncIterator[GenerationChunk]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[GenerationChunk | WorkerError] = asyncio.Queue()

        def deliver(item: GenerationChunk | WorkerError) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the client's event loop is gone: nobody is listening
                seq.cancelled = True

        seq.deliver = deliver
        self._started().submit(seq)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, WorkerError):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            seq.cancelled = True

    # -- scoring ------------------------------------------------------------------------

    async def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        for request in requests:
            self._spec(request.model)
        return await self._on_scheduler(lambda: self._score(requests))

    async def prompt_logprobs(self, requests: list[PromptLogprobsRequest]) -> list[PromptLogprobs]:
        for request in requests:
            self._spec(request.model)
        if self.model.config.is_encoder_decoder:
            raise BadRequest("prompt log-probabilities need a decoder-only model", param="model")
        return await self._on_scheduler(lambda: self._prompt_logprobs(requests))

    async def _on_scheduler(self, fn: Callable[[], T]) -> T:
        return await asyncio.wrap_future(self._started().call(fn))

    def _by_adapter(self, requests: Iterable[Any]) -> dict[str | None, list[int]]:
        groups: dict[str | None, list[int]] = {}
        for index, request in enumerate(requests):
            spec = self.specs[request.model]
            groups.setdefault(spec.name if spec.adapter else None, []).append(index)
        return groups

    def _candidate_token(self, prompt: str, prompt_ids: list[int], candidate: str) -> int:
        """The first token of ``candidate`` after ``prompt``, tokenized in context when the
        prompt's tokens survive as a prefix (they do unless a merge crosses the boundary)."""
        if not self.model.config.is_encoder_decoder:
            full = self._encode(prompt + candidate)
            if len(full) > len(prompt_ids) and full[: len(prompt_ids)] == prompt_ids:
                return full[len(prompt_ids)]
        alone = self._encode(candidate, special=False)
        if not alone:
            raise BadRequest(f"candidate {candidate!r} has no tokens", param="candidates")
        return alone[0]

    def _score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        results: list[ScoreResult | None] = [None] * len(requests)
        for adapter, indices in self._by_adapter(requests).items():
            prompts = [self._prompt_ids(requests[i].prompt) for i in indices]
            self._activate(adapter)
            runner = self._runner
            if isinstance(runner, Seq2SeqRunner):
                _, logits = runner.first_step(prompts, cache=False)
            elif isinstance(runner, CausalRunner):
                logits = runner.last_logits(prompts)
            else:
                raise BackendUnavailable("the hf backend has not been started")
            logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
            for row, (i, ids) in enumerate(zip(indices, prompts, strict=True)):
                request = requests[i]
                tokens = [self._candidate_token(request.prompt, ids, c) for c in request.candidates]
                results[i] = ScoreResult(
                    logprobs=logprobs[row, tokens].tolist(),
                    token_ids=tokens,
                    prompt_tokens=len(ids),
                )
        return results  # type: ignore[return-value]

    def _prompt_logprobs(self, requests: list[PromptLogprobsRequest]) -> list[PromptLogprobs]:
        runner = self._runner
        if not isinstance(runner, CausalRunner):
            raise BadRequest("prompt log-probabilities need a decoder-only model", param="model")
        results: list[PromptLogprobs | None] = [None] * len(requests)
        vocab = self.model.get_output_embeddings().weight.shape[0]
        prompts = [self._prompt_ids(r.prompt) for r in requests]
        for adapter, indices in self._by_adapter(requests).items():
            self._activate(adapter)
            indices.sort(key=lambda i: -len(prompts[i]))
            while indices:  # as many prompts per forward pass as the logits budget allows
                count = max(1, _LOGITS_BUDGET // (len(prompts[indices[0]]) * vocab))
                chunk, indices = indices[:count], indices[count:]
                logits = runner.forward([prompts[i] for i in chunk], cache=False, last_only=False)[
                    0
                ]
                for row, i in enumerate(chunk):
                    rows = logits[row, logits.shape[1] - len(prompts[i]) :].float()
                    results[i] = self._describe_prompt(
                        requests[i], prompts[i], torch.log_softmax(rows, dim=-1).cpu()
                    )
        return results  # type: ignore[return-value]

    def _bos_added(self, prompt: str | list[int], ids: list[int]) -> bool:
        """Whether tokenizing the string ``prompt`` put a BOS token in front of its text."""
        bos = self.tokenizer.bos_token_id
        if not isinstance(prompt, str) or bos is None or len(ids) < 2 or ids[0] != bos:
            return False
        return ids[1:] == self._encode(prompt, special=False)

    def _pieces(self, ids: list[int], *, context: list[int]) -> list[str]:
        """The text of each token, special tokens included, such that the pieces concatenate to
        the decoded text (a character split across tokens belongs to the token that ends it)."""
        detokenizer = Detokenizer(lambda t: self._decode(t, skip_special=False), context)
        pieces = [detokenizer.push(i) for i in ids]
        if pieces:
            pieces[-1] += detokenizer.flush()
        return pieces

    def _describe_prompt(
        self, request: PromptLogprobsRequest, ids: list[int], logprobs: torch.Tensor
    ) -> PromptLogprobs:
        """The OpenAI logprobs object for one prompt, given log-softmax rows ``[len(ids), vocab]``."""
        skip = int(self._bos_added(request.prompt, ids))
        pieces = self._pieces(ids[skip:], context=ids[:skip])
        tokens: list[str] = []
        token_logprobs: list[float | None] = []
        top: list[dict[str, float] | None] = []
        offsets: list[int] = []
        offset = 0
        for position, piece in enumerate(pieces, start=skip):
            tokens.append(piece)
            offsets.append(offset)
            offset += len(piece)
            if position == 0:
                token_logprobs.append(None)
                top.append(None)
                continue
            row = logprobs[position - 1]
            logprob = float(row[ids[position]])
            token_logprobs.append(logprob)
            if request.top_logprobs > 0:
                values, alternatives = row.topk(request.top_logprobs)
                listed = {
                    self._decode([t], skip_special=False): float(v)
                    for v, t in zip(values.tolist(), alternatives.tolist(), strict=True)
                }
                listed[piece] = logprob  # the prompt token is always listed (vLLM too)
                top.append(listed)
            else:
                top.append(None)
        return PromptLogprobs(
            tokens=tokens, token_logprobs=token_logprobs, top_logprobs=top, text_offset=offsets
        )
