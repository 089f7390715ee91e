"""A judge test server: a real FastAPI app on a free loopback port that speaks OpenAI's
``/v1/chat/completions`` (non-streamed) and answers in each prompt's contract, deterministically:
scores and ratings come from answer lengths, the longer answer wins a pairwise verdict."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.conftest import BackgroundServer


def length_score(answer: str) -> int:
    """The test judge's score for an answer: 1 + one point per 25 characters, at most 10."""
    return min(10, 1 + len(answer) // 25)


def _between(text: str, start: str, end: str) -> str:
    match = re.search(re.escape(start) + r"\n(.*?)\n" + re.escape(end), text, re.DOTALL)
    if match is None:
        raise ValueError(f"prompt lacks {start!r}")
    return match.group(1)


@dataclass
class JudgeServerState:
    calls: int = 0          # every request, retries included
    ok: int = 0             # requests answered with a judgment
    rate_limited: int = 0
    rate_limit_once: bool = False
    fail_after: int | None = None   # after this many judgments, answer 500
    bias_first: int = 0             # points added to the answer shown first (position bias)
    garble: set[str] = field(default_factory=set)  # question substrings answered with garbage

    def reset_counts(self) -> None:
        self.calls = self.ok = self.rate_limited = 0


def reply_for(state: JudgeServerState, prompt: str) -> str:
    question = prompt.split("\n", 2)[1]
    if any(word in question for word in state.garble):
        return "I would rather not put numbers on these answers."
    if "[The Start of Assistant 1's Answer]" in prompt:
        one = _between(prompt, "[The Start of Assistant 1's Answer]",
                       "[The End of Assistant 1's Answer]")
        two = _between(prompt, "[The Start of Assistant 2's Answer]",
                       "[The End of Assistant 2's Answer]")
        s1 = min(10, length_score(one) + state.bias_first)
        return f"{s1} {length_score(two)}\nThe longer answer is more detailed."
    if "[The Start of Assistant A's Answer]" in prompt:
        a = _between(prompt, "[The Start of Assistant A's Answer]",
                     "[The End of Assistant A's Answer]")
        b = _between(prompt, "[The Start of Assistant B's Answer]",
                     "[The End of Assistant B's Answer]")
        verdict = "A" if len(a) > len(b) else "B" if len(b) > len(a) else "C"
        return f"Compared on detail.\n[[{verdict}]]"
    answer = _between(prompt, "[The Start of the Assistant's Answer]",
                      "[The End of the Assistant's Answer]")
    return f"Judged on detail.\nRating: [[{length_score(answer)}]]"


def create_judge_app(state: JudgeServerState) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        state.calls += 1
        body = await request.json()
        if state.rate_limit_once and state.rate_limited == 0:
            state.rate_limited += 1
            return JSONResponse({"error": {"message": "slow down", "type": "rate_limit",
                                           "param": None, "code": "rate_limit_exceeded"}},
                                status_code=429, headers={"retry-after-ms": "10"})
        if state.fail_after is not None and state.ok >= state.fail_after:
            return JSONResponse({"error": {"message": "judge down", "type": "server_error",
                                           "param": None, "code": None}}, status_code=500)
        prompt = body["messages"][-1]["content"]
        text = reply_for(state, prompt)
        state.ok += 1
        usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(text) // 4}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return JSONResponse({
            "id": f"chatcmpl-{state.calls}", "object": "chat.completion",
            "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": usage})

    return app


@dataclass
class JudgeServer:
    url: str
    state: JudgeServerState


@pytest.fixture()
def judge_server() -> Iterator[JudgeServer]:
    state = JudgeServerState()
    with BackgroundServer(create_judge_app(state)) as server:
        yield JudgeServer(url=server.url + "/v1", state=state)
