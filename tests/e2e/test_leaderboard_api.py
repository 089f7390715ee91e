"""The leaderboard as users reach it: `arena serve`, votes imported with the admin key, then
`/api/leaderboard`, its PNGs and `arena leaderboard` (no model workers needed)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess

import httpx
import pytest

from tests.conftest import ADMIN_KEY, _control_plane, arena_cmd, register

pytestmark = pytest.mark.e2e

PNG = b"\x89PNG"


def records(a, b, wins_a, wins_b, ties, **extra):
    """clean_battle records: a beats b ``wins_a`` times, and so on; sides alternate."""
    outcomes = ["a"] * wins_a + ["b"] * wins_b + ["tie"] * ties
    out = []
    for k, outcome in enumerate(outcomes):
        first, second = (a, b) if k % 2 == 0 else (b, a)
        winner = "tie" if outcome == "tie" else "model_a" if (outcome == "a") == (first == a) else "model_b"
        out.append({"model_a": first, "model_b": second, "winner": winner, "tstamp": 1.0e9 + k,
                    "anony": True, "language": "English", "turn": 1, "judge": "arena_user",
                    **extra})  # fmt: skip
    return out


@pytest.fixture(scope="module")
def arena(tmp_path_factory):
    """One server for the module (the tests only read): two registered checkpoints (one a child
    of the other, without votes), and imported votes with two models that are not registered."""
    tmp_path = tmp_path_factory.mktemp("leaderboard")
    server = _control_plane(tmp_path, database_url=None)
    control_plane = next(server)
    source = tmp_path / "llama-config"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 16,
        "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1,
        "vocab_size": 64, "max_position_embeddings": 128}))  # fmt: skip
    for name, parent in (("vicuna-7b", None), ("my-lora", "vicuna-7b")):
        made = register(control_plane, name=name, source=str(source), template="vicuna_v1.1",
                        parent=parent)  # fmt: skip
        assert made.status_code == 201, made.text
    log = (records("chatgpt-3.5", "vicuna-7b", 12, 3, 2)
           + records("vicuna-7b", "alpaca-13b", 10, 4, 1)
           + records("chatgpt-3.5", "alpaca-13b", 14, 1, 0)
           + records("alpaca-13b", "vicuna-7b", 5, 0, 0, anony=False)
           + records("alpaca-13b", "chatgpt-3.5", 2, 0, 0, language="Chinese"))  # fmt: skip
    imported = httpx.post(control_plane.url + "/api/votes/import", json=log,
                          headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)  # fmt: skip
    assert imported.status_code == 200, imported.text
    yield control_plane
    server.close()  # stops the server


def get(server, path, **params):
    return httpx.get(server.url + path, params=params, timeout=60)


def test_leaderboard_json_filters_and_bad_parameters(arena):
    response = get(arena, "/api/leaderboard", rounds=200)
    assert response.status_code == 200, response.text
    board = response.json()
    assert board.keys() >= {"rows", "models", "matrices", "votes", "method", "rounds", "seed",
                            "filter"}  # fmt: skip
    assert board["models"] == ["chatgpt-3.5", "vicuna-7b", "alpaca-13b"]
    assert [r["model"] for r in board["rows"]] == [*board["models"], "my-lora"]
    assert board["votes"] == 17 + 15 + 15 + 2 and board["rounds"] == 200
    rows = {r["model"]: r for r in board["rows"]}
    assert rows["chatgpt-3.5"]["registered"] is False and rows["vicuna-7b"]["registered"] is True
    assert rows["chatgpt-3.5"]["rank"] == 1 and rows["vicuna-7b"]["votes"] == 32
    lora = rows["my-lora"]
    assert lora["parent"] == "vicuna-7b" and lora["votes"] == 0
    assert lora["rating"] is lora["ci_low"] is lora["rank"] is lora["win_rate"] is None
    assert {"judge_ratio", "mmlu", "ceval", "cmmlu"} <= lora.keys()
    assert board["matrices"].keys() == {"win_fraction", "battle_count", "predicted_win_rate"}
    assert board["matrices"]["battle_count"][0][1] == 17

    named = get(arena, "/api/leaderboard", anonymous_only="false", method="sandwich").json()
    assert named["votes"] == board["votes"] + 5 and named["rounds"] == 0
    chinese = get(arena, "/api/leaderboard", language="CHINESE", rounds=50).json()
    assert chinese["votes"] == 2 and chinese["filter"]["language"] == "CHINESE"
    late = get(arena, "/api/leaderboard", since="2001-09-09T01:46:50+00:00", rounds=50).json()
    assert late["votes"] == 7 + 5 + 5 and late["filter"]["since"] == 1.0e9 + 10  # ISO 8601 too
    anchored = get(arena, "/api/leaderboard", anchor="vicuna-7b:1000", rounds=50).json()
    assert {r["model"]: r["rating"] for r in anchored["rows"]}["vicuna-7b"] == pytest.approx(1000)

    for params, name in [({"rounds": 0}, "rounds"), ({"rounds": 10_001}, "rounds"),
                         ({"rounds": "many"}, "rounds"), ({"method": "elo"}, "method"),
                         ({"anchor": "vicuna-7b"}, "anchor"), ({"anchor": "nobody:1000"}, "anchor"),
                         ({"since": "yesterday"}, "since"), ({"until": "inf"}, "until"), ({"since": 10, "until": 5}, "until"),
                         ({"min_turns": 0}, "min_turns"), ({"anonymous_only": "maybe"}, "anonymous_only")]:  # fmt: skip
        bad = get(arena, "/api/leaderboard", **params)
        assert bad.status_code == 400, (params, bad.text)
        assert name in bad.json()["error"]["param"], (params, bad.text)


def test_plots_are_png(arena):
    for kind in ("ratings", "win_fraction", "battle_count", "predicted_win_rate"):
        response = get(arena, f"/api/leaderboard/plots/{kind}.png", rounds=50)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        assert response.content.startswith(PNG)
    unknown = get(arena, "/api/leaderboard/plots/pie.png")
    assert unknown.status_code == 404 and "win_fraction" in unknown.json()["error"]["message"]
    empty = get(arena, "/api/leaderboard/plots/ratings.png", language="klingon")
    assert empty.status_code == 200 and empty.content.startswith(PNG)  # "no votes yet"
    assert get(arena, "/api/leaderboard/plots/ratings.png", rounds=0).status_code == 400


def cli(server, *args):
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(arena_cmd("leaderboard", "--url", server.url, "--rounds", "100", *args),
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    return done


def test_cli_formats_and_plots(arena, tmp_path):
    as_csv = cli(arena, "--format", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [r["model"] for r in rows] == ["chatgpt-3.5", "vicuna-7b", "alpaca-13b", "my-lora"]
    assert rows[0]["rank"] == "1" and rows[-1]["rating"] == "" and rows[-1]["parent"] == "vicuna-7b"
    assert list(rows[0])[-4:] == ["judge_ratio", "mmlu", "ceval", "cmmlu"]

    as_json = cli(arena, "--format", "json", "--all")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["filter"]["anonymous_only"] is False

    as_table = cli(arena, "--plot", str(tmp_path / "plots"))
    assert as_table.returncode == 0, as_table.stderr
    for text in ("rank", "95% CI", "C-Eval", "chatgpt-3.5", "my-lora", "+"):
        assert text in as_table.stdout, as_table.stdout
    for kind in ("ratings", "win_fraction", "battle_count", "predicted_win_rate"):
        assert (tmp_path / "plots" / f"{kind}.png").read_bytes().startswith(PNG)

    bad = cli(arena, "--anchor", "nobody:1000")
    assert bad.returncode == 1 and "anchor" in bad.stderr


def test_human_evaluation_in_llmzoo_form(arena):
    pairs = get(arena, "/api/leaderboard/human").json()["pairs"]
    by_pair = {(p["model_a"], p["model_b"]): p for p in pairs}
    # anonymous votes only (the default filter), alphabetically first model's side
    chatgpt = by_pair["chatgpt-3.5", "vicuna-7b"]
    assert (chatgpt["wins"], chatgpt["losses"], chatgpt["ties"], chatgpt["n"]) == (12, 3, 2, 17)
    assert by_pair["alpaca-13b", "vicuna-7b"]["wins"] == 4
    assert by_pair["alpaca-13b", "vicuna-7b"]["losses"] == 10
    against = get(arena, "/api/leaderboard/human", reference="chatgpt-3.5").json()["pairs"]
    assert {(p["model_a"], p["model_b"]) for p in against} == {
        ("vicuna-7b", "chatgpt-3.5"), ("alpaca-13b", "chatgpt-3.5")}
    vicuna = next(p for p in against if p["model_a"] == "vicuna-7b")
    assert (vicuna["wins"], vicuna["ties"], vicuna["losses"]) == (3, 2, 12)
    assert vicuna["beat_rate"] == pytest.approx(3 / 15)
    everything = get(arena, "/api/leaderboard/human", anonymous_only="false",
                     reference="chatgpt-3.5").json()["pairs"]
    alpaca = next(p for p in everything if p["model_a"] == "alpaca-13b")
    assert alpaca["n"] == 15 + 2
