"""The worker table: registration, heartbeats, health, and picking a worker for a model.

The truth lives in the database, so every control-plane replica sees the same workers. A replica
keeps a short-lived snapshot for routing (``routing_cache_s``) plus its own in-flight counts.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, delete, select, update

from arena.db import session_scope
from arena.errors import NotFound, NoWorkerAvailable
from arena.models import Worker, WorkerHeartbeat, WorkerPublic, WorkerRegister, utcnow

# A worker silent for this many expiry periods is deleted (it must register again).
PRUNE_AFTER_EXPIRIES = 50


def register_worker(session: Session, *, data: WorkerRegister, expiry_s: float) -> Worker:
    """Add a worker, or replace the one at the same address (a restarted worker)."""
    now = time.time()
    address = data.address.rstrip("/")
    session.exec(  # type: ignore[call-overload]
        delete(Worker).where(
            (col(Worker.address) == address)
            | (col(Worker.last_heartbeat) < now - PRUNE_AFTER_EXPIRIES * expiry_s)
        )
    )
    row = Worker(
        id=uuid.uuid4().hex,
        address=address,
        backend=data.backend,
        models=list(dict.fromkeys(data.models)),
        queue_length=data.queue_length,
        registered_at=utcnow(),
        last_heartbeat=now,
    )
    session.add(row)
    session.flush()
    return row


def heartbeat(session: Session, *, worker_id: str, data: WorkerHeartbeat) -> Worker:
    row = session.get(Worker, worker_id)
    if row is None:
        raise NotFound(f"worker {worker_id} is not registered (register again)")
    row.last_heartbeat = time.time()
    row.queue_length = data.queue_length
    if data.models is not None:
        row.models = list(dict.fromkeys(data.models))
    session.add(row)
    session.flush()
    return row


def deregister_worker(session: Session, *, worker_id: str) -> None:
    row = session.get(Worker, worker_id)
    if row is None:
        raise NotFound(f"worker {worker_id} is not registered")
    session.delete(row)


def mark_unreachable(session: Session, *, worker_id: str) -> None:
    """Take a worker out of rotation until its next heartbeat (it failed a connection)."""
    session.exec(  # type: ignore[call-overload]
        update(Worker).where(col(Worker.id) == worker_id).values(last_heartbeat=0.0)
    )


def list_workers(session: Session, *, expiry_s: float) -> list[WorkerPublic]:
    now = time.time()
    rows = session.exec(select(Worker).order_by(Worker.registered_at)).all()  # type: ignore[arg-type]
    return [
        WorkerPublic(**r.model_dump(), healthy=now - r.last_heartbeat <= expiry_s) for r in rows
    ]


@dataclass(slots=True)
class Route:
    worker_id: str
    address: str


@dataclass
class WorkerDirectory:
    """Routing for one control-plane replica: least-loaded healthy worker per model."""

    engine: Engine
    expiry_s: float
    cache_s: float
    _snapshot: list[Worker] = field(default_factory=list)
    _taken_at: float = -1.0
    _inflight: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def healthy(self) -> list[Worker]:
        now = time.time()
        if now - self._taken_at > self.cache_s:
            with Session(self.engine) as session:
                rows = session.exec(
                    select(Worker).where(col(Worker.last_heartbeat) >= now - self.expiry_s)
                ).all()
                self._snapshot = [Worker.model_validate(r.model_dump()) for r in rows]
            self._taken_at = now
        return [w for w in self._snapshot if now - w.last_heartbeat <= self.expiry_s]

    def served_models(self) -> dict[str, int]:
        """Model name → number of healthy workers serving it."""
        counts: dict[str, int] = {}
        for worker in self.healthy():
            for model in worker.models:
                counts[model] = counts.get(model, 0) + 1
        return counts

    def pick(self, model: str, *, exclude: frozenset[str] = frozenset()) -> Route:
        candidates = [w for w in self.healthy() if model in w.models and w.id not in exclude]
        if not candidates:
            raise NoWorkerAvailable(
                f"no healthy worker is serving model {model!r}"
                + (" (the others failed)" if exclude else ""),
                param="model",
            )
        load = {w.id: w.queue_length + self._inflight.get(w.id, 0) for w in candidates}
        least = min(load.values())
        chosen = random.choice([w for w in candidates if load[w.id] == least])
        return Route(worker_id=chosen.id, address=chosen.address)

    def begin(self, worker_id: str) -> None:
        with self._lock:
            self._inflight[worker_id] = self._inflight.get(worker_id, 0) + 1

    def end(self, worker_id: str) -> None:
        with self._lock:
            left = self._inflight.get(worker_id, 1) - 1
            if left > 0:
                self._inflight[worker_id] = left
            else:
                self._inflight.pop(worker_id, None)

    def unreachable(self, worker_id: str) -> None:
        """Out of rotation here at once, and for every replica through the database."""
        self._snapshot = [w for w in self._snapshot if w.id != worker_id]
        with session_scope(self.engine) as session:
            mark_unreachable(session, worker_id=worker_id)

    def invalidate(self) -> None:
        self._taken_at = -1.0
