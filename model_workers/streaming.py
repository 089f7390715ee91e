"""Server-sent events for the worker: framing, merged choice streams, errors mid-stream."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar

from model_workers.backends.base import (
    GenerationChunk,
)
from model_workers.errors import WorkerError
from model_workers.protocol import (
    CompletionResponse,
    Usage,
    completion_chunk,
    error_body,
    usage_chunk,
)

logger = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"

T = TypeVar("T")

Events = AsyncIterator[tuple[int, GenerationChunk]]  # (choice index, chunk), arrival order


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


def stream_error(exc: Exception) -> dict[str, Any]:
    """The SSE error event for a failure after the stream has begun."""
    if isinstance(exc, WorkerError):
        return exc.to_openai()
    logger.error("error while streaming", exc_info=exc)
    return error_body(f"internal error: {type(exc).__name__}: {exc}", type="server_error")


async def sse_stream(
    first: tuple[int, GenerationChunk] | None,
    events: Events,
    *,
    n: int,
    opening: list[bytes],
    render: Callable[[int, GenerationChunk], Iterable[bytes]],
    last: Callable[[Usage], bytes] | None,
) -> AsyncIterator[bytes]:
    """The SSE body: opening chunks, rendered events, the usage chunk, ``[DONE]``.

    ``n`` completions per prompt: choice ``index`` belongs to prompt ``index // n``.
    """
    prompt_tokens: dict[int, int] = {}
    completion_tokens: dict[int, int] = {}
    try:
        for line in opening:
            yield line
        async for index, piece in prepend(first, events):
            for line in render(index, piece):
                yield line
            prompt_tokens[index // n] = piece.prompt_tokens
            completion_tokens[index] = piece.completion_tokens
        if last is not None:
            yield last(usage(sum(prompt_tokens.values()), sum(completion_tokens.values())))
    except Exception as exc:
        yield sse(stream_error(exc))
    finally:
        await aclose(events)
    yield DONE


async def replay(response: CompletionResponse, include_usage: bool) -> AsyncIterator[bytes]:
    """A finished completion (echo or logprobs asked for) sent as a stream: one chunk a choice."""
    for choice in response.choices:
        yield sse(completion_chunk(
            id=response.id, created=response.created, model=response.model, index=choice.index,
            text=choice.text, finish_reason=choice.finish_reason,
            logprobs=choice.logprobs.model_dump() if choice.logprobs else None,
            with_usage_field=include_usage))
    if include_usage:
        yield sse(usage_chunk(id=response.id, created=response.created, model=response.model,
                              object="text_completion", usage=response.usage))
    yield DONE


@contextlib.asynccontextmanager
async def closing(iterator: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Close a backend's generator promptly (frees its batch slot when a client goes away)."""
    try:
        yield iterator
    finally:
        await aclose(iterator)


async def aclose(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


async def peek(events: AsyncIterator[T]) -> T | None:
    try:
        return await anext(events)
    except StopAsyncIteration:
        return None


async def prepend(first: T | None, events: AsyncIterator[T]) -> AsyncIterator[T]:
    if first is not None:
        yield first
        async for event in events:
            yield event

def usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 total_tokens=prompt_tokens + completion_tokens)
