"""The ``openai`` backend: any OpenAI-compatible upstream (``vllm serve``, TGI, a hosted API).

Chat messages go to the upstream's ``/chat/completions`` untouched (it owns the chat template);
rendered prompts and token ids go to ``/completions``. Both stream. Prompt log-probabilities use
``/completions`` with ``echo=true, logprobs=k, max_tokens=0`` (vLLM and this project's worker
support it; hosted APIs mostly do not, which is a 400 saying so).

The context length is the upstream's ``max_model_len`` from ``GET /models`` (vLLM and this
project's worker list it), else the spec's ``max_model_len``, else 4096. ``count_tokens`` is an
estimate (UTF-8 bytes / 4): the backend has no tokenizer and the interface is synchronous; the
upstream makes the real context check.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx

from model_workers.backends.base import (
    BackendOptions,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    ModelSpec,
    PromptLogprobs,
    PromptLogprobsRequest,
    ScoreRequest,
    ScoreResult,
)
from model_workers.errors import BackendUnavailable, BadRequest, ModelNotFound, WorkerError

logger = logging.getLogger(__name__)

DEFAULT_CONTEXT = 4096  # when neither the upstream nor the spec says
BYTES_PER_TOKEN = 4  # count_tokens estimate: BPE vocabularies average ~4 bytes a token in English
TIMEOUT = httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=600.0)  # long generations


class UpstreamError(WorkerError):
    """An error answer of the upstream, passed on with its status, type and code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(f"upstream: {message}", param=param)
        self.status_code = status
        self.error_type = error_type or (
            "invalid_request_error" if status < 500 else "server_error"
        )
        self.code = code


class OpenAIBackend:
    """Forwards to ``options.upstream_url``; see the module docstring."""

    renders_chat = True

    def __init__(self, specs: list[ModelSpec], options: BackendOptions) -> None:
        if not options.upstream_url:
            raise BadRequest(
                "the openai backend needs an upstream: pass --upstream-url, the "
                "base URL of an OpenAI-compatible server, e.g. http://HOST:8000/v1"
            )
        if not specs:
            raise BadRequest("the openai backend needs at least one model")
        self.specs = {spec.name: spec for spec in specs}
        self.options = options
        self.url = options.upstream_url.rstrip("/")
        self._upstream_names = {spec.name: options.upstream_model or spec.source for spec in specs}
        self._context: dict[str, int] = {}
        self._in_flight = 0
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        headers = (
            {"Authorization": f"Bearer {self.options.upstream_api_key}"}
            if self.options.upstream_api_key
            else {}
        )
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=TIMEOUT,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )
        listed = {entry.get("id"): entry for entry in (await self._get("/models")).get("data", [])}
        for name, upstream in self._upstream_names.items():
            entry = listed.get(upstream)
            if entry is None:
                logger.warning(
                    "upstream %s does not list model %r (it lists %s)",
                    self.url,
                    upstream,
                    ", ".join(map(str, list(listed)[:10])),
                )
            elif isinstance(entry.get("max_model_len"), int):
                self._context[name] = entry["max_model_len"]

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    def model_names(self) -> list[str]:
        return list(self.specs)

    def context_length(self, model: str) -> int:
        spec = self._spec(model)
        return spec.max_model_len or self._context.get(model, DEFAULT_CONTEXT)

    def count_tokens(self, model: str, text: str) -> int:
        self._spec(model)
        return math.ceil(len(text.encode()) / BYTES_PER_TOKEN)

    def queue_length(self) -> int:
        return self._in_flight

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self._spec(request.model)
        params = request.params
        payload: dict[str, Any] = {
            "model": self._upstream_names[request.model],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.seed is not None:
            payload["seed"] = params.seed
        if params.stop:
            payload["stop"] = params.stop
        if params.stop_token_ids:
            payload["stop_token_ids"] = params.stop_token_ids  # vLLM's extension
        if request.messages is not None:
            payload["messages"] = request.messages
            return self._stream("/chat/completions", payload, chat=True)
        if request.prompt is None:
            raise BadRequest("a generation request needs messages or a prompt", param="prompt")
        payload["prompt"] = request.prompt
        return self._stream("/completions", payload, chat=False)

    async def _stream(
        self, path: str, payload: dict[str, Any], *, chat: bool
    ) -> AsyncIterator[GenerationChunk]:
        prompt_tokens = completion_tokens = 0
        finish: FinishReason | None = None
        self._in_flight += 1
        try:
            async with self._client().stream("POST", path, json=payload) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _upstream_error(response)
                async for event in _sse_events(response):
                    if isinstance(event.get("usage"), dict):
                        prompt_tokens = event["usage"].get("prompt_tokens", prompt_tokens)
                        completion_tokens = event["usage"].get(
                            "completion_tokens", completion_tokens
                        )
                    for choice in event.get("choices") or []:
                        text = (
                            (choice.get("delta") or {}).get("content")
                            if chat
                            else choice.get("text")
                        ) or ""
                        if choice.get("finish_reason"):
                            finish = "length" if choice["finish_reason"] == "length" else "stop"
                        if text:
                            completion_tokens += 1  # one chunk ≈ one token until usage arrives
                            yield GenerationChunk(text, prompt_tokens, completion_tokens)
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"upstream {self.url} is unreachable: {exc}") from exc
        finally:
            self._in_flight -= 1
        # The finish comes last, after the usage chunk, so its counts are the upstream's.
        yield GenerationChunk("", prompt_tokens, completion_tokens, finish or "stop")

    async def prompt_logprobs(self, requests: list[PromptLogprobsRequest]) -> list[PromptLogprobs]:
        return list(await asyncio.gather(*(self._prompt_logprobs(r) for r in requests)))

    async def _prompt_logprobs(self, request: PromptLogprobsRequest) -> PromptLogprobs:
        self._spec(request.model)
        payload = {
            "model": self._upstream_names[request.model],
            "prompt": request.prompt,
            "echo": True,
            "logprobs": request.top_logprobs,
            "max_tokens": 0,
            "temperature": 0,
        }
        try:
            body = await self._post("/completions", payload)
        except UpstreamError as exc:
            if exc.status_code != 400:
                raise
            raise BadRequest(
                f"the upstream does not support prompt logprobs (completions with "
                f"echo=true, logprobs, max_tokens=0): {exc.message}"
            ) from exc
        logprobs = (body.get("choices") or [{}])[0].get("logprobs")
        if not logprobs or "token_logprobs" not in logprobs:
            raise BadRequest(
                "the upstream does not support prompt logprobs: its echo answer has no logprobs"
            )
        top = logprobs.get("top_logprobs") or [None] * len(logprobs["tokens"])
        return PromptLogprobs(
            tokens=list(logprobs["tokens"]),
            token_logprobs=list(logprobs["token_logprobs"]),
            top_logprobs=[t if request.top_logprobs else None for t in top],
            text_offset=list(logprobs.get("text_offset") or []),
        )

    async def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """Each candidate's first token after the prompt, from the echo of prompt + candidate.

        Token ids are unknown through the OpenAI API: they are reported as -1.
        """
        pairs = [(r, c) for r in requests for c in r.candidates]
        scored = await self.prompt_logprobs(
            [PromptLogprobsRequest(model=r.model, prompt=r.prompt + c) for r, c in pairs]
        )
        results, at = [], 0
        for request in requests:
            logprobs, prompt_tokens = [], 0
            for logprob in scored[at : at + len(request.candidates)]:
                index = next(
                    (
                        i
                        for i, offset in enumerate(logprob.text_offset)
                        if offset >= len(request.prompt)
                    ),
                    len(logprob.text_offset),
                )
                value = logprob.token_logprobs[index] if index < len(logprob.text_offset) else None
                if value is None:
                    raise BadRequest(
                        "cannot find the candidate's first token in the upstream's echo",
                        param="candidates",
                    )
                logprobs.append(value)
                prompt_tokens = index
            at += len(request.candidates)
            results.append(
                ScoreResult(
                    logprobs=logprobs, token_ids=[-1] * len(logprobs), prompt_tokens=prompt_tokens
                )
            )
        return results

    def _spec(self, model: str) -> ModelSpec:
        spec = self.specs.get(model)
        if spec is None:
            raise ModelNotFound(
                f"model {model!r} is not served here; available: {', '.join(self.specs)}",
                param="model",
            )
        return spec

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            raise BackendUnavailable("the openai backend has not been started")
        return self._http

    async def _get(self, path: str) -> dict[str, Any]:
        try:
            response = await self._client().get(path)
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"upstream {self.url} is unreachable: {exc}") from exc
        if response.status_code >= 400:
            raise _upstream_error(response)
        return response.json()

    async def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        self._in_flight += 1
        try:
            response = await self._client().post(path, json=payload)
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"upstream {self.url} is unreachable: {exc}") from exc
        finally:
            self._in_flight -= 1
        if response.status_code >= 400:
            raise _upstream_error(response)
        return response.json()


async def _sse_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON events of an OpenAI stream; an ``error`` event is raised."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        event = json.loads(data)
        if isinstance(event.get("error"), dict):
            error = event["error"]
            raise UpstreamError(
                500 if error.get("type") == "server_error" else 400,
                str(error.get("message")),
                error_type=error.get("type"),
                code=error.get("code"),
            )
        yield event


def _upstream_error(response: httpx.Response) -> UpstreamError:
    message, error_type, code, param = response.text[:500], None, None, None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = str(error.get("message", message))
            error_type, code, param = error.get("type"), error.get("code"), error.get("param")
        elif "detail" in body:  # FastAPI-style
            message = str(body["detail"])
        elif "message" in body:  # vLLM's older ErrorResponse, TGI
            message = str(body["message"])
    return UpstreamError(
        response.status_code,
        message,
        error_type=error_type,
        code=None if code is None else str(code),
        param=param,
    )
