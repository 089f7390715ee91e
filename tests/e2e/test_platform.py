"""The platform as a user drives it: `arena serve`, two `arena worker`s, the openai client, lm-eval."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from openai import OpenAI

from tests.conftest import ADMIN_KEY, arena_cmd, register, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture()
def served(control_plane, start_worker, tiny_models):
    """tiny-llama on two workers (for failover), opt + a LoRA adapter on a third."""
    for body in (
        {"name": "tiny-llama", "source": str(tiny_models["llama"])},
        {"name": "tiny-opt", "source": str(tiny_models["opt"]), "template": "vicuna_v1.1"},
        {"name": "tiny-opt-lora", "source": str(tiny_models["opt"]),
         "adapter": str(tiny_models["opt-lora"]), "template": "vicuna_v1.1", "parent": "tiny-opt"},
    ):
        response = register(control_plane, **body)
        assert response.status_code == 201, response.text
    workers = [
        start_worker("tiny-llama", wait=False),
        start_worker("tiny-llama", wait=False),
        start_worker("tiny-opt", "tiny-opt-lora", wait=False),
    ]
    for worker in workers:
        start_worker.wait_registered(worker)
    return workers


def test_openai_client_through_the_gateway(control_plane, served):
    client = OpenAI(base_url=control_plane.url + "/v1", api_key="unused", max_retries=0)
    assert {m.id for m in client.models.list().data} == {"tiny-llama", "tiny-opt", "tiny-opt-lora"}

    chat = client.chat.completions.create(
        model="tiny-llama", messages=[{"role": "user", "content": "Hello!"}],
        max_tokens=8, temperature=0,
    )
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage.completion_tokens == 8 and chat.choices[0].finish_reason == "length"
    assert chat.usage.prompt_tokens > 0

    stream = client.chat.completions.create(
        model="tiny-llama", messages=[{"role": "user", "content": "Hello!"}],
        max_tokens=8, temperature=0, stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == chat.choices[0].message.content  # greedy: streamed == not streamed
    assert chunks[-1].usage.completion_tokens == 8 and not chunks[-1].choices

    several = client.chat.completions.create(
        model="tiny-opt-lora", messages=[{"role": "user", "content": "Hi"}], n=3,
        max_tokens=6, temperature=1.0, seed=7,
    )
    assert [c.index for c in several.choices] == [0, 1, 2]
    base = client.chat.completions.create(
        model="tiny-opt", messages=[{"role": "user", "content": "Hi"}], max_tokens=6, temperature=0)
    lora = client.chat.completions.create(
        model="tiny-opt-lora", messages=[{"role": "user", "content": "Hi"}], max_tokens=6,
        temperature=0)
    assert base.choices[0].message.content != lora.choices[0].message.content

    echo = client.completions.create(
        model="tiny-llama", prompt="The capital of France is", max_tokens=1, echo=True,
        logprobs=1, temperature=0,
    )
    logprobs = echo.choices[0].logprobs
    assert echo.choices[0].text.startswith("The capital of France is")
    assert logprobs.token_logprobs[0] is None
    assert all(lp <= 0 for lp in logprobs.token_logprobs[1:])
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs)


def test_gateway_errors_are_openai_shaped(control_plane, served):
    response = httpx.post(control_plane.url + "/v1/chat/completions",
                          json={"model": "nobody", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 503
    assert "'nobody'" in response.json()["error"]["message"]
    response = httpx.post(control_plane.url + "/v1/chat/completions", content=b"{not json")
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]
    response = httpx.post(control_plane.url + "/v1/chat/completions", json={
        "model": "tiny-llama", "messages": [{"role": "user", "content": "x"}], "temperature": 9})
    assert response.status_code == 400 and response.json()["error"]["param"] == "temperature"
    response = httpx.post(control_plane.url + "/v1/completions", json={
        "model": "tiny-llama", "prompt": "word " * 600, "max_tokens": 10})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"


def test_a_killed_worker_leaves_rotation_and_the_other_keeps_serving(control_plane, served):
    first, second, _ = served
    errors: list[str] = []
    done = threading.Event()
    answered = []

    def ask(i: int) -> None:
        response = httpx.post(control_plane.url + "/v1/completions", timeout=60, json={
            "model": "tiny-llama", "prompt": f"Count {i}:", "max_tokens": 16, "temperature": 0})
        if response.status_code != 200:
            errors.append(response.text)
        answered.append(i)

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(ask, i) for i in range(48)]
        wait_for(lambda: len(answered) >= 8, timeout_s=60, what="first answers")
        first.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        for f in futures:
            f.result()
        done.set()
    assert errors == []

    def out_of_rotation() -> bool:
        rows = {r["address"]: r for r in httpx.get(control_plane.url + "/api/workers").json()}
        return not rows[first.url]["healthy"] and rows[second.url]["healthy"]

    wait_for(out_of_rotation, timeout_s=10, what="dead worker out of rotation")
    assert time.monotonic() - killed_at < 10 + 60  # bounded by the requests still running
    for _ in range(5):
        response = httpx.post(control_plane.url + "/v1/completions", timeout=60, json={
            "model": "tiny-llama", "prompt": "Again", "max_tokens": 4})
        assert response.status_code == 200


def test_registration_needs_a_key_and_bad_input_changes_nothing(control_plane, tiny_models):
    body = {"name": "x", "source": str(tiny_models["llama"])}
    response = httpx.post(control_plane.url + "/api/checkpoints", json=body)
    assert response.status_code == 401 and "API key" in response.json()["error"]["message"]
    response = httpx.post(control_plane.url + "/api/checkpoints", json=body,
                          headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401

    env = {**control_plane.extra["env"]}
    created = subprocess.run(arena_cmd("keys", "create", "--role", "registrar", "--name", "ci"),
                             capture_output=True, text=True, env=_env(env), check=True)
    registrar = created.stdout.strip()
    ok = subprocess.run(
        arena_cmd("checkpoints", "register", "good", str(tiny_models["llama"]),
                  "--meta", "team=search", "--meta", "lr=0.0002"),
        capture_output=True, text=True, env=_env({"ARENA_URL": control_plane.url,
                                                  "ARENA_API_KEY": registrar}))
    assert ok.returncode == 0, ok.stderr
    before = httpx.get(control_plane.url + "/api/checkpoints").json()
    assert [c["name"] for c in before] == ["good"] and before[0]["meta"] == {"team": "search", "lr": 0.0002}

    bad = [
        ["missing", "/no/such/dir"],
        ["badtpl", str(tiny_models["llama"]), "--template", "vicuna_v9"],
        ["wronglora", str(tiny_models["llama"]), "--adapter", str(tiny_models["opt-lora"])],
        ["good", str(tiny_models["opt"])],
    ]
    for args in bad:
        result = subprocess.run(
            arena_cmd("checkpoints", "register", *args), capture_output=True, text=True,
            env=_env({"ARENA_URL": control_plane.url, "ARENA_API_KEY": registrar}))
        assert result.returncode == 1
        assert "error" in result.stderr
    assert httpx.get(control_plane.url + "/api/checkpoints").json() == before

    worker_key = subprocess.run(arena_cmd("keys", "create", "--role", "worker"),
                                capture_output=True, text=True, env=_env(env), check=True)
    response = httpx.post(control_plane.url + "/api/checkpoints", json=body,
                          headers={"Authorization": f"Bearer {worker_key.stdout.strip()}"})
    assert response.status_code == 403


def _env(extra: dict[str, str]) -> dict[str, str]:
    import os

    return {**os.environ, **extra}


def test_admin_key_from_environment_is_accepted(control_plane, tiny_models):
    response = register(control_plane, name="adm", source=str(tiny_models["llama"]))
    assert response.status_code == 201
    assert ADMIN_KEY not in response.text


@pytest.mark.postgres
def test_control_plane_on_postgresql(tmp_path, postgres_url, tiny_models):
    """`arena serve` with ARENA_DATABASE_URL pointing at a real PostgreSQL server."""
    from sqlmodel import SQLModel

    from arena.db import make_engine
    from tests.conftest import _control_plane

    SQLModel.metadata.drop_all(make_engine(postgres_url))
    server_gen = _control_plane(tmp_path, database_url=postgres_url)
    server = next(server_gen)
    try:
        assert register(server, name="pg-llama", source=str(tiny_models["llama"])).status_code == 201
        assert register(server, name="pg-llama", source=str(tiny_models["llama"])).status_code == 409
        bad = register(server, name="pg-bad", source=str(tiny_models["llama"]), template="nope")
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "template"
        names = [c["name"] for c in httpx.get(server.url + "/api/checkpoints").json()]
        assert names == ["pg-llama"]
    finally:
        server_gen.close()
