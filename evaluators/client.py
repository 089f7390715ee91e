"""``JudgeClient``: a ``Judge`` over any OpenAI-compatible chat-completions endpoint."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import openai

from evaluators.protocols import JudgeReply, Messages

logger = logging.getLogger(__name__)


@dataclass
class Usage:
    """Running totals over this client's calls (successful ones; cost in USD)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class JudgeClient:
    """Judge prompts with ``openai.AsyncOpenAI`` against ``base_url``.

    At most ``concurrency`` requests are in flight; each has ``timeout_s``. 429, 5xx,
    connection errors and timeouts are retried up to ``max_retries`` times with the openai
    client's exponential backoff (which honours ``Retry-After``). A call that still fails
    comes back as a ``JudgeReply`` with ``error`` set, never as a made-up judgment.
    Cost = tokens / 1000 × the price per 1k tokens (USD).
    """

    def __init__(self, *, base_url: str, model: str, api_key: str, concurrency: int = 8,
                 timeout_s: float = 60.0, max_retries: int = 4,
                 price_per_1k_prompt: float = 0.0, price_per_1k_completion: float = 0.0,
                 temperature: float = 0.0, max_tokens: int | None = None) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.model = model
        self.base_url = base_url
        self.api_key = api_key
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.price_per_1k_prompt = price_per_1k_prompt
        self.price_per_1k_completion = price_per_1k_completion
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.usage = Usage()

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.price_per_1k_prompt
                + completion_tokens * self.price_per_1k_completion) / 1000.0

    async def judge(self, prompts: Sequence[Messages], *,
                    on_reply: Callable[[int, JudgeReply], None] | None = None,
                    ) -> list[JudgeReply]:
        # One client per batch: its connection pool belongs to the running event loop.
        async with openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key,
                                      timeout=self.timeout_s,
                                      max_retries=self.max_retries) as client:
            limit = asyncio.Semaphore(self.concurrency)

            async def one(index: int, messages: Messages) -> JudgeReply:
                async with limit:
                    reply = await self._call(client, messages)
                if on_reply is not None:
                    on_reply(index, reply)
                return reply

            return list(await asyncio.gather(*(one(i, m) for i, m in enumerate(prompts))))

    async def _call(self, client: openai.AsyncOpenAI, messages: Messages) -> JudgeReply:
        try:
            response = await client.chat.completions.create(
                model=self.model, messages=messages,  # type: ignore[arg-type]
                temperature=self.temperature,
                max_tokens=self.max_tokens if self.max_tokens else openai.omit)
        except openai.APIError as exc:
            logger.warning("judge call failed: %s", exc)
            return JudgeReply(text=None, error=f"{type(exc).__name__}: {exc}")
        text = response.choices[0].message.content if response.choices else None
        if text is None:
            return JudgeReply(text=None, error="the judge returned no message content")
        prompt_tokens = response.usage.prompt_tokens if response.usage else 0
        completion_tokens = response.usage.completion_tokens if response.usage else 0
        cost = self.cost(prompt_tokens, completion_tokens)
        self.usage.calls += 1
        self.usage.prompt_tokens += prompt_tokens
        self.usage.completion_tokens += completion_tokens
        self.usage.cost_usd += cost
        return JudgeReply(text=text, prompt_tokens=prompt_tokens,
                          completion_tokens=completion_tokens, cost_usd=cost)
