"""The one interface every model-worker backend implements, and the records it exchanges.

A backend owns the weights (or the upstream connection) and does its own batching: the worker
server calls :meth:`Backend.generate` once per request, concurrently, and the backend decides how
to group them (the ``hf`` backend batches step by step, vLLM batches in its engine, the ``openai``
backend leaves it to the upstream).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length"]


@dataclass(slots=True)
class SamplingParams:
    """How to sample one completion. ``temperature == 0`` means greedy."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)


@dataclass(slots=True)
class GenerationRequest:
    """One completion to produce for the served model ``model``.

    Exactly one of ``prompt`` (already rendered with the conversation template) and ``messages``
    (OpenAI chat messages, only for backends with ``renders_chat``) is set. A ``prompt`` given as
    token ids is used exactly as given (no BOS added); a string is tokenized with the tokenizer's
    default special tokens.
    """

    model: str
    params: SamplingParams
    prompt: str | list[int] | None = None
    messages: list[dict[str, Any]] | None = None
    request_id: str = ""


@dataclass(slots=True)
class GenerationChunk:
    """A piece of a completion as it is produced.

    ``text`` is the new text since the previous chunk (never split inside a UTF-8 character, and
    never containing a stop string). The last chunk has ``finish_reason`` set; the token counts
    are running totals.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason | None = None


@dataclass(slots=True)
class ScoreRequest:
    """Log-probabilities of ``candidates`` as the token that follows ``prompt``.

    Each candidate string is tokenized in context (``prompt + candidate``) and its first token
    after the prompt is scored, so " A" and "A" both work for SentencePiece and BPE vocabularies.
    """

    model: str
    prompt: str
    candidates: list[str]


@dataclass(slots=True)
class ScoreResult:
    logprobs: list[float]  # one per candidate, natural log, normalised over the whole vocabulary
    token_ids: list[int]  # the token scored for each candidate
    prompt_tokens: int


@dataclass(slots=True)
class PromptLogprobsRequest:
    """Per-token log-probabilities of a prompt (OpenAI ``echo=True`` + ``logprobs``).

    A prompt given as token ids (what lm-eval's ``local-completions`` sends) is scored exactly as
    given; a string is tokenized with the tokenizer's default special tokens.
    """

    model: str
    prompt: str | list[int]
    top_logprobs: int = 0  # how many alternatives to list for each position (0: none)


@dataclass(slots=True)
class PromptLogprobs:
    """OpenAI completions ``logprobs`` object for the prompt tokens.

    For a prompt given as token ids, the first token has no context, so its log-probability is
    ``None`` (as in vLLM and OpenAI). For a string prompt, a BOS the tokenizer prepends is context,
    not a listed token: the first listed token is scored given it. (The worker server always sends
    token ids, so its answers list what the model read, BOS included.)
    """

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


@runtime_checkable
class Backend(Protocol):
    """What the worker server needs from a backend."""

    renders_chat: bool  # True: give it ``messages``; False: give it a rendered ``prompt``

    def model_names(self) -> list[str]:
        """The names this backend serves (the base checkpoint and each LoRA adapter)."""
        ...

    def context_length(self, model: str) -> int:
        """Maximum prompt + completion tokens for ``model``."""
        ...

    def count_tokens(self, model: str, text: str) -> int:
        """Number of prompt tokens ``text`` becomes (for context-length checks)."""
        ...

    def queue_length(self) -> int:
        """Requests waiting or running now (reported in heartbeats, used for routing)."""
        ...

    async def start(self) -> None:
        """Load weights or open connections; called once before serving."""
        ...

    async def close(self) -> None:
        """Release everything; called once at shutdown."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Stream one completion. Raises :class:`model_workers.errors.WorkerError` subclasses."""
        ...

    async def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """Next-token candidate log-probabilities, one forward pass over the batch."""
        ...

    async def prompt_logprobs(self, requests: list[PromptLogprobsRequest]) -> list[PromptLogprobs]:
        """Log-probabilities of each prompt token given the ones before it."""
        ...


@dataclass(slots=True)
class ModelSpec:
    """One model a worker serves, as the registry describes it.

    Several specs with the same ``source`` and different ``adapter`` directories are served by
    one base model in one worker (multi-LoRA), each under its own ``name``.
    """

    name: str
    source: str  # local directory or hub id
    revision: str | None = None
    adapter: str | None = None  # PEFT LoRA adapter directory
    gguf_file: str | None = None  # a GGUF file inside ``source`` to load (dequantised)
    template: str = "hf"  # conversation template name ("hf": the tokenizer's chat_template)
    max_model_len: int | None = None  # override of the context length from the config


@dataclass(slots=True)
class BackendOptions:
    """Knobs for the backends; each backend reads the ones that concern it."""

    device: str = "auto"  # hf: "auto" (cuda if available), "cpu", "cuda", "cuda:1"
    dtype: str = "auto"  # hf/vllm: "auto" (bf16 on GPUs that have it, fp32 on CPU), "float16"...
    max_batch_size: int = 16  # hf: most sequences decoded together in one step
    batch_wait_ms: float = 2.0  # hf: how long a new request may wait to join the next step
    upstream_url: str | None = None  # openai: base URL of the upstream, e.g. http://h:8000/v1
    upstream_api_key: str | None = None  # openai: key for the upstream
    upstream_model: str | None = None  # openai: model name at the upstream (default: spec source)
    gpu_memory_utilization: float = 0.85  # vllm
