"""The worker's request handling: templates, context budget, fan-out of ``n``, OpenAI responses.

:class:`Worker` renders chat messages with the spec's conversation template, checks the context
window, fans the ``n`` completions out to the backend concurrently (so the backend batches them)
and builds the OpenAI response or SSE stream.

Log-probabilities of generated tokens (``/v1/completions`` with ``logprobs`` and
``max_tokens > 0``): backends stream text, not token ids, so after generating, the worker
re-tokenizes each completion after its prompt and scores prompt + completion in one
``prompt_logprobs`` call, then splits the list at the prompt's length. The prompt's entries are
exact; the completion always gets exactly ``completion_tokens`` entries (an EOS that ended it has
no text and is put back), and they are exact whenever re-tokenizing the text gives the tokens the
model produced (the usual case). lm-eval's ``local-completions`` relies on that count:
it reads ``token_logprobs[ctxlen:-1]`` of a ``max_tokens=1, echo=True`` request.

Text prompts are tokenized here for logprobs and scored as ids, so every ``logprobs`` answer
lists what the model read, as vLLM and OpenAI do: a BOS the tokenizer put in front is the first
entry, with log-probability None and empty text (the echoed prompt does not contain it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from typing import Any, TypeVar

from model_workers import conversation
from model_workers.backends.base import (
    Backend,
    GenerationChunk,
    GenerationRequest,
    ModelSpec,
    PromptLogprobs,
    PromptLogprobsRequest,
    SamplingParams,
    ScoreRequest,
)
from model_workers.errors import BadRequest, ContextLengthExceeded, ModelNotFound, WorkerError
from model_workers.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    HealthResponse,
    ModelCard,
    ModelList,
    ScoreRequestBody,
    ScoreResponse,
    ScoreResultBody,
    TokenizeRequest,
    TokenizeResponse,
    Usage,
    chat_chunk,
    completion_chunk,
    usage_chunk,
)
from model_workers.streaming import (
    Events,
    closing,
    peek,
    replay,
    sse,
    sse_stream,
    usage,
)

logger = logging.getLogger(__name__)

CHAT_MAX_TOKENS = 512  # chat budget when the request names none (and the context has room)
COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions

T = TypeVar("T")


@dataclasses.dataclass(slots=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class Worker:
    """What the routes delegate to: one backend and the specs it serves."""

    def __init__(self, backend: Backend, specs: list[ModelSpec], backend_name: str) -> None:
        self.backend = backend
        self.backend_name = backend_name
        self.specs = {spec.name: spec for spec in specs}
        self.created = int(time.time())
        self._templates: dict[str, Any] = {}
        if not backend.renders_chat:  # an unknown template fails at start, not per request
            for spec in specs:
                if spec.template != "hf":
                    self._templates[spec.name] = conversation.get_template(spec.template)
        self._tokenizers: dict[tuple[str, str | None, str | None], Any] = {}
        self._tokenizer_lock = asyncio.Lock()

    async def adopt(self, spec: ModelSpec) -> None:
        """Start serving ``spec`` (a LoRA adapter on this worker's base) while running."""
        add = getattr(self.backend, "add_adapter", None)
        if add is None:
            raise BadRequest(f"the {self.backend_name} backend cannot add models while running")
        template = (None if self.backend.renders_chat or spec.template == "hf"
                    else conversation.get_template(spec.template))
        await add(spec)
        if template is not None:
            self._templates[spec.name] = template
        self.specs[spec.name] = spec

    # -- shared pieces --------------------------------------------------------------------

    def spec(self, name: str) -> ModelSpec:
        spec = self.specs.get(name)
        if spec is None:
            raise ModelNotFound(
                f"model {name!r} is not served by this worker; it serves: {', '.join(self.specs)}",
                param="model",
            )
        return spec

    async def tokenizer(self, spec: ModelSpec) -> Any:
        """The spec's tokenizer, loaded once (in a thread) on first use."""
        key = (spec.source, spec.revision, spec.gguf_file)
        if (tokenizer := self._tokenizers.get(key)) is None:
            async with self._tokenizer_lock:
                if (tokenizer := self._tokenizers.get(key)) is None:
                    tokenizer = await asyncio.to_thread(_load_tokenizer, spec)
                    self._tokenizers[key] = tokenizer
        return tokenizer

    def budget(self, spec: ModelSpec, prompt_tokens: int | None, requested: int | None,
               default: int, *, param: str) -> int:
        """Completion tokens to allow; raises when prompt + completion exceed the context.

        ``prompt_tokens is None`` (a backend that renders chat itself) leaves the check to it.
        """
        context = self.backend.context_length(spec.name)
        if prompt_tokens is None:
            return requested if requested is not None else min(default, context)
        if requested is None:
            requested = max(1, min(default, context - prompt_tokens))
        if prompt_tokens + requested > context:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {context} tokens. However, you "
                f"requested {prompt_tokens + requested} tokens ({prompt_tokens} in the {param}, "
                f"{requested} in the completion). Please reduce the length of the {param} or "
                "the completion.",
                param=param,
            )
        return requested

    async def collect(self, request: GenerationRequest) -> Completion:
        """Run one generation to its end."""
        parts: list[str] = []
        last: GenerationChunk | None = None
        async with closing(self.backend.generate(request)) as chunks:
            async for chunk in chunks:
                parts.append(chunk.text)
                last = chunk
        if last is None:
            raise WorkerError(f"the backend returned nothing for request {request.request_id}")
        return Completion("".join(parts), last.prompt_tokens, last.completion_tokens,
                          last.finish_reason or "stop")

    async def merge(self, requests: list[GenerationRequest]) -> Events:
        """Stream several generations at once."""
        if len(requests) == 1:
            async with closing(self.backend.generate(requests[0])) as chunks:
                async for chunk in chunks:
                    yield 0, chunk
            return
        queue: asyncio.Queue[tuple[int, GenerationChunk | Exception | None]] = asyncio.Queue()

        async def pump(index: int, request: GenerationRequest) -> None:
            try:
                async with closing(self.backend.generate(request)) as chunks:
                    async for chunk in chunks:
                        queue.put_nowait((index, chunk))
            except Exception as exc:  # handed to the consumer, which raises it
                queue.put_nowait((index, exc))
            else:
                queue.put_nowait((index, None))

        tasks = [asyncio.create_task(pump(i, r)) for i, r in enumerate(requests)]
        try:
            running = len(tasks)
            while running:
                index, item = await queue.get()
                if item is None:
                    running -= 1
                elif isinstance(item, Exception):
                    raise item
                else:
                    yield index, item
        finally:
            for task in tasks:
                task.cancel()

    # -- /v1/chat/completions -------------------------------------------------------------

    async def chat(self, req: ChatCompletionRequest) -> ChatCompletionResponse | AsyncIterator[bytes]:
        spec = self.spec(req.model)
        if req.logprobs:
            raise BadRequest("logprobs are not supported for chat completions; use "
                             "/v1/completions with echo and logprobs", param="logprobs")
        messages = [m.as_dict() for m in req.messages]
        stop, stop_token_ids = req.stop_list, []
        prompt: str | list[int] | None = None
        prompt_tokens: int | None = None
        if not self.backend.renders_chat:
            prompt = await self._render(spec, messages)
            if (template := self._templates.get(spec.name)) is not None:
                stop += [s for s in conversation.stop_strings(template) if s not in stop]
                stop_token_ids = list(template.stop_token_ids)
            prompt_tokens = self._count(spec, prompt)
        max_tokens = self.budget(spec, prompt_tokens, req.requested_max_tokens, CHAT_MAX_TOKENS,
                                 param="messages")
        params = sampling_params(req, max_tokens, stop)
        params.stop_token_ids = stop_token_ids
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        requests = [
            GenerationRequest(model=spec.name, params=seeded(params, i), prompt=prompt,
                              messages=None if prompt is not None else messages,
                              request_id=f"{rid}-{i}")
            for i in range(req.n)
        ]
        if req.stream:
            return await self._chat_stream(requests, rid, spec.name, req.include_usage)
        done = await gather([self.collect(r) for r in requests])
        return ChatCompletionResponse(
            id=rid, created=int(time.time()), model=spec.name,
            choices=[ChatChoice(index=i, message=AssistantMessage(content=c.text),
                                finish_reason=c.finish_reason) for i, c in enumerate(done)],
            usage=usage(done[0].prompt_tokens, sum(c.completion_tokens for c in done)),
        )

    async def _render(self, spec: ModelSpec, messages: list[dict]) -> str | list[int]:
        if spec.template == "hf":
            # A chat_template writes its own BOS into the text (as vLLM does for chat, the text
            # is then tokenized without adding special tokens, so there is no second BOS).
            tokenizer = await self.tokenizer(spec)
            text = conversation.render_with_tokenizer(tokenizer, messages)
            return tokenizer(text, add_special_tokens=False)["input_ids"]
        return conversation.render(self._templates[spec.name], messages)

    async def _chat_stream(self, requests: list[GenerationRequest], rid: str, model: str,
                           include_usage: bool) -> AsyncIterator[bytes]:
        events = self.merge(requests)
        first = await peek(events)  # an error before the first token is a plain HTTP error
        created = int(time.time())

        def chunk(index: int, delta: dict[str, str], finish_reason: str | None = None) -> bytes:
            return sse(chat_chunk(id=rid, created=created, model=model, index=index, delta=delta,
                                  finish_reason=finish_reason, with_usage_field=include_usage))

        def render(index: int, piece: GenerationChunk) -> Iterable[bytes]:
            if piece.text:
                yield chunk(index, {"content": piece.text})
            if piece.finish_reason is not None:
                yield chunk(index, {}, piece.finish_reason)

        def last(total: Usage) -> bytes:
            return sse(usage_chunk(id=rid, created=created, model=model,
                                   object="chat.completion.chunk", usage=total))

        opening = [chunk(i, {"role": "assistant", "content": ""}) for i in range(len(requests))]
        return sse_stream(first, events, n=len(requests), opening=opening, render=render,
                           last=last if include_usage else None)

    # -- /v1/completions ------------------------------------------------------------------

    async def complete(self, req: CompletionRequest) -> CompletionResponse | AsyncIterator[bytes]:
        spec = self.spec(req.model)
        prompts = req.prompts()
        max_tokens = COMPLETION_MAX_TOKENS if req.max_tokens is None else req.max_tokens
        for prompt in prompts:
            self.budget(spec, self._count(spec, prompt), max_tokens, max_tokens, param="prompt")
        params = sampling_params(req, max_tokens, req.stop_list)
        rid = f"cmpl-{uuid.uuid4().hex}"
        requests = [
            GenerationRequest(model=spec.name, params=seeded(params, i), prompt=prompt,
                              request_id=f"{rid}-{k * req.n + i}")
            for k, prompt in enumerate(prompts)
            for i in range(req.n)
        ]
        if req.stream and not req.echo and req.logprobs is None:
            return await self._completion_stream(requests, rid, spec.name, req)
        if max_tokens == 0:
            response = await self._echo_only(spec, req, prompts, rid)
        else:
            response = await self._completions(spec, req, prompts, requests, rid)
        return replay(response, req.include_usage) if req.stream else response

    def _count(self, spec: ModelSpec, prompt: str | list[int]) -> int | None:
        if isinstance(prompt, list):
            return len(prompt)
        return None if self.backend.renders_chat else self.backend.count_tokens(spec.name, prompt)

    async def _echo_only(self, spec: ModelSpec, req: CompletionRequest,
                         prompts: list[str | list[int]], rid: str) -> CompletionResponse:
        """``max_tokens=0`` with echo: the prompts and their log-probabilities, nothing generated."""
        if self.backend.renders_chat:  # the upstream tokenizes (and lists its BOS) itself
            targets: list[tuple[str | list[int], bool]] = [(p, False) for p in prompts]
        else:
            targets = [await self._prompt_ids(spec, p) for p in prompts]
        scored = await self.backend.prompt_logprobs(
            [PromptLogprobsRequest(model=spec.name, prompt=t, top_logprobs=req.logprobs or 0)
             for t, _ in targets])
        choices = []
        for k, (prompt, (_, bos), got) in enumerate(
                zip(prompts, targets, scored, strict=True)):
            logprobs = _openai_logprobs(got, 0, unlisted_bos=bos)
            for i in range(req.n):
                choices.append(CompletionChoice(
                    index=k * req.n + i,
                    text=prompt if isinstance(prompt, str) else "".join(logprobs.tokens),
                    logprobs=None if req.logprobs is None else logprobs,
                    finish_reason="length"))
        prompt_tokens = sum(len(t) if isinstance(t, list) else len(got.tokens)
                            for (t, _), got in zip(targets, scored, strict=True))
        return CompletionResponse(id=rid, created=int(time.time()), model=spec.name,
                                  choices=choices, usage=usage(prompt_tokens, 0))

    async def _prompt_ids(self, spec: ModelSpec, prompt: str | list[int]) -> tuple[list[int], bool]:
        """The ids a prompt is scored as; True when the tokenizer put a BOS in front of a text."""
        if isinstance(prompt, list):
            return prompt, False
        tokenizer = await self.tokenizer(spec)
        ids = tokenizer(prompt)["input_ids"]
        bos = tokenizer.bos_token_id
        return ids, bool(ids) and bos is not None and ids[0] == bos and not prompt.startswith(
            tokenizer.bos_token)

    async def _completions(self, spec: ModelSpec, req: CompletionRequest,
                           prompts: list[str | list[int]], requests: list[GenerationRequest],
                           rid: str) -> CompletionResponse:
        done = await gather([self.collect(r) for r in requests])
        owners = [prompts[k // req.n] for k in range(len(done))]  # the prompt of each choice
        logprobs: Sequence[CompletionLogprobs | None] = [None] * len(done)
        if req.logprobs is not None:
            logprobs = await self._generated_logprobs(spec, owners, done, req.logprobs, req.echo)
        choices = []
        for k, (prompt, completion) in enumerate(zip(owners, done, strict=True)):
            text = completion.text
            if req.echo:
                text = await self._prompt_text(spec, prompt, logprobs[k], completion) + text
            choices.append(CompletionChoice(index=k, text=text, logprobs=logprobs[k],
                                            finish_reason=completion.finish_reason))
        prompt_tokens = sum(done[k * req.n].prompt_tokens for k in range(len(prompts)))
        return CompletionResponse(
            id=rid, created=int(time.time()), model=spec.name, choices=choices,
            usage=usage(prompt_tokens, sum(c.completion_tokens for c in done)),
        )

    async def _prompt_text(self, spec: ModelSpec, prompt: str | list[int],
                           logprobs: CompletionLogprobs | None, completion: Completion) -> str:
        """The echoed text of a prompt; for token ids, the listed tokens (their offsets index it)."""
        if isinstance(prompt, str):
            return prompt
        if logprobs is not None:
            return "".join(logprobs.tokens[: len(logprobs.tokens) - completion.completion_tokens])
        return (await self.tokenizer(spec)).decode(prompt, skip_special_tokens=False)

    async def _generated_logprobs(self, spec: ModelSpec, prompts: list[str | list[int]],
                                  done: list[Completion], top: int,
                                  echo: bool) -> list[CompletionLogprobs]:
        """Logprobs of (echoed prompt +) completion: see the module docstring."""
        try:
            tokenizer = await self.tokenizer(spec)
        except WorkerError as exc:
            raise BadRequest(f"logprobs of generated tokens need the tokenizer of {spec.name}; "
                             f"{exc.message}. Ask with max_tokens=0 and echo for the prompt's "
                             "logprobs.", param="logprobs") from exc
        sequences, starts, bos_added = [], [], []
        for prompt, completion in zip(prompts, done, strict=True):
            prompt_ids, bos = await self._prompt_ids(spec, prompt)
            sequences.append(prompt_ids + _completion_ids(tokenizer, prompt, prompt_ids, completion))
            starts.append(0 if echo else len(prompt_ids))
            bos_added.append(bos)
        scored = await self.backend.prompt_logprobs(
            [PromptLogprobsRequest(model=spec.name, prompt=s, top_logprobs=top) for s in sequences])
        return [_openai_logprobs(s, start, unlisted_bos=bos)
                for s, start, bos in zip(scored, starts, bos_added, strict=True)]

    async def _completion_stream(self, requests: list[GenerationRequest], rid: str, model: str,
                                 req: CompletionRequest) -> AsyncIterator[bytes]:
        events = self.merge(requests)
        first = await peek(events)
        created = int(time.time())

        def render(index: int, piece: GenerationChunk) -> Iterable[bytes]:
            if piece.text or piece.finish_reason is not None:
                yield sse(completion_chunk(id=rid, created=created, model=model, index=index,
                                           text=piece.text, finish_reason=piece.finish_reason,
                                           with_usage_field=req.include_usage))

        def last(total: Usage) -> bytes:
            return sse(usage_chunk(id=rid, created=created, model=model,
                                   object="text_completion", usage=total))

        return sse_stream(first, events, n=req.n, opening=[], render=render,
                           last=last if req.include_usage else None)

    # -- the rest -------------------------------------------------------------------------

    async def score(self, body: ScoreRequestBody) -> ScoreResponse:
        spec = self.spec(body.model)
        results = await self.backend.score(
            [ScoreRequest(model=spec.name, prompt=r.prompt, candidates=r.candidates)
             for r in body.requests])
        return ScoreResponse(results=[
            ScoreResultBody(logprobs=r.logprobs, token_ids=r.token_ids,
                            prompt_tokens=r.prompt_tokens) for r in results])

    def tokenize(self, body: TokenizeRequest) -> TokenizeResponse:
        return TokenizeResponse(count=self.backend.count_tokens(self.spec(body.model).name,
                                                                body.text))

    def models(self) -> ModelList:
        return ModelList(data=[
            ModelCard(id=name, created=self.created, max_model_len=self.backend.context_length(name))
            for name in self.specs])

    def health(self) -> HealthResponse:
        return HealthResponse(backend=self.backend_name, models=list(self.specs),
                              queue_length=self.backend.queue_length())


def sampling_params(req: Any, max_tokens: int, stop: list[str]) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        seed=req.seed,
        stop=stop,
    )


def seeded(params: SamplingParams, i: int) -> SamplingParams:
    """Completion ``i`` of ``n`` samples with ``seed + i``, so the n answers differ."""
    if i == 0 or params.seed is None:
        return params
    return dataclasses.replace(params, seed=params.seed + i)



async def gather(coros: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Run concurrently; the first failure cancels the rest and is raised as itself."""
    if len(coros) == 1:
        return [await coros[0]]
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coros]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


def _completion_ids(tokenizer: Any, prompt: str | list[int], prompt_ids: list[int],
                    completion: Completion) -> list[int]:
    """The ids of a generated text, exactly ``completion_tokens`` of them.

    Tokenized after the prompt when the prompt's ids survive as a prefix (SentencePiece
    vocabularies tokenize a word differently at the start of a text), else on its own.
    """
    ids: list[int] = []
    if completion.text:
        if isinstance(prompt, str):
            full = tokenizer(prompt + completion.text)["input_ids"]
        else:
            text = tokenizer.decode(prompt_ids, skip_special_tokens=False)
            full = tokenizer(text + completion.text, add_special_tokens=False)["input_ids"]
        if full[: len(prompt_ids)] == prompt_ids:
            ids = full[len(prompt_ids):]
        else:
            ids = tokenizer(completion.text, add_special_tokens=False)["input_ids"]
    ids = ids[: completion.completion_tokens]
    filler = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else prompt_ids[-1]
    return ids + [filler] * (completion.completion_tokens - len(ids))  # a final EOS has no text


def _openai_logprobs(scored: PromptLogprobs, start: int, *,
                     unlisted_bos: bool = False) -> CompletionLogprobs:
    """The entries from ``start`` on; offsets index the echoed text.

    ``unlisted_bos``: the first token is a BOS the tokenizer added in front of a text prompt. It
    stays listed (first logprob None, as vLLM and OpenAI list prompts) but has no text, since the
    echoed prompt does not contain it.
    """
    tokens, offsets = list(scored.tokens), list(scored.text_offset)
    if unlisted_bos and tokens:
        shift, tokens[0] = len(tokens[0]), ""
        offsets = [max(0, offset - shift) for offset in offsets]
    return CompletionLogprobs(
        tokens=tokens[start:],
        token_logprobs=scored.token_logprobs[start:],
        top_logprobs=scored.top_logprobs[start:],
        text_offset=offsets[start:],
    )


def _load_tokenizer(spec: ModelSpec) -> Any:
    from transformers import AutoTokenizer  # heavy: only workers that need a tokenizer pay

    try:
        return AutoTokenizer.from_pretrained(spec.source, revision=spec.revision,
                                             gguf_file=spec.gguf_file)
    except (OSError, ValueError) as exc:
        raise WorkerError(f"cannot load the tokenizer of {spec.name} from {spec.source}: {exc}") \
            from exc


