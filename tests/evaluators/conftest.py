"""A judge test server: a real FastAPI app on a free loopback port that speaks OpenAI's
``/v1/chat/completions`` (non-streamed) and answers in each prompt's contract, deterministically:
scores and ratings come from answer lengths, the longer answer wins a pairwise verdict. In a
multi-turn prompt the judged answer is each conversation's last. A chat test server stands in
for the control plane's gateway when answers are produced."""

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
    requests: list[dict] = field(default_factory=list)  # bodies of the judged requests
    authorization: list[str] = field(default_factory=list)

    def reset_counts(self) -> None:
        self.calls = self.ok = self.rate_limited = 0
        self.requests.clear()


def judged_question(prompt: str) -> str:
    """The question being judged: the prompt's second line, or a conversation's last turn."""
    if "### User:\n" in prompt:
        return prompt.rsplit("### User:\n", 1)[1].split("\n", 1)[0]
    return prompt.split("\n", 2)[1]


def judged_answer(prompt: str, label: str, speaker: str | None = None) -> str:
    """``label``'s answer in a single-turn prompt, or its last one in a conversation."""
    if f"[The Start of {label}'s Answer]" in prompt:
        return _between(prompt, f"[The Start of {label}'s Answer]",
                        f"[The End of {label}'s Answer]")
    block = _between(prompt, f"[The Start of {label}'s Conversation with the User]",
                     f"[The End of {label}'s Conversation with the User]")
    return block.rsplit(f"### {speaker or label}:\n", 1)[1]


def reply_for(state: JudgeServerState, prompt: str) -> str:
    if any(word in judged_question(prompt) for word in state.garble):
        return "I would rather not put numbers on these answers."
    if "[The Start of Assistant 1's" in prompt:
        one, two = judged_answer(prompt, "Assistant 1"), judged_answer(prompt, "Assistant 2")
        s1 = min(10, length_score(one) + state.bias_first)
        return f"{s1} {length_score(two)}\nThe longer answer is more detailed."
    if "[The Start of Assistant A's" in prompt:
        a, b = judged_answer(prompt, "Assistant A"), judged_answer(prompt, "Assistant B")
        verdict = "A" if len(a) > len(b) else "B" if len(b) > len(a) else "C"
        return f"Compared on detail.\n[[{verdict}]]"
    answer = judged_answer(prompt, "the Assistant", "Assistant")
    return f"Judged on detail.\nRating: [[{length_score(answer)}]]"


def create_judge_app(state: JudgeServerState) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        state.calls += 1
        body = await request.json()
        state.authorization.append(request.headers.get("authorization", ""))
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
        state.requests.append(body)
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


@dataclass
class ChatServerState:
    """The gateway stand-in: each reply is ``"x" * lengths[model][turn - 1]`` (40 × turn when
    not set), turn = the number of user messages in the request."""

    requests: list[dict] = field(default_factory=list)
    lengths: dict[str, tuple[int, ...]] = field(default_factory=dict)
    fail_turn: int | None = None  # answer 500 to every request at this turn

    def length(self, model: str, turn: int) -> int:
        lengths = self.lengths.get(model)
        return lengths[turn - 1] if lengths else 40 * turn


def create_chat_app(state: ChatServerState) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        state.requests.append(body)
        turn = sum(m["role"] == "user" for m in body["messages"])
        if turn == state.fail_turn:
            return JSONResponse({"error": {"message": "worker down", "type": "server_error",
                                           "param": None, "code": None}}, status_code=500)
        text = "x" * state.length(body["model"], turn)
        return JSONResponse({
            "id": f"chatcmpl-{len(state.requests)}", "object": "chat.completion",
            "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    return app


@dataclass
class ChatServer:
    url: str  # the control plane's base URL: without /v1
    state: ChatServerState


@pytest.fixture()
def chat_server() -> Iterator[ChatServer]:
    state = ChatServerState()
    with BackgroundServer(create_chat_app(state)) as server:
        yield ChatServer(url=server.url, state=state)
