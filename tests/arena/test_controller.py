import time

import pytest
from sqlmodel import Session

from arena.controller import WorkerDirectory, heartbeat, list_workers, register_worker
from arena.db import make_engine, session_scope
from arena.errors import NotFound, NoWorkerAvailable
from arena.models import Worker, WorkerHeartbeat, WorkerRegister


@pytest.fixture()
def engine(tmp_path):
    return make_engine(f"sqlite:///{tmp_path / 'ctl.db'}")


def _register(engine, address, models, queue=0):
    with session_scope(engine) as s:
        return register_worker(
            s, data=WorkerRegister(address=address, backend="hf", models=models, queue_length=queue),
            expiry_s=6.0,
        ).id


def test_least_loaded_healthy_worker_is_picked(engine):
    busy = _register(engine, "http://127.0.0.1:9001", ["m"], queue=5)
    idle = _register(engine, "http://127.0.0.1:9002", ["m", "other"], queue=1)
    directory = WorkerDirectory(engine=engine, expiry_s=6.0, cache_s=0.0)
    assert directory.pick("m").worker_id == idle
    # in-flight requests of this replica count as load too
    for _ in range(5):
        directory.begin(idle)
    assert directory.pick("m").worker_id == busy
    assert directory.pick("m", exclude=frozenset({busy})).worker_id == idle
    assert directory.served_models() == {"m": 2, "other": 1}


def test_silent_worker_leaves_rotation_and_503_names_the_model(engine):
    wid = _register(engine, "http://127.0.0.1:9001", ["m"])
    directory = WorkerDirectory(engine=engine, expiry_s=0.2, cache_s=0.0)
    assert directory.pick("m").worker_id == wid
    time.sleep(0.3)
    with pytest.raises(NoWorkerAvailable, match="'m'") as err:
        directory.pick("m")
    assert err.value.status_code == 503
    with session_scope(engine) as s:
        heartbeat(s, worker_id=wid, data=WorkerHeartbeat(queue_length=0))
    assert directory.pick("m").worker_id == wid


def test_unreachable_worker_is_out_for_every_replica(engine):
    a = _register(engine, "http://127.0.0.1:9001", ["m"])
    b = _register(engine, "http://127.0.0.1:9002", ["m"])
    one = WorkerDirectory(engine=engine, expiry_s=6.0, cache_s=0.0)
    other = WorkerDirectory(engine=engine, expiry_s=6.0, cache_s=0.0)
    one.unreachable(a)
    assert {other.pick("m").worker_id for _ in range(20)} == {b}


def test_reregistering_an_address_replaces_the_old_row(engine):
    first = _register(engine, "http://127.0.0.1:9001/", ["m"])
    second = _register(engine, "http://127.0.0.1:9001", ["m", "n"])
    assert first != second
    with Session(engine) as s:
        rows = list_workers(s, expiry_s=6.0)
        assert [(r.address, r.models, r.healthy) for r in rows] == [
            ("http://127.0.0.1:9001", ["m", "n"], True)
        ]
        assert s.get(Worker, first) is None
        with pytest.raises(NotFound, match="register again"):
            heartbeat(s, worker_id=first, data=WorkerHeartbeat())
