"""The worker server on a real uvicorn with the hf backend on tiny checkpoints, driven with the
``openai`` client, httpx and lm-eval; plus the server's own logic against a scripted backend."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
from fastapi import FastAPI, HTTPException, Request
from transformers import AutoModelForCausalLM, AutoTokenizer

from model_workers import conversation
from model_workers.backends import (
    BackendOptions,
    GenerationChunk,
    GenerationRequest,
    ModelSpec,
    PromptLogprobsRequest,
    create_backend,
)
from model_workers.errors import WorkerError
from model_workers.server import create_app
from tests.conftest import BackgroundServer

pytestmark = pytest.mark.e2e

BASE, LORA = "tiny-llama", "tiny-llama-lora"
MESSAGES = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def checkpoint(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["llama"]


@pytest.fixture(scope="module")
def worker(checkpoint: Path, tiny_models: dict[str, Path]) -> Iterator[Any]:
    adapter = tiny_models["llama-lora"]
    specs = [
        ModelSpec(name=BASE, source=str(checkpoint), template="alpaca"),
        ModelSpec(name=LORA, source=str(checkpoint), adapter=str(adapter), template="hf"),
    ]
    backend = create_backend("hf", specs, BackendOptions(device="cpu"))
    with BackgroundServer(create_app(backend, specs, backend_name="hf")) as server:
        server.backend = backend
        yield server


@pytest.fixture(scope="module")
def client(worker: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{worker.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def tokenizer(checkpoint: Path) -> Any:
    return AutoTokenizer.from_pretrained(checkpoint)


def sse_events(response: httpx.Response) -> list[Any]:
    lines = [line for line in response.text.split("\n\n") if line]
    assert all(line.startswith("data: ") for line in lines), lines
    return [line[6:] if line == "data: [DONE]" else json.loads(line[6:]) for line in lines]


def test_health_and_models(worker: Any, client: openai.OpenAI) -> None:
    health = httpx.get(f"{worker.url}/health").json()
    assert health == {"status": "ok", "backend": "hf", "models": [BASE, LORA], "queue_length": 0}
    models = client.models.list().data
    assert [m.id for m in models] == [BASE, LORA]
    assert models[0].owned_by == "alpaca-arena"
    assert models[0].model_extra["max_model_len"] == 512


def test_chat_counts_usage(client: openai.OpenAI, tokenizer: Any) -> None:
    answer = client.chat.completions.create(model=BASE, messages=MESSAGES, temperature=0,
                                            max_tokens=8)
    prompt = conversation.render(conversation.get_template("alpaca"), MESSAGES)
    assert answer.id.startswith("chatcmpl-") and answer.object == "chat.completion"
    assert answer.usage.prompt_tokens == len(tokenizer(prompt)["input_ids"])
    assert 1 <= answer.usage.completion_tokens <= 8
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert answer.choices[0].message.role == "assistant"
    lora = client.chat.completions.create(model=LORA, messages=MESSAGES, temperature=0,
                                          max_tokens=8)  # template "hf": the chat_template
    assert lora.model == LORA and lora.usage.completion_tokens >= 1


def test_stream_matches_greedy_answer(worker: Any, client: openai.OpenAI) -> None:
    body = {"model": BASE, "messages": MESSAGES, "temperature": 0, "max_tokens": 12}
    plain = client.chat.completions.create(**body)
    response = httpx.post(f"{worker.url}/v1/chat/completions", timeout=60, json={
        **body, "stream": True, "stream_options": {"include_usage": True}})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    first, *deltas, finish, last = events[:-1]
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(e["id"] == first["id"] and e["choices"][0]["finish_reason"] is None for e in deltas)
    assert "".join(e["choices"][0]["delta"]["content"] for e in deltas) == \
        plain.choices[0].message.content
    assert finish["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                    "finish_reason": plain.choices[0].finish_reason}
    assert last["choices"] == [] and last["usage"] == plain.usage.model_dump(exclude_none=True)
    # The openai client reads the same stream.
    stream = client.chat.completions.create(**body, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == \
        plain.choices[0].message.content


def test_n_completions_with_seed(client: openai.OpenAI) -> None:
    body = {"model": BASE, "messages": MESSAGES, "temperature": 1.0, "max_tokens": 8, "n": 3,
            "seed": 7}
    first = client.chat.completions.create(**body)
    again = client.chat.completions.create(**body)
    assert [c.index for c in first.choices] == [0, 1, 2]
    texts = [c.message.content for c in first.choices]
    assert texts == [c.message.content for c in again.choices]  # seeded: reproducible
    assert len(set(texts)) > 1  # seed + i: the n samples differ
    assert 3 <= first.usage.completion_tokens <= 24  # summed over the n choices


def test_stop_string_cuts_the_answer(client: openai.OpenAI) -> None:
    body = {"model": BASE, "prompt": "Once upon a time", "temperature": 0, "max_tokens": 16}
    full = client.completions.create(**body).choices[0].text
    stop = next((ch for ch in full[1:] if ch != "\ufffd" and not ch.isspace()), None)
    if stop is None:
        pytest.skip(f"the tiny model's greedy text {full!r} has no usable stop character")
    cut = client.completions.create(**body, stop=[stop]).choices[0]
    assert cut.text == full[: full.index(stop)]
    assert cut.finish_reason == "stop"


def test_completion_stream_matches(worker: Any, client: openai.OpenAI) -> None:
    body = {"model": BASE, "prompt": "Hello", "temperature": 0, "max_tokens": 6}
    plain = client.completions.create(**body)
    chunks = list(client.completions.create(**body, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == plain.choices[0].text
    assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason


def test_token_id_prompts_with_echo_and_logprobs(worker: Any, client: openai.OpenAI) -> None:
    prompts = [[5, 17, 42, 99, 7], [200, 3, 1, 64]]
    answer = client.completions.create(model=BASE, prompt=prompts, max_tokens=1, logprobs=1,
                                       echo=True, temperature=0)
    assert [c.index for c in answer.choices] == [0, 1]
    direct = worker.call(worker.backend.prompt_logprobs(
        [PromptLogprobsRequest(model=BASE, prompt=p, top_logprobs=1) for p in prompts]))
    for choice, ids, expected in zip(answer.choices, prompts, direct, strict=True):
        logprobs = choice.logprobs
        assert len(logprobs.tokens) == len(ids) + 1  # the prompt, then the one generated token
        assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
        assert logprobs.tokens[: len(ids)] == expected.tokens
        assert logprobs.token_logprobs[1: len(ids)] == pytest.approx(
            expected.token_logprobs[1:], abs=1e-5)
        assert all(isinstance(top, dict) and top for top in logprobs.top_logprobs[1:])
        assert choice.text.startswith("".join(expected.tokens))
    assert answer.usage.prompt_tokens == sum(map(len, prompts))
    assert answer.usage.completion_tokens == 2


def test_text_prompt_logprobs_list_the_bos_without_text(client: openai.OpenAI,
                                                        tokenizer: Any) -> None:
    prompt_ids = tokenizer("Hello world")["input_ids"]  # <s> Hello world
    only = client.completions.create(model=BASE, prompt="Hello world", max_tokens=0, echo=True,
                                     logprobs=2)
    more = client.completions.create(model=BASE, prompt="Hello world", max_tokens=1, echo=True,
                                     logprobs=2, temperature=0)
    assert only.choices[0].text == "Hello world" and only.choices[0].finish_reason == "length"
    assert only.usage.prompt_tokens == len(prompt_ids) and only.usage.completion_tokens == 0
    for choice, count in ((only.choices[0], len(prompt_ids)), (more.choices[0],
                                                                len(prompt_ids) + 1)):
        logprobs = choice.logprobs
        assert len(logprobs.tokens) == count
        assert logprobs.tokens[0] == "" and logprobs.token_logprobs[0] is None  # the BOS
        assert choice.text.startswith("Hello world")
        for token, offset in zip(logprobs.tokens, logprobs.text_offset, strict=True):
            assert choice.text[offset: offset + len(token)] == token
    assert more.choices[0].logprobs.token_logprobs[:-1] == pytest.approx(
        only.choices[0].logprobs.token_logprobs, abs=1e-5)


def test_score_is_next_token_logprobs(worker: Any, checkpoint: Path, tokenizer: Any) -> None:
    body = {"model": BASE, "requests": [{"prompt": "Answer:", "candidates": [" A", " B", " C"]},
                                        {"prompt": "Q: 1+1? A:", "candidates": [" 2", " 3"]}]}
    results = httpx.post(f"{worker.url}/worker/score", json=body, timeout=60).json()["results"]
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    for request, result in zip(body["requests"], results, strict=True):
        ids = tokenizer(request["prompt"])["input_ids"]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1], dim=-1)
        assert result["prompt_tokens"] == len(ids)
        assert result["logprobs"] == pytest.approx(logprobs[result["token_ids"]].tolist(),
                                                   abs=1e-4)


def test_errors_are_openai_shaped(worker: Any, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=MESSAGES)
    assert missing.value.body == {
        "message": f"model 'nope' is not served by this worker; it serves: {BASE}, {LORA}",
        "type": "invalid_request_error", "param": "model", "code": "model_not_found"}
    with pytest.raises(openai.BadRequestError) as hot:
        client.chat.completions.create(model=BASE, messages=MESSAGES, temperature=3)
    assert hot.value.body["param"] == "temperature" and "2" in hot.value.body["message"]
    with pytest.raises(openai.BadRequestError) as long:
        client.completions.create(model=BASE, prompt=[5] * 600, max_tokens=4)
    assert long.value.body["code"] == "context_length_exceeded"
    assert "512" in long.value.body["message"]
    for bad in ({"max_tokens": 0}, {"n": 17}, {"top_p": 0}, {"stop": ["a", "b", "c", "d", "e"]}):
        response = httpx.post(f"{worker.url}/v1/completions", json={
            "model": BASE, "prompt": "x", **bad})
        assert response.status_code == 400, bad
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    conversation_error = httpx.post(f"{worker.url}/v1/chat/completions", json={
        "model": BASE, "messages": [{"role": "assistant", "content": "hi"}]})
    assert conversation_error.status_code == 400
    assert "user" in conversation_error.json()["error"]["message"]
    assert httpx.get(f"{worker.url}/nowhere").json()["error"]["type"] == "invalid_request_error"


def test_lm_eval_local_completions_loglikelihood(worker: Any, checkpoint: Path) -> None:
    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    lm = LocalCompletionsAPI(base_url=f"{worker.url}/v1/completions", model=BASE,
                             tokenizer=str(checkpoint), tokenizer_backend="huggingface",
                             batch_size=2, max_retries=1)
    pairs = [("The capital of France is", " Paris"), ("Question: 2+2=? Answer:", " 4"),
             ("abc", "d e f g")]
    results = lm.loglikelihood([Instance(request_type="loglikelihood", doc={}, arguments=pair,
                                         idx=i) for i, pair in enumerate(pairs)])
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    for (context, continuation), (loglikelihood, _) in zip(pairs, results, strict=True):
        context_ids, continuation_ids = lm._encode_pair(context, continuation)
        ids = context_ids + continuation_ids
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0], dim=-1)
        expected = sum(logprobs[len(context_ids) + j - 1, token].item()
                       for j, token in enumerate(continuation_ids))
        assert loglikelihood == pytest.approx(expected, abs=1e-4)


# -- the server's own logic, against a scripted backend ---------------------------------------


class ScriptedBackend:
    """Says "a", "b", "c"; records requests and how many ran at once."""

    renders_chat = False

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []
        self.running = self.peak = 0
        self.fail_at: int | None = None

    def model_names(self) -> list[str]:
        return ["scripted"]

    def context_length(self, model: str) -> int:
        return 64

    def count_tokens(self, model: str, text: str) -> int:
        return len(text.split())

    def queue_length(self) -> int:
        return self.running

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self.requests.append(request)
        return self._words()

    async def _words(self) -> AsyncIterator[GenerationChunk]:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(0.01)  # the other requests of the batch start meanwhile
            for i, word in enumerate("abc"):
                if self.fail_at == i:
                    raise WorkerError("the backend broke")
                yield GenerationChunk(word, 3, i + 1, "stop" if i == 2 else None)
        finally:
            self.running -= 1

    async def score(self, requests: list[Any]) -> list[Any]:
        raise RuntimeError("unexpected")

    async def prompt_logprobs(self, requests: list[Any]) -> list[Any]:
        raise NotImplementedError


@pytest.fixture
def scripted() -> tuple[ScriptedBackend, httpx.AsyncClient]:
    backend = ScriptedBackend()
    specs = [ModelSpec(name="scripted", source="none", template="vicuna_v0")]
    app = create_app(backend, specs, backend_name="scripted")
    return backend, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w")


@pytest.mark.asyncio
async def test_n_runs_concurrently_with_seeds_and_template_stops(scripted: Any) -> None:
    backend, http = scripted
    response = await http.post("/v1/chat/completions", json={
        "model": "scripted", "messages": MESSAGES, "n": 3, "seed": 5, "stop": "x"})
    assert [c["message"]["content"] for c in response.json()["choices"]] == ["abc"] * 3
    assert backend.peak == 3
    assert [r.params.seed for r in backend.requests] == [5, 6, 7]
    assert backend.requests[0].params.stop == ["x", "###"]  # vicuna_v0's stop string added
    prompt_words = len(backend.requests[0].prompt.split())
    assert backend.requests[0].params.max_tokens == 64 - prompt_words  # default: what fits
    assert response.json()["usage"] == {"prompt_tokens": 3, "completion_tokens": 9,
                                        "total_tokens": 12}


@pytest.mark.asyncio
async def test_stream_of_n_and_error_mid_stream(scripted: Any) -> None:
    backend, http = scripted
    events = sse_events(await http.post("/v1/completions", json={
        "model": "scripted", "prompt": ["p", "q"], "n": 2, "stream": True,
        "stream_options": {"include_usage": True}}))
    texts: dict[int, str] = {}
    for event in events[:-2]:
        choice = event["choices"][0]
        texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    assert texts == {0: "abc", 1: "abc", 2: "abc", 3: "abc"}
    assert events[-2]["usage"] == {"prompt_tokens": 6, "completion_tokens": 12,
                                   "total_tokens": 18}
    backend.fail_at = 1
    events = sse_events(await http.post("/v1/chat/completions", json={
        "model": "scripted", "messages": MESSAGES, "stream": True}))
    assert events[1]["choices"][0]["delta"] == {"content": "a"}
    assert events[-2] == {"error": {"message": "the backend broke", "type": "server_error",
                                    "param": None, "code": None}}
    assert events[-1] == "[DONE]"
    backend.fail_at = 0  # before the first token: a plain HTTP error
    response = await http.post("/v1/chat/completions", json={
        "model": "scripted", "messages": MESSAGES, "stream": True})
    assert response.status_code == 500 and response.json()["error"]["message"] == \
        "the backend broke"


@pytest.mark.asyncio
async def test_unexpected_exception_is_500_in_openai_shape(scripted: Any) -> None:
    _, http = scripted
    response = await http.post("/worker/score", json={
        "model": "scripted", "requests": [{"prompt": "p", "candidates": ["a"]}]})
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    assert "RuntimeError: unexpected" in response.json()["error"]["message"]


# -- a worker process with a controller ---------------------------------------------------------


class FakeController:
    """The control plane's worker API, recording what the worker sends."""

    def __init__(self, checkpoint: Path) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.app = app = FastAPI()
        registered = []

        @app.get("/api/checkpoints/{name}")
        async def checkpoint_entry(name: str) -> dict:
            if name != BASE:
                raise HTTPException(404, f"no checkpoint {name}")
            return {"name": BASE, "source": str(checkpoint), "revision": None, "adapter": None,
                    "gguf_file": None, "template": "alpaca", "materialized_path": None,
                    "context_length": 256, "status": "ready"}

        @app.post("/api/workers")
        async def register(request: Request) -> dict:
            body = await request.json()
            registered.append(body)
            self.calls.append(("register", request.headers.get("authorization"), body))
            return {"id": f"w{len(registered)}", "heartbeat_interval_s": 0.2, "expiry_s": 1.0}

        @app.post("/api/workers/{worker_id}/heartbeat")
        async def heartbeat(worker_id: str, request: Request) -> dict:
            self.calls.append(("heartbeat", worker_id, await request.json()))
            if worker_id == "w1" and sum(c[0] == "heartbeat" for c in self.calls) >= 2:
                raise HTTPException(404, "unknown worker")  # the controller forgot us
            return {}

        @app.delete("/api/workers/{worker_id}")
        async def deregister(worker_id: str) -> dict:
            self.calls.append(("deregister", worker_id, None))
            return {}


def test_worker_process_registers_heartbeats_and_leaves(checkpoint: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    controller = FakeController(checkpoint)
    with BackgroundServer(controller.app) as server:
        config = {"controller": server.url, "checkpoints": [BASE], "api_key": "sekrit",
                  "device": "cpu", "log_level": "warning"}
        code = ("import json, sys; from model_workers.main import WorkerConfig, run_worker; "
                "run_worker(WorkerConfig(**json.loads(sys.argv[1])))")
        worker = subprocess.Popen([sys.executable, "-c", code, json.dumps(config)],
                                  cwd=Path(__file__).resolve().parents[2],
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            deadline = time.monotonic() + 60
            while sum(c[0] == "register" for c in controller.calls) < 2:  # dropped, came back
                assert worker.poll() is None and time.monotonic() < deadline, controller.calls
                time.sleep(0.05)
            _, auth, body = controller.calls[0]
            assert auth == "Bearer sekrit"
            assert body["backend"] == "hf" and body["models"] == [BASE]
            health = httpx.get(f"{body['address']}/health").json()
            assert health["models"] == [BASE]
            models = httpx.get(f"{body['address']}/v1/models").json()["data"]
            assert models[0]["max_model_len"] == 256  # the registry's context length
            worker.send_signal(signal.SIGINT)
            assert worker.wait(30) == 0
        finally:
            worker.kill()
    heartbeat = next(c for c in controller.calls if c[0] == "heartbeat")
    assert heartbeat[2] == {"queue_length": 0, "models": [BASE]}
    assert controller.calls[-1] == ("deregister", "w2", None)


@pytest.mark.asyncio
async def test_unknown_checkpoint_is_a_clear_error() -> None:
    from model_workers.registration import ControllerClient, ControllerError

    transport = httpx.MockTransport(lambda request: httpx.Response(404, json={"detail": "no"}))
    async with ControllerClient("http://ctl:8000", transport=transport) as client:
        with pytest.raises(ControllerError,
                           match="checkpoint nope is not registered at http://ctl:8000"):
            await client.fetch_checkpoint("nope")


def test_worker_config_is_strict() -> None:
    from pydantic import ValidationError

    from model_workers.main import WorkerConfig

    with pytest.raises(ValidationError, match="nothing to serve"):
        WorkerConfig()
    with pytest.raises(ValidationError, match="--controller"):
        WorkerConfig(checkpoints=[BASE])
    with pytest.raises(ValidationError, match="extra"):
        WorkerConfig(model_path="/m", colour="blue")
    assert WorkerConfig(model_path="/models/alpaca-7b/").standalone_spec().name == "alpaca-7b"
    assert all(field.description for field in WorkerConfig.model_fields.values())
