"""The OpenAI wire format a model worker accepts and returns (plus the ``/worker/*`` extras).

Requests ignore fields they do not know (OpenAI clients send extras such as ``user`` or
``frequency_penalty``) but validate the ones they use; the server turns a validation failure into
a 400 in the OpenAI error shape. Streamed chunks are plain dicts built by the ``*_chunk``
functions: they are made once per token, so they skip pydantic.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_STOP_STRINGS = 4  # OpenAI's limit


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Request):
    include_usage: bool = False


class _Sampling(_Request):
    """Fields chat and text completions share."""

    model: str
    temperature: float | None = Field(None, ge=0, le=2, description="0 means greedy; default 1")
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=16, description="independent completions per prompt")
    stop: str | list[str] | None = Field(None, description="up to 4 stop strings")
    seed: int | None = Field(None, description="completion i of n samples with seed + i")
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, stop: str | list[str] | None) -> list[str]:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings, got {len(stops)}")
        return [s for s in stops if s]

    @property
    def stop_list(self) -> list[str]:
        return list(self.stop or [])  # the validator has made it a list

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatMessage(BaseModel):
    """A chat message; extra keys (``name``, Alpaca's ``input``) are kept for the template.

    Roles and content are checked where the messages are rendered (the conversation template,
    or the upstream for backends that render chat themselves), with messages that say which.
    """

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="alias of max_tokens")
    logprobs: bool = False

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


Prompt = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(_Sampling):
    prompt: Prompt
    max_tokens: int | None = Field(16, ge=0, description="0 only with echo: score the prompt")
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20, description="top alternatives per token")

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, prompt: Prompt) -> Prompt:
        if isinstance(prompt, list) and (not prompt or any(p == [] for p in prompt)):
            raise ValueError("prompt must not be an empty list")
        return prompt

    @model_validator(mode="after")
    def _zero_tokens_needs_echo(self) -> CompletionRequest:
        if self.max_tokens == 0 and not self.echo:
            raise ValueError("max_tokens must be at least 1 (0 is allowed only with echo=true)")
        return self

    def prompts(self) -> list[str | list[int]]:
        """The prompt as a list: one string or one token-id list per completion group."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if isinstance(prompt[0], int):
            return [prompt]  # type: ignore[list-item]
        return list(prompt)  # type: ignore[arg-type]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: str | None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    system_fingerprint: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "alpaca-arena"
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    backend: str
    models: list[str]
    queue_length: int


class ScoreItem(_Request):
    prompt: str
    candidates: list[str] = Field(min_length=1)


class ScoreRequestBody(_Request):
    model: str
    requests: list[ScoreItem] = Field(min_length=1)


class ScoreResultBody(BaseModel):
    logprobs: list[float]
    token_ids: list[int]
    prompt_tokens: int


class ScoreResponse(BaseModel):
    results: list[ScoreResultBody]


class TokenizeRequest(_Request):
    model: str
    text: str


class TokenizeResponse(BaseModel):
    count: int


def chat_chunk(
    *,
    id: str,
    created: int,
    model: str,
    index: int,
    delta: dict[str, str],
    finish_reason: str | None = None,
    with_usage_field: bool = False,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` with one choice."""
    chunk: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        ],
    }
    if with_usage_field:
        chunk["usage"] = None  # OpenAI sends null on every chunk but the last with include_usage
    return chunk


def completion_chunk(
    *,
    id: str,
    created: int,
    model: str,
    index: int,
    text: str,
    finish_reason: str | None = None,
    logprobs: dict[str, Any] | None = None,
    with_usage_field: bool = False,
) -> dict[str, Any]:
    """One streamed ``text_completion`` object with one choice."""
    chunk: dict[str, Any] = {
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}
        ],
    }
    if with_usage_field:
        chunk["usage"] = None
    return chunk


def usage_chunk(*, id: str, created: int, model: str, object: str, usage: Usage) -> dict:
    """The last chunk of a stream with ``stream_options.include_usage``: no choices."""
    return {
        "id": id,
        "object": object,
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [],
        "usage": usage.model_dump(),
    }


def error_body(message: str, *, type: str, param: str | None = None, code: str | None = None):
    """The OpenAI error body."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}
