"""The UI's pure parts (tables, formatting, request bodies) and its mounting in the control
plane, without a browser."""

from __future__ import annotations

import math

import pytest
from fastapi.testclient import TestClient

from arena.app import create_app
from arena.settings import Settings
from web import finetune_tab, formatting, jobs_tab, leaderboard_tab, models_tab, results_view
from web.formatting import DASH


def test_leaderboard_rows_in_rank_order_with_percentages_judge_ratio_and_dashes():
    rows = [
        {"model": "b", "rating": 980.4, "ci_low": 950.0, "ci_high": 1010.0, "rank": 2,
         "votes": 10, "win_rate": 0.25, "parent": "a", "judge_ratio": None, "mmlu": None,
         "ceval": None, "cmmlu": None},
        {"model": "a", "rating": 1019.6, "ci_low": 990.0, "ci_high": 1050.2, "rank": 1,
         "votes": 10, "win_rate": 0.75, "parent": None, "judge_ratio": 93.25,
         "judge_ci_low": 88.06, "judge_ci_high": 98.04, "mmlu": 0.4512, "ceval": None,
         "cmmlu": 0.3},
    ]
    assert leaderboard_tab.table_rows(rows) == [
        [1, "a", "1020", "990 – 1050", 10, "75.0%", "", "93.2%", "88.1 – 98.0%", "45.1%", DASH,
         "30.0%"],
        [2, "b", "980", "950 – 1010", 10, "25.0%", "a", DASH, DASH, DASH, DASH, DASH],
    ]
    assert len(leaderboard_tab.HEADERS) == len(leaderboard_tab.table_rows(rows)[0])
    assert leaderboard_tab.headers("llama-7b")[7] == "Judge ratio vs llama-7b"
    assert leaderboard_tab.headers(None) == leaderboard_tab.HEADERS
    assert "against **llama-7b**" in leaderboard_tab.summary_text(rows, "llama-7b")
    assert leaderboard_tab.summary_text(rows, None).startswith("2 models, 10 counted votes.")


@pytest.mark.parametrize(("value", "fraction", "ratio"), [
    (0.4512, "45.1%", "0.5%"), (1, "100.0%", "1.0%"), (93.25, "9325.0%", "93.2%"),
    (None, DASH, DASH), (math.nan, DASH, DASH), (math.inf, DASH, DASH), (True, DASH, DASH),
    ("0.5", DASH, DASH),
])
def test_percent_is_for_fractions_and_ratio_for_values_already_in_percent(value, fraction, ratio):
    assert formatting.percent(value) == fraction
    assert formatting.ratio(value) == ratio


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (42.4, "42s"), (185, "3m 05s"), (7620, "2h 07m"), (None, DASH), (-1, DASH),
    (math.nan, DASH),
])
def test_durations_read_like_an_eta(seconds, text):
    assert formatting.duration(seconds) == text


def test_timestamps_are_utc_from_iso_or_unix_seconds():
    assert formatting.timestamp("2025-03-04T05:06:07.123456") == "2025-03-04 05:06:07"
    assert formatting.timestamp("2025-03-04T06:06:07+01:00") == "2025-03-04 05:06:07"
    assert formatting.timestamp(0.0, time_only=True) == "00:00:00"
    assert formatting.timestamp(None) == DASH
    assert formatting.interval(1.0, None) == DASH


@pytest.mark.parametrize(("text", "job_id"), [
    ("12", 12), (" #7 ", 7), (12, 12), ("", None), (None, None), ("0", None), ("x1", None),
    ("-3", None),
])
def test_job_ids_typed_in_a_box(text, job_id):
    assert formatting.parse_job_id(text) == job_id


def test_progress_line_of_a_fine_tune_a_benchmark_and_a_stage():
    training = {"stage": "training", "step": 30, "total_steps": 120, "epoch": 0.75,
                "loss": 1.23456, "learning_rate": 0.0002, "tokens_per_s": 1234.5, "eta_s": 185,
                "mfu": 0.031}
    assert formatting.progress_text(training) == (
        "step 30/120 · epoch 0.75 · loss 1.2346 · lr 2.00e-04 · 1,234 tokens/s · MFU 3.1% · "
        "ETA 3m 05s")
    assert "ETA" not in formatting.progress_text(training, "succeeded")
    assert formatting.progress_text({"step": None, "total_steps": 10}) == "step 0/10"
    assert formatting.progress_text({"stage": "scoring", "done": 12, "total": 48}) == (
        "scoring: 12/48 (25%)")
    assert formatting.progress_text({"stage": "waiting for a worker"}) == "waiting for a worker"
    assert formatting.progress_text(None) == ""


JOBS = [
    {"id": 3, "kind": "finetune", "state": "running", "checkpoint": "llama",
     "params": {"output_name": "alpaca-v2", "config": {"method": "lora"}},
     "progress": {"step": 5, "total_steps": 10, "loss": 2.0}, "created_at": "2025-01-02T03:04:05",
     "trigger": "api", "attempts": 1, "max_attempts": 3, "cancel_requested": True,
     "result": None, "error": None},
    {"id": 2, "kind": "bench", "state": "failed", "checkpoint": "llama",
     "params": {"suite": "mmlu", "shots": 5, "split": "test"}, "progress": {},
     "created_at": "2025-01-02T03:00:00", "trigger": "policy", "attempts": 3, "max_attempts": 3,
     "error": "no worker serves llama", "result": None},
    {"id": 1, "kind": "judge", "state": "succeeded", "checkpoint": "alpaca-v1",
     "params": {"kind": "ratio", "model_b": "llama"}, "progress": {}, "created_at": None,
     "attempts": 1, "max_attempts": 3, "result": {"kind": "ratio", "judgments": [1, 2]}},
]


def test_job_rows_say_what_each_job_does_and_how_far_it_is():
    rows = jobs_tab.job_rows(JOBS)
    assert [r[:5] for r in rows] == [
        [3, "finetune", "running (cancelling)", "llama", "→ alpaca-v2 (lora)"],
        [2, "bench", "failed", "llama", "MMLU test, 5-shot"],
        [1, "judge", "succeeded", "alpaca-v1", "ratio vs llama"],
    ]
    assert rows[0][5] == "step 5/10 · loss 2.0000"
    assert rows[1][5] == DASH
    assert rows[0][6] == "2025-01-02 03:04:05" and rows[2][6] == DASH
    assert [r[8] for r in rows] == ["1/3", "3/3", "1/3"]
    assert len(rows[0]) == len(jobs_tab.HEADERS)


def test_job_details_show_the_error_and_leave_long_results_out():
    failed = jobs_tab.job_details(JOBS[1])
    assert "### Job 2: bench · failed" in failed
    assert "**Error:** no worker serves llama" in failed
    assert '"suite": "mmlu"' in failed
    judged = jobs_tab.job_details(JOBS[2])
    assert "Result" in judged and "judgments" not in judged
    log = jobs_tab.events_text([{"tstamp": 3600.0, "level": "info", "message": "queued (api)"},
                                {"tstamp": 3661.0, "level": "error", "message": "failed: x"}])
    assert log.splitlines() == ["01:00:00 info    queued (api)", "01:01:01 error   failed: x"]


def test_finetune_body_leaves_empty_fields_to_the_recipe_and_lora_settings_to_lora():
    hyper = {"epochs": "2", "max_steps": "", "learning_rate": " 2e-4 ", "max_length": "512",
             "lora_r": "8", "lora_alpha": 16, "batch_size": None}
    body = finetune_tab.finetune_request(base="llama", data=" /data/a.json ",
                                         output_name="alpaca-v2", method="lora",
                                         mode="instruct", hyper=hyper)
    assert body == {"base": "llama", "data": "/data/a.json", "output_name": "alpaca-v2",
                    "config": {"method": "lora", "mode": "instruct", "epochs": 2.0,
                               "learning_rate": 0.0002, "max_length": 512, "lora_r": 8,
                               "lora_alpha": 16}}
    assert isinstance(body["config"]["max_length"], int)
    full = finetune_tab.finetune_request(base="llama", data="x", output_name="y", method="full",
                                         mode="pretrain", data_format="text",
                                         template="alpaca", hyper=hyper, merge=True)
    assert "lora_r" not in full["config"] and "lora_alpha" not in full["config"]
    assert full["config"]["data_format"] == "text" and full["config"]["merge"] is True
    assert full["template"] == "alpaca"
    empty = finetune_tab.finetune_request(base=None, data=" ", output_name="", method="lora",
                                          mode="instruct")
    assert finetune_tab.missing_fields(empty) == ["base checkpoint", "data file", "output name"]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("learning_rate", "fast", "learning rate: 'fast' is not a number"),
    ("max_steps", "2.5", "max steps: '2.5' is not a whole number"),
])
def test_finetune_body_names_a_field_that_is_not_a_number(field, value, message):
    with pytest.raises(ValueError, match=message):
        finetune_tab.finetune_request(base="b", data="d", output_name="o", method="lora",
                                      mode="instruct", hyper={field: value})


def test_finetune_watch_panel_and_loss_curve():
    job = {"id": 7, "state": "succeeded", "checkpoint": "llama",
           "params": {"output_name": "alpaca-v2"},
           "progress": {"step": 10, "total_steps": 10, "loss": 1.5, "eta_s": 0},
           "output_checkpoint": "alpaca-v2", "result": {"final_loss": 1.5}, "error": None}
    text = finetune_tab.job_status(job)
    assert "**Job 7** (llama → alpaca-v2): **succeeded**" in text
    assert "step 10/10 · loss 1.5000" in text and "ETA" not in text
    assert "Registered as **alpaca-v2**. Final loss 1.5000." in text
    frame = finetune_tab.curve([{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5}])
    assert frame.to_dict("list") == {"step": [1, 2], "loss": [3.0, 2.5]}
    assert finetune_tab.curve([]).empty


RUNS = {
    "runs": [
        {"id": 9, "kind": "judge", "state": "succeeded", "checkpoint": "alpaca",
         "reference": "llama"},
        {"id": 8, "kind": "bench", "state": "succeeded", "checkpoint": "alpaca", "suite": "mmlu"},
        {"id": 6, "kind": "bench", "state": "failed", "checkpoint": "llama", "suite": "mmlu"},
        {"id": 5, "kind": "bench", "state": "succeeded", "checkpoint": "llama", "suite": "ceval"},
    ],
    "benchmarks": {
        "llama": {"mmlu": {"accuracy": 0.25, "macro_accuracy": 0.3, "split": "test", "shots": 5,
                           "n_items": 16, "categories": {"STEM": {"accuracy": 0.5},
                                                         "humanities": {"accuracy": 0.0}},
                           "job_id": 4}},
        "alpaca": {"mmlu": {"accuracy": 0.5, "macro_accuracy": None, "split": "test",
                            "shots": 0, "n_items": 16, "engine": "lm-eval",
                            "categories": {"STEM": {"accuracy": 0.625},
                                           "other": {"accuracy": 0.375}}, "job_id": 8},
                   "ceval": {"accuracy": 0.4, "categories": {}}},
    },
}


def test_benchmark_table_per_suite_has_the_suite_categories_in_order_best_model_first():
    table = results_view.bench_table(RUNS["benchmarks"], "mmlu")
    assert table["headers"] == ["Checkpoint", "Accuracy", "Macro avg", "STEM", "humanities",
                                "other", "Split", "Shots", "Items", "Engine", "Job"]
    assert table["data"] == [
        ["alpaca", "50.0%", DASH, "62.5%", DASH, "37.5%", "test", "0", "16", "lm-eval", 8],
        ["llama", "25.0%", "30.0%", "50.0%", "0.0%", DASH, "test", "5", "16", DASH, 4],
    ]
    assert results_view.bench_table(RUNS["benchmarks"], "cmmlu")["data"] == []
    assert results_view.bench_run_choices(RUNS["runs"], "mmlu") == [("#8 alpaca · MMLU", 8)]
    assert results_view.bench_run_choices(RUNS["runs"], "ceval") == [("#5 llama · C-Eval", 5)]


def test_judge_and_human_tables_and_reference_choices():
    ratios = {"b": {"ratio": 80.0, "ci_low": 70.0, "ci_high": 90.0, "n": 10, "wins": 2,
                    "ties": 3, "losses": 5, "beat_rate": 2 / 7, "judge_model": "gpt-4",
                    "job_id": 3},
              "a": {"ratio": 104.44, "ci_low": None, "ci_high": None, "n": 10, "wins": 5,
                    "ties": 5, "losses": 0, "beat_rate": 1.0, "judge_model": None, "job_id": 4},
              "c": {"ratio": None}}
    rows = results_view.judge_rows(ratios)
    assert [r[0] for r in rows] == ["a", "b", "c"]
    assert rows[0] == ["a", "104.4%", DASH, 5, 5, 0, "100.0%", 10, DASH, 4]
    assert rows[1][1:3] == ["80.0%", "70.0 – 90.0%"] and rows[1][6] == "28.6%"
    assert rows[2][1] == DASH
    pairs = [{"model_a": "a", "model_b": "llama", "wins": 6, "ties": 2, "losses": 2,
              "win_rate": 0.6, "beat_rate": 0.75}]
    assert results_view.human_rows(pairs) == [["a", "llama", 6, 2, 2, "60.0%", "75.0%"]]
    assert results_view.reference_choices(RUNS["runs"], ["alpaca", "llama", "opt"], None) == [
        "llama", "alpaca", "opt"]
    assert results_view.reference_choices([], ["a"], "z") == ["z", "a"]


@pytest.mark.asyncio
async def test_backend_reads_jobs_and_results_through_the_api_and_reports_refusals(tmp_path):
    from web.backend import ApiError, Backend

    app = create_app(Settings(data_dir=tmp_path, ui=False, admin_key="k"))
    backend = Backend(app)
    async with app.router.lifespan_context(app):
        assert await backend.jobs(kind="bench") == []
        runs = await backend.runs()
        assert runs["benchmarks"] == {} and runs["judge_reference"] is None
        # the human win/tie/lose route may not exist yet: None means "not available"
        assert await backend.human_pairs() in (None, [])
        with pytest.raises(ApiError) as missing:
            await backend.job(404)
        assert missing.value.status_code == 404 and "job 404 does not exist" in missing.value.message
        with pytest.raises(ApiError) as unauthorised:
            await backend.cancel_job(1, api_key="")
        assert unauthorised.value.status_code == 401
        with pytest.raises(ApiError) as refused:
            await backend.finetune({"base": "nope", "data": "/x", "output_name": "y"},
                                   api_key="k")
        assert refused.value.status_code >= 400 and refused.value.message
        assert await backend.subjects_plot(404) is None
        assert (await backend.judge_plot())[:4] == b"\x89PNG"


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
                    "Models", "Fine-tune", "Jobs"]
