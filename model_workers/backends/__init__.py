"""Backends by name, imported only when asked for (vLLM and CUDA code stay out of ``import``)."""

from __future__ import annotations

import difflib
import importlib

from model_workers.backends.base import (
    Backend,
    BackendOptions,
    GenerationChunk,
    GenerationRequest,
    ModelSpec,
    PromptLogprobs,
    PromptLogprobsRequest,
    SamplingParams,
    ScoreRequest,
    ScoreResult,
)
from model_workers.errors import BadRequest

BACKENDS: dict[str, str] = {
    "hf": "model_workers.backends.hf:HFBackend",
    "vllm": "model_workers.backends.vllm:VLLMBackend",
    "openai": "model_workers.backends.openai:OpenAIBackend",
}

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendOptions",
    "GenerationChunk",
    "GenerationRequest",
    "ModelSpec",
    "PromptLogprobs",
    "PromptLogprobsRequest",
    "SamplingParams",
    "ScoreRequest",
    "ScoreResult",
    "create_backend",
]


def create_backend(name: str, specs: list[ModelSpec], options: BackendOptions) -> Backend:
    """Build the backend registered as ``name``; an unknown name lists the close matches."""
    target = BACKENDS.get(name)
    if target is None:
        close = difflib.get_close_matches(name, BACKENDS, n=3) or sorted(BACKENDS)
        raise BadRequest(f"unknown backend {name!r}; choose one of: {', '.join(close)}")
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    return cls(specs, options)
