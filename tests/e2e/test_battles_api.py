"""Battles as a browser drives them: `arena serve`, two real workers, SSE streams, votes, the CLI."""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.conftest import (
    ADMIN_KEY,
    Proc,
    _control_plane,
    arena_cmd,
    free_port,
    register,
)

pytestmark = pytest.mark.e2e

NAMES = ("tiny-llama", "tiny-opt")


def _serve(tmp_path, **env_extra: str) -> Iterator[Proc]:
    yield from _control_plane(tmp_path, **env_extra)


@pytest.fixture()
def control_plane(tmp_path) -> Iterator[Proc]:
    """Overrides conftest's: limits high enough for 16 clients on one address."""
    yield from _serve(tmp_path, ARENA_BATTLES_PER_MINUTE="1000", ARENA_VOTES_PER_MINUTE="1000")


class Recorder:
    """Every byte the API sends back before the vote, to search for the models' names."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=120)
        self.seen: list[str] = []

    def call(self, method: str, path: str, **kwargs) -> httpx.Response:
        response = self.client.request(method, path, **kwargs)
        self.seen.append(response.text)
        return response

    def stream(self, path: str, body: dict | None = None) -> list[dict]:
        events = []
        with self.client.stream("POST", path, json=body) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                self.seen.append(line)
                if line.startswith("data: "):
                    events.append(json.loads(line[len("data: "):]))
        return events


def _both_answered(events: list[dict]) -> None:
    for side in "ab":
        assert {"side": side, "done": True} | {"finish_reason": "length"} in events, events
    assert not [e for e in events if "error" in e], events
    assert events[-1]["done"] is True and events[-1]["stored"] is True


def test_anonymous_battle_stream_vote_reveal_and_vote_log(control_plane, start_worker, tiny_models,
                                                          tmp_path):
    assert register(control_plane, name="tiny-llama", source=str(tiny_models["llama"])).status_code == 201
    assert register(control_plane, name="tiny-opt", source=str(tiny_models["opt"]),
                    template="vicuna_v1.1").status_code == 201
    workers = [start_worker("tiny-llama", wait=False), start_worker("tiny-opt", wait=False)]
    for worker in workers:
        start_worker.wait_registered(worker)
    api = Recorder(control_plane.url)
    ask = {"max_tokens": 6, "temperature": 0}

    created = api.call("POST", "/api/battles", json={"session_id": "browser-1"})
    assert created.status_code == 201, created.text
    battle = created.json()
    assert battle["models"] == ["Model A", "Model B"] and battle["model_a"] is None
    assert len(battle["id"]) == 32
    path = f"/api/battles/{battle['id']}"

    first = api.stream(path + "/messages", {"content": "Hello, who are you?", **ask})
    _both_answered(first)
    sides = {e["side"] for e in first if "delta" in e}
    assert sides == {"a", "b"}  # both streamed text
    _both_answered(api.stream(path + "/messages", {"content": "Tell me more.", **ask}))
    before = api.call("GET", path).json()
    _both_answered(api.stream(path + "/regenerate", ask))
    state = api.call("GET", path).json()
    assert state["turns"] == 2 and state["status"] == "open" and state["model_a"] is None
    assert state["conversation_a"][:3] == before["conversation_a"][:3]
    assert [m["role"] for m in state["conversation_b"]] == ["user", "assistant"] * 2

    empty = api.call("POST", "/api/battles", json={"session_id": "browser-1"}).json()
    refused = api.call("POST", f"/api/battles/{empty['id']}/vote", json={"winner": "a"})
    assert refused.status_code == 400 and "no answered message" in refused.text
    unknown = api.call("POST", "/api/battles/" + "f" * 32 + "/vote", json={"winner": "a"})
    assert unknown.status_code == 404
    bad = api.call("POST", path + "/vote", json={"winner": "model_a"})
    assert bad.status_code == 400
    everything = "\n".join(api.seen).lower()
    for name in NAMES:
        assert name not in everything, f"{name} leaked before the vote"

    voted = api.call("POST", path + "/vote", json={"winner": "tie"})
    assert voted.status_code == 200, voted.text
    revealed = voted.json()
    assert {revealed["model_a"], revealed["model_b"]} == set(NAMES)
    assert revealed["winner"] == "tie" and revealed["status"] == "voted"
    assert api.call("GET", path).json()["model_a"] == revealed["model_a"]
    again = api.call("POST", path + "/vote", json={"winner": "b"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    closed = api.call("POST", path + "/messages", json={"content": "still there?"})
    assert closed.status_code == 409

    _durability(control_plane, api)
    _vote_log_round_trip(control_plane, tmp_path)


def _durability(control_plane: Proc, api: Recorder) -> None:
    """16 clients vote on 24 battles, each twice at once: every acknowledged vote is exported."""
    ids = []
    for i in range(24):
        ids.append(api.call("POST", "/api/battles", json={"session_id": f"s{i}"}).json()["id"])

    def answer(battle_id: str) -> None:
        with httpx.Client(base_url=control_plane.url, timeout=120) as client:
            response = client.post(f"/api/battles/{battle_id}/messages",
                                   json={"content": "Hi", "max_tokens": 2})
            assert '"stored": true' in response.text, response.text

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(answer, ids))

    def vote(job: tuple[str, str]) -> tuple[str, str, int]:
        battle_id, winner = job
        response = httpx.post(f"{control_plane.url}/api/battles/{battle_id}/vote",
                              json={"winner": winner}, timeout=60)
        return battle_id, winner, response.status_code

    rng = random.Random(0)
    jobs = [(b, rng.choice(["a", "b", "tie", "bothbad"])) for b in ids for _ in range(2)]
    rng.shuffle(jobs)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(vote, jobs))
    acknowledged = {(b, w) for b, w, status in results if status == 200}
    assert sorted(status for *_, status in results) == [200] * 24 + [409] * 24
    exported = httpx.get(control_plane.url + "/api/votes/export", timeout=60,
                         headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
    vocabulary = {"a": "model_a", "b": "model_b", "tie": "tie", "bothbad": "tie (bothbad)"}
    assert {(b, vocabulary[w]) for b, w in acknowledged} <= {
        (r["question_id"], r["winner"]) for r in exported}


def _vote_log_round_trip(control_plane: Proc, tmp_path) -> None:
    env = {**os.environ, "ARENA_URL": control_plane.url, "ARENA_API_KEY": ADMIN_KEY}
    out = tmp_path / "votes.json"
    done = subprocess.run(arena_cmd("votes", "export", str(out)), env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    records = json.loads(out.read_text())
    assert len(records) == 25 and all(set(NAMES) == {r["model_a"], r["model_b"]} for r in records)
    assert all(r["judge"] == "arena_user" and r["anony"] is True for r in records)

    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([*records[:3], {**records[3], "winner": "nobody"}]))
    failed = subprocess.run(arena_cmd("votes", "import", str(broken)), env=env,
                            capture_output=True, text=True)
    assert failed.returncode == 1 and "record 3: field 'winner'" in failed.stderr
    imported = subprocess.run(arena_cmd("votes", "import", str(out)), env=env,
                              capture_output=True, text=True)
    assert imported.returncode == 0 and "imported 25 votes" in imported.stdout, imported.stderr
    again = tmp_path / "again.json"
    subprocess.run(arena_cmd("votes", "export", str(again)), env=env, check=True,
                   capture_output=True)
    both = json.loads(again.read_text())
    key = lambda r: (r["tstamp"], r["question_id"])  # noqa: E731
    assert sorted(both, key=key) == sorted(records * 2, key=key)
    unauthorised = httpx.get(control_plane.url + "/api/votes/export")
    assert unauthorised.status_code == 401


class Moderation(BaseHTTPRequestHandler):
    """The OpenAI moderation endpoint's shape: flags any input containing 'forbidden'."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        flagged = "forbidden" in json.dumps(body["input"])
        payload = json.dumps({"id": "modr-1", "model": "omni-moderation-latest", "results": [
            {"flagged": flagged, "categories": {"harassment": flagged},
             "category_scores": {"harassment": 0.9 if flagged else 0.01}}]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


def test_rate_limit_moderation_and_a_dead_worker_stay_anonymous(tmp_path):
    moderation = ThreadingHTTPServer(("127.0.0.1", 0), Moderation)
    threading.Thread(target=moderation.serve_forever, daemon=True).start()
    plane = _serve(tmp_path, ARENA_BATTLES_PER_MINUTE="2",
                   ARENA_MODERATION_URL=f"http://127.0.0.1:{moderation.server_port}/v1")
    server = next(plane)
    try:
        # a worker row whose address answers nothing: both models look served, then fail
        # (the first failed connection takes it out of rotation)
        dead = f"http://127.0.0.1:{free_port()}"
        registered = httpx.post(server.url + "/api/workers", headers={
            "Authorization": f"Bearer {ADMIN_KEY}"}, json={
            "address": dead, "backend": "hf", "models": ["secret-alpha", "secret-beta"]})
        assert registered.status_code == 200, registered.text
        api = Recorder(server.url)
        battle = api.call("POST", "/api/battles", json={"session_id": "x"}).json()
        path = f"/api/battles/{battle['id']}"
        assert api.call("POST", "/api/battles", json={"session_id": "x"}).status_code == 201
        limited = api.call("POST", "/api/battles", json={"session_id": "y"})
        assert limited.status_code == 429 and "this address" in limited.json()["error"]["message"]
        assert 1 <= int(limited.headers["Retry-After"]) <= 60

        refused = api.call("POST", path + "/messages", json={"content": "a forbidden thing"})
        assert refused.status_code == 400
        assert refused.json()["error"]["message"] == "message refused by moderation"
        events = api.stream(path + "/messages", {"content": "a fine thing"})
        errors = sorted(e["error"] for e in events if "error" in e)
        assert errors[0].startswith("Model A failed to answer:") and "Model A" in errors[0][20:]
        assert errors[1].startswith("Model B failed to answer:")
        assert events[-1] == {"done": True, "stored": False}

        assert "secret" not in "\n".join(api.seen)
    finally:
        plane.close()
        moderation.shutdown()
