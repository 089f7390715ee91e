"""The Leaderboard's evaluation results, the Fine-tune and the Jobs tabs in a real browser.

`arena serve` with two registered checkpoints; jobs come through the API where it can take
them and otherwise through `arena.jobs` on the server's own SQLite file, driven the way a job
worker drives them (create, claim under a lease, progress with loss points, finish with a
result). No job worker runs: the UI must show what the tables hold. Screenshots:
test-artifacts/ui/.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY, Proc, _control_plane, register
from tests.web.conftest import SHOTS
from tests.web.conftest import cell as _cell

pytestmark = pytest.mark.e2e

BASE, CANDIDATE, RUNNING = "tiny-base", "alpaca-v1", "alpaca-v2"
OWNER = "test-job-worker"
CATEGORIES = {"STEM": (5, 8), "humanities": (2, 8), "social sciences": (6, 8), "other": (3, 8)}


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    """One tiny random LLaMA (both registered checkpoints use it)."""
    from model_workers.localmodels import build_tiny_checkpoint, train_tokenizer

    root = tmp_path_factory.mktemp("tiny-ui")
    return build_tiny_checkpoint("llama", root / "llama",
                                 tokenizer_dir=train_tokenizer(root / "tokenizer"))


@pytest.fixture()
def control_plane(tmp_path) -> Iterator[Proc]:
    yield from _control_plane(tmp_path)


def _engine(control_plane: Proc) -> Any:
    from arena.db import make_engine
    from arena.settings import Settings

    data_dir = Path(control_plane.extra["env"]["ARENA_DATA_DIR"])
    return make_engine(Settings(data_dir=data_dir).resolved_database_url())


def _job(engine: Any, *, kind: str, checkpoint: str, params: dict[str, Any]) -> int:
    from arena import jobs
    from arena.db import session_scope

    with session_scope(engine) as session:
        job_id = jobs.create_job(session, kind=kind, params=params, checkpoint=checkpoint).id
    assert job_id is not None
    return job_id


def _finished(engine: Any, *, kind: str, checkpoint: str, params: dict[str, Any],
              result: dict[str, Any]) -> int:
    """A job run to success the way a job worker does it: claim, then finish."""
    from arena import jobs

    job_id = _job(engine, kind=kind, checkpoint=checkpoint, params=params)
    assert jobs.claim(engine, job_id, owner=OWNER, lease_s=600) is not None
    assert jobs.finish(engine, job_id, owner=OWNER, state="succeeded", result=result)
    return job_id


def _bench_result(scale: float) -> dict[str, Any]:
    categories = {c: {"accuracy": scale * ok / n, "correct": round(scale * ok), "total": n}
                  for c, (ok, n) in CATEGORIES.items()}
    subjects = {f"subject_{i:02d}": {"accuracy": scale * (i % 5) / 4, "correct": i % 5,
                                     "total": 4} for i in range(12)}
    correct = sum(c["correct"] for c in categories.values())
    return {"suite": "mmlu", "split": "test", "shots": 5, "n_items": 32, "engine": "native",
            "accuracy": correct / 32, "macro_accuracy": 0.4, "subjects": subjects,
            "categories": categories}


def _ratio_result(model: str, reference: str) -> dict[str, Any]:
    by_category = {"writing": 112.5, "reasoning": 84.0, "coding": 97.0}
    return {"kind": "ratio", "models": [model, reference], "judge_model": "tiny-judge",
            "result": {"overall": {"ratio": 98.4, "ci_low": 90.1, "ci_high": 106.3, "n": 30,
                                   "wins": 12, "ties": 6, "losses": 12, "beat_rate": 0.5},
                       "by_category": {c: {"ratio": r} for c, r in by_category.items()}}}


def _training(engine: Any, job_id: int, steps: range, total: int) -> None:
    """Progress and loss points of a running fine-tune, as the trainer reports them."""
    from arena import jobs
    from arena.models import JobMetric

    points = [JobMetric(job_id=job_id, step=s, loss=3.0 - 0.05 * s, learning_rate=2e-4,
                        tokens_per_s=850.0, tstamp=time.time()) for s in steps]
    progress = {"stage": "training", "step": steps[-1], "total_steps": total, "epoch": 0.5,
                "loss": points[-1].loss, "learning_rate": 2e-4, "tokens_per_s": 850.0,
                "eta_s": 95.0}
    assert jobs.set_progress(engine, job_id, owner=OWNER, progress=progress,
                             new_metrics=points)


def _importable(module: str, *names: str) -> bool:
    """Whether the API route's lazy import works yet (other parts are still being written)."""
    try:
        loaded = importlib.import_module(module)
    except ImportError:
        return False
    return all(hasattr(loaded, name) for name in names)


def _queued_bench(control_plane: Proc, engine: Any, tmp_path: Path) -> int:
    """A benchmark run nobody has taken yet: through the API when it can queue one."""
    params = {"suite": "mmlu", "split": "test", "shots": 5}
    if not _importable("benchmarks.runs", "BenchRequest", "validate_request"):
        return _job(engine, kind="bench", checkpoint=BASE, params=params)
    from tests.benchmarks.conftest import write_mmlu

    data = write_mmlu(tmp_path / "mmlu")
    response = httpx.post(control_plane.url + "/api/benchmarks/runs",
                          json={"model": BASE, "data": str(data), **params, "limit": 2},
                          headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_results_finetune_and_jobs_tabs_in_a_browser(control_plane, tiny_llama, browser_page,
                                                    tmp_path):
    started = time.monotonic()
    assert register(control_plane, name=BASE, source=str(tiny_llama)).status_code == 201
    assert register(control_plane, name=CANDIDATE, source=str(tiny_llama),
                    parent=BASE).status_code == 201
    engine = _engine(control_plane)
    bench_ids = [_finished(engine, kind="bench", checkpoint=name, result=_bench_result(scale),
                           params={"suite": "mmlu", "shots": 5, "split": "test"})
                 for name, scale in ((BASE, 0.5), (CANDIDATE, 1.0))]
    judged = _finished(engine, kind="judge", checkpoint=CANDIDATE,
                       result=_ratio_result(CANDIDATE, BASE),
                       params={"kind": "ratio", "model_a": CANDIDATE, "model_b": BASE})
    training = _job(engine, kind="finetune", checkpoint=BASE,
                    params={"base": BASE, "data": "/data/alpaca.json", "output_name": RUNNING,
                            "config": {"method": "lora"}})
    from arena import jobs

    assert jobs.claim(engine, training, owner=OWNER, lease_s=600) is not None
    _training(engine, training, range(1, 21), total=40)
    queued = _queued_bench(control_plane, engine, tmp_path)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser_page
    page.goto(control_plane.url + "/ui/")

    # Leaderboard: benchmark and judge columns, the judge table and chart, human, benchmarks
    page.get_by_role("tab", name="Leaderboard").click()
    board = page.locator("#leaderboard-table")
    board.get_by_text("Judge ratio vs tiny-base").wait_for()
    rows = {_cell(board, r, 1): (_cell(board, r, 7), _cell(board, r, 8), _cell(board, r, 9))
            for r in range(2)}
    assert rows == {CANDIDATE: ("98.4%", "90.1 – 106.3%", "50.0%"),
                    BASE: ("–", "–", "25.0%")}, rows
    judge = page.locator("#judge-table")
    assert (_cell(judge, 0, 0), _cell(judge, 0, 1)) == (CANDIDATE, "98.4%")
    page.locator("#judge-plot img").wait_for()
    assert "not available" in page.locator("#human-note").inner_text() or \
        page.locator("#human-table").is_visible()
    bench = page.locator("#bench-table")
    assert (_cell(bench, 0, 0), _cell(bench, 0, 1), _cell(bench, 0, 3)) == (
        CANDIDATE, "50.0%", "62.5%")  # STEM: 5 of 8
    assert _cell(bench, 1, 0) == BASE
    page.locator("#bench-subjects img").wait_for()
    assert f"#{bench_ids[1]} {CANDIDATE}" in page.locator("#bench-run input").input_value()
    page.screenshot(path=SHOTS / "08-leaderboard-results.png", full_page=True)
    # another reference: nobody was judged against it
    page.locator("#leaderboard-reference input").click()
    page.get_by_role("option", name=CANDIDATE).click()
    board.get_by_text(f"Judge ratio vs {CANDIDATE}").wait_for()
    page.locator("#judge-note").filter(has_text="0 model(s)").wait_for()
    assert _cell(board, 0, 7) == "–"

    # Fine-tune: a refused request shows the API's message and queues nothing
    page.get_by_role("tab", name="Fine-tune").click()
    page.wait_for_function("document.querySelector('#finetune-base input').value !== ''")
    page.locator("#finetune-output textarea, #finetune-output input").first.fill("alpaca-bad")
    page.locator("#finetune-data textarea, #finetune-data input").first.fill("/no/such/data.json")
    page.locator("#finetune-start").click()
    status = page.locator("#finetune-status")
    status.filter(has_text="⚠️").wait_for()
    assert "API key" in status.inner_text() or "key" in status.inner_text().lower()
    page.locator("#finetune-key input").fill(ADMIN_KEY)
    page.locator("#finetune-start").click()
    status.filter(has_text="/no/such/data.json").or_(
        status.filter(has_text="internal error")).wait_for()
    if _importable("model_workers.finetune", "FinetuneConfig", "FinetuneDataError",
                   "validate_data"):
        assert "/no/such/data.json" in status.inner_text(), status.inner_text()
    refused = httpx.get(control_plane.url + "/api/jobs?kind=finetune").json()
    assert [j["id"] for j in refused] == [training]
    page.screenshot(path=SHOTS / "09-finetune-refused.png", full_page=True)

    # ... and watching a running job: progress and the loss curve refresh while it trains
    page.locator("#finetune-job textarea, #finetune-job input").first.fill(str(training))
    page.locator("#finetune-watch").click()
    progress = page.locator("#finetune-progress")
    progress.filter(has_text="step 20/40").wait_for()
    assert "loss 2.0000" in progress.inner_text() and "ETA 1m 35s" in progress.inner_text()
    page.locator("#finetune-loss canvas, #finetune-loss svg").first.wait_for()
    _training(engine, training, range(21, 41), total=40)
    progress.filter(has_text="step 40/40").wait_for(timeout=10_000)  # the 2 s timer
    page.screenshot(path=SHOTS / "10-finetune-watch.png", full_page=True)
    assert jobs.finish(engine, training, owner=OWNER, state="succeeded",
                       result={"final_loss": 1.0}, output_checkpoint=RUNNING)
    progress.filter(has_text="succeeded").wait_for(timeout=10_000)

    # Jobs: every job listed, filtered by kind; a job's details and log; cancel a queued one
    page.get_by_role("tab", name="Jobs").click()
    table = page.locator("#jobs-table")
    table.get_by_text("→ alpaca-v2 (lora)").locator("visible=true").first.wait_for()
    listed = {_cell(table, r, 0): _cell(table, r, 2) for r in range(5)}
    assert listed == {str(queued): "queued", str(training): "succeeded",
                      str(bench_ids[0]): "succeeded", str(bench_ids[1]): "succeeded",
                      str(judged): "succeeded"}, listed
    page.locator("#jobs-kind input").click()
    page.get_by_role("option", name="bench").click()
    page.locator("#jobs-summary").filter(has_text="3 job(s)").wait_for()
    assert {_cell(table, r, 1) for r in range(3)} == {"bench"}
    table.get_by_test_id("cell-0-0").locator("visible=true").first.click()
    details = page.locator("#jobs-details")
    details.filter(has_text=f"Job {queued}: bench · queued").wait_for()
    assert "queued (" in page.locator("#jobs-log textarea").input_value()
    page.locator("#jobs-key input").fill(ADMIN_KEY)
    page.locator("#jobs-cancel").click()
    page.locator("#jobs-cancel-status").filter(has_text=f"Job {queued} cancelled").wait_for()
    details.filter(has_text="bench · cancelled").wait_for()
    assert "cancelled" in page.locator("#jobs-log textarea").input_value()
    assert _cell(table, 0, 2) == "cancelled"
    page.screenshot(path=SHOTS / "11-jobs.png", full_page=True)
    assert httpx.get(f"{control_plane.url}/api/jobs/{queued}").json()["state"] == "cancelled"
    assert time.monotonic() - started < 60
