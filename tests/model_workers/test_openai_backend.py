"""The ``openai`` backend in front of a real upstream: a second worker (hf backend, tiny llama)
on loopback. A front worker using the openai backend must answer exactly as the upstream does."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from model_workers.backends import BackendOptions, ModelSpec, create_backend
from model_workers.backends.openai import OpenAIBackend
from model_workers.errors import BackendUnavailable, BadRequest
from model_workers.server import create_app
from tests.conftest import BackgroundServer

pytestmark = pytest.mark.e2e

UPSTREAM, FRONT = "tiny-llama", "front-llama"
MESSAGES = [{"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module")
def upstream(tiny_models: dict[str, Any]) -> Iterator[BackgroundServer]:
    specs = [ModelSpec(name=UPSTREAM, source=str(tiny_models["llama"]), template="alpaca")]
    backend = create_backend("hf", specs, BackendOptions(device="cpu"))
    with BackgroundServer(create_app(backend, specs, backend_name="hf")) as server:
        yield server


@pytest.fixture(scope="module")
def front(upstream: BackgroundServer) -> Iterator[BackgroundServer]:
    specs = [ModelSpec(name=FRONT, source=UPSTREAM)]  # the source is the upstream's model name
    backend = create_backend("openai", specs, BackendOptions(upstream_url=f"{upstream.url}/v1"))
    assert isinstance(backend, OpenAIBackend)
    with BackgroundServer(create_app(backend, specs, backend_name="openai")) as server:
        yield server


def clients(upstream: BackgroundServer, front: BackgroundServer) -> tuple[Any, Any]:
    return (openai.OpenAI(base_url=f"{upstream.url}/v1", api_key="x", max_retries=0),
            openai.OpenAI(base_url=f"{front.url}/v1", api_key="x", max_retries=0))


def test_chat_and_completions_match_the_upstream(upstream: Any, front: Any) -> None:
    direct, proxied = clients(upstream, front)
    body = {"messages": MESSAGES, "temperature": 0, "max_tokens": 10}
    expected = direct.chat.completions.create(model=UPSTREAM, **body)
    answer = proxied.chat.completions.create(model=FRONT, **body)
    assert answer.model == FRONT
    assert answer.choices[0].message.content == expected.choices[0].message.content
    assert answer.choices[0].finish_reason == expected.choices[0].finish_reason
    assert answer.usage == expected.usage

    stream = proxied.chat.completions.create(model=FRONT, stream=True,
                                             stream_options={"include_usage": True}, **body)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        expected.choices[0].message.content
    assert chunks[-1].usage == expected.usage

    for prompt in ("Once upon a time", [5, 17, 42, 99]):
        body = {"prompt": prompt, "temperature": 0, "max_tokens": 6}
        expected_text = direct.completions.create(model=UPSTREAM, **body).choices[0].text
        assert proxied.completions.create(model=FRONT, **body).choices[0].text == expected_text

    seeded = {"messages": MESSAGES, "temperature": 1.0, "max_tokens": 6, "n": 2, "seed": 3}
    assert [c.message.content for c in proxied.chat.completions.create(
        model=FRONT, **seeded).choices] == [c.message.content for c in
                                            direct.chat.completions.create(model=UPSTREAM,
                                                                           **seeded).choices]


def test_models_and_prompt_logprobs_through_the_front(upstream: Any, front: Any) -> None:
    direct, proxied = clients(upstream, front)
    (model,) = proxied.models.list().data
    assert model.id == FRONT and model.model_extra["max_model_len"] == 512  # upstream's
    body = {"prompt": [5, 17, 42, 99], "max_tokens": 0, "echo": True, "logprobs": 2}
    expected = direct.completions.create(model=UPSTREAM, **body).choices[0].logprobs
    answer = proxied.completions.create(model=FRONT, **body).choices[0].logprobs
    assert answer.tokens == expected.tokens
    assert answer.token_logprobs == expected.token_logprobs
    assert answer.top_logprobs == expected.top_logprobs

    score = {"requests": [{"prompt": "Answer:", "candidates": [" A", " B"]}]}
    expected_score = httpx.post(f"{upstream.url}/worker/score", timeout=30,
                                json={"model": UPSTREAM, **score}).json()["results"][0]
    front_score = httpx.post(f"{front.url}/worker/score", timeout=30,
                             json={"model": FRONT, **score}).json()["results"][0]
    assert front_score["logprobs"] == pytest.approx(expected_score["logprobs"], abs=1e-5)
    assert front_score["token_ids"] == [-1, -1]  # unknown through the OpenAI API


def test_upstream_errors_keep_status_and_message(front: Any, upstream: Any) -> None:
    _, proxied = clients(upstream, front)
    long_text = "many words " * 400  # the front cannot count a text's tokens: the upstream does
    with pytest.raises(openai.BadRequestError) as long:
        proxied.completions.create(model=FRONT, prompt=long_text, max_tokens=4)
    assert long.value.body["message"].startswith("upstream: This model's maximum context")
    assert long.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as streamed:  # before the first token: HTTP 400
        list(proxied.completions.create(model=FRONT, prompt=long_text, max_tokens=4,
                                        stream=True))
    assert streamed.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as ids:  # token ids: the front checks itself
        proxied.completions.create(model=FRONT, prompt=[5] * 600, max_tokens=4)
    assert ids.value.body["message"].startswith("This model's maximum context length is 512")


def test_needs_an_upstream_url() -> None:
    with pytest.raises(BadRequest, match="--upstream-url"):
        OpenAIBackend([ModelSpec(name="m", source="m")], BackendOptions())


@pytest.mark.asyncio
async def test_unreachable_upstream_fails_at_start() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    backend = OpenAIBackend([ModelSpec(name="m", source="m")],
                            BackendOptions(upstream_url=f"http://127.0.0.1:{port}/v1"))
    with pytest.raises(BackendUnavailable, match="unreachable"):
        await backend.start()
    await backend.close()
