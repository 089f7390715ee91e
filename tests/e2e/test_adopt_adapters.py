"""``arena worker --adopt-adapters``: a LoRA checkpoint registered while the worker runs is
served by it (no restart), next to the base, with its own answers."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import register, wait_for

pytestmark = pytest.mark.e2e


def _logprobs(url: str, model: str) -> list[float]:
    body = {"model": model, "prompt": "hello world", "max_tokens": 1, "echo": True,
            "logprobs": 1, "temperature": 0}
    response = httpx.post(url + "/v1/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["logprobs"]["token_logprobs"][1:]


def test_worker_adopts_a_new_adapter(tiny_models, control_plane, start_worker):
    url = control_plane.url
    base = str(tiny_models["llama"])
    assert register(control_plane, name="base", source=base, template="llama").status_code == 201
    start_worker("base", extra_args=("--adopt-adapters",))
    before = _logprobs(url, "base")

    assert register(control_plane, name="cand", source=base, adapter=str(tiny_models["llama-lora"]),
                    template="vicuna_v1.1", parent="base").status_code == 201
    # another base's adapter is not adopted
    assert register(control_plane, name="other", source=str(tiny_models["opt"]),
                    template="llama").status_code == 201

    def listed() -> bool:
        models = {m["id"] for m in httpx.get(url + "/v1/models").json()["data"]}
        return "cand" in models

    wait_for(listed, timeout_s=60, what="the adapter to be served")
    cand = _logprobs(url, "cand")
    assert cand != pytest.approx(before, abs=1e-4)  # the adapter changes the model
    assert _logprobs(url, "base") == pytest.approx(before, abs=1e-4)  # the base is unchanged
    chat = httpx.post(url + "/v1/chat/completions", timeout=60, json={
        "model": "cand", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
    assert chat.status_code == 200, chat.text
    models = {m["id"] for m in httpx.get(url + "/v1/models").json()["data"]}
    assert "other" not in models
