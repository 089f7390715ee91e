"""The UI's pure parts (tables) and its mounting in the control plane, without a browser."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from arena.app import create_app
from arena.settings import Settings
from web import leaderboard_tab, models_tab


def test_leaderboard_rows_in_rank_order_with_ci_percentages_and_blank_reserved_columns():
    rows = [
        {"model": "b", "rating": 980.4, "ci_low": 950.0, "ci_high": 1010.0, "rank": 2,
         "votes": 10, "win_rate": 0.25, "parent": "a", "judge_ratio": None, "mmlu": None,
         "ceval": None, "cmmlu": None},
        {"model": "a", "rating": 1019.6, "ci_low": 990.0, "ci_high": 1050.2, "rank": 1,
         "votes": 10, "win_rate": 0.75, "parent": None, "judge_ratio": 93.25, "mmlu": 0.4512,
         "ceval": None, "cmmlu": 0.3},
    ]
    assert leaderboard_tab.table_rows(rows) == [
        [1, "a", "1020", "990 – 1050", 10, "75.0%", "", "93.2", "45.1%", "—", "30.0%"],
        [2, "b", "980", "950 – 1010", 10, "25.0%", "a", "—", "—", "—", "—"],
    ]
    assert len(leaderboard_tab.HEADERS) == len(leaderboard_tab.table_rows(rows)[0])


def test_models_rows_put_parents_before_children_and_say_whether_served():
    checkpoints = [
        {"name": "alpaca-v2", "parent": "alpaca-v1", "template": "alpaca", "served": False},
        {"name": "llama", "parent": None, "architecture": "LlamaForCausalLM", "served": True},
        {"name": "alpaca-v1", "parent": "llama", "served": True},
    ]
    rows = models_tab.table_rows(checkpoints)
    assert [(r[0], r[1], r[-1]) for r in rows] == [
        ("llama", "", "yes"), ("alpaca-v1", "llama", "yes"), ("alpaca-v2", "alpaca-v1", "no"),
    ]


@pytest.mark.parametrize("ui", [True, False])
def test_the_ui_is_mounted_at_slash_ui_unless_turned_off(tmp_path, ui):
    app = create_app(Settings(data_dir=tmp_path, ui=ui))
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        page = client.get("/ui/")
        if not ui:
            assert page.status_code == 404
            return
        assert page.status_code == 200
        config = client.get("/ui/config").json()
    labels = {c.get("props", {}).get("label") for c in config["components"]}
    assert {"Model A", "Model B"} <= labels
    tabs = [c["props"]["label"] for c in config["components"] if c.get("type") == "tabitem"]
    assert tabs == ["Arena (battle)", "Arena (side-by-side)", "Direct chat", "Leaderboard",
                    "Models"]
