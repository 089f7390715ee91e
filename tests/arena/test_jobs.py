"""Jobs in the database: one claim wins, leases expire into re-queues, attempts are bounded,
cancellation, and the task wrapper's end states — on a real SQLite file."""

from __future__ import annotations

import threading
import time

import pytest

from arena import jobs, tasks
from arena.db import make_engine, session_scope
from arena.errors import Conflict, NotFound
from arena.settings import Settings


@pytest.fixture()
def engine(tmp_path):
    return make_engine(f"sqlite:///{tmp_path / 'arena.db'}")


def _job(engine, **kw) -> int:
    with session_scope(engine) as session:
        job = jobs.create_job(session, kind=kw.pop("kind", "bench"), params={"suite": "mmlu"},
                              checkpoint="m", **kw)
        assert job.id is not None
        return job.id


def _state(engine, job_id):
    with session_scope(engine) as session:
        return jobs.get_job(session, job_id)


def test_one_claim_wins(engine):
    job_id = _job(engine)
    won = []

    def take(owner):
        if jobs.claim(engine, job_id, owner=owner, lease_s=30) is not None:
            won.append(owner)

    threads = [threading.Thread(target=take, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    job = _state(engine, job_id)
    assert job.state == "running" and job.lease_owner == won[0] and job.attempts == 1
    # the loser cannot renew, report or finish
    assert jobs.renew(engine, job_id, owner="other", lease_s=30) == (False, True)
    assert not jobs.finish(engine, job_id, owner="other", state="succeeded")
    assert jobs.finish(engine, job_id, owner=won[0], state="succeeded", result={"accuracy": 1})
    assert jobs.claim(engine, job_id, owner="late", lease_s=30) is None  # a second delivery
    assert _state(engine, job_id).result == {"accuracy": 1}


def test_expired_lease_requeues_until_attempts_run_out(engine, monkeypatch):
    monkeypatch.setattr(jobs, "enqueue", lambda job: None)
    job_id = _job(engine, max_attempts=2)
    assert jobs.claim(engine, job_id, owner="a", lease_s=0.01)
    time.sleep(0.05)
    assert [j.id for j in jobs.reap(engine)] == [job_id]
    job = _state(engine, job_id)
    assert job.state == "queued" and job.lease_owner is None
    # the dead worker's late report is refused
    assert not jobs.set_progress(engine, job_id, owner="a", progress={"done": 1})
    assert jobs.claim(engine, job_id, owner="b", lease_s=0.01)
    time.sleep(0.05)
    assert jobs.reap(engine) == []
    job = _state(engine, job_id)
    assert job.state == "failed" and "lost 2 times" in job.error
    with session_scope(engine) as session:
        messages = [e.message for e in jobs.events(session, job_id)]
    assert any("queued again" in m for m in messages) and any("giving up" in m for m in messages)


def test_live_lease_is_not_reaped(engine):
    job_id = _job(engine)
    assert jobs.claim(engine, job_id, owner="a", lease_s=30)
    assert jobs.reap(engine) == []
    assert _state(engine, job_id).state == "running"


def test_cancel(engine):
    queued = _job(engine)
    assert jobs.request_cancel(engine, queued).state == "cancelled"
    assert jobs.claim(engine, queued, owner="a", lease_s=30) is None
    with pytest.raises(Conflict, match="already cancelled"):
        jobs.request_cancel(engine, queued)
    running = _job(engine)
    jobs.claim(engine, running, owner="a", lease_s=30)
    job = jobs.request_cancel(engine, running)
    assert job.state == "running" and job.cancel_requested
    assert jobs.renew(engine, running, owner="a", lease_s=30) == (True, True)
    with pytest.raises(NotFound):
        jobs.request_cancel(engine, 999)


def test_listing_filters_are_checked(engine):
    _job(engine)
    _job(engine, kind="judge")
    with session_scope(engine) as session:
        assert [j.kind for j in jobs.list_jobs(session)] == ["judge", "bench"]
        assert len(jobs.list_jobs(session, kind="bench")) == 1
        with pytest.raises(Exception, match="unknown job kind"):
            jobs.list_jobs(session, kind="train")
        with pytest.raises(Exception, match="unknown state"):
            jobs.list_jobs(session, state="done")


@pytest.fixture()
def settings(tmp_path):
    return Settings(data_dir=tmp_path / "data", job_lease_s=0.3)


def _run_with(monkeypatch, engine, settings, executor) -> tuple[str | None, int]:
    job_id = _job(engine)
    monkeypatch.setattr(tasks, "_executors", lambda: {"bench": executor})
    return tasks.run_job_now(job_id, settings=settings, db=engine), job_id


def test_run_job_end_states(engine, settings, monkeypatch):
    def ok(ctx):
        ctx.progress(force=True, stage="scoring", done=1, total=1)
        return {"result": {"accuracy": 0.5}}

    state, job_id = _run_with(monkeypatch, engine, settings, ok)
    job = _state(engine, job_id)
    assert state == "succeeded" and job.result == {"accuracy": 0.5}
    assert job.progress["done"] == 1 and job.finished_at is not None

    def bad(ctx):
        raise tasks.JobFailed("the data file is not there")

    state, job_id = _run_with(monkeypatch, engine, settings, bad)
    assert state == "failed" and _state(engine, job_id).error == "the data file is not there"

    def crash(ctx):
        raise RuntimeError("boom")

    state, job_id = _run_with(monkeypatch, engine, settings, crash)
    job = _state(engine, job_id)
    assert state == "failed" and job.error == "RuntimeError: boom"
    with session_scope(engine) as session:
        assert any("Traceback" in e.message for e in jobs.events(session, job_id))


def test_running_job_sees_its_cancellation(engine, settings, monkeypatch):
    seen = threading.Event()

    def waits(ctx):
        jobs.request_cancel(engine, ctx.job_id)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if ctx.should_stop():
                seen.set()
                ctx.check()
            time.sleep(0.05)
        return {}

    state, job_id = _run_with(monkeypatch, engine, settings, waits)
    assert seen.is_set() and state == "cancelled"
    assert _state(engine, job_id).state == "cancelled"
