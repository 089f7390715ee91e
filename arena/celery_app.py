"""The Celery app of the job queue: three queues (finetune, bench, judge), late acknowledgement.

The broker only carries job ids. Whether a job is queued, running, done or lost is decided in
our own tables (``arena.jobs``): a message delivered twice finds its job already taken or
finished and does nothing, and a job whose worker died is queued again by the reaper.
"""

from __future__ import annotations

from functools import cache

from celery import Celery
from kombu import Exchange, Queue

from arena.settings import get_settings

QUEUES = ("finetune", "bench", "judge")


def make_celery(broker_url: str) -> Celery:
    app = Celery("arena", broker=broker_url, include=["arena.tasks"])
    app.conf.update(
        task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name)
                     for name in QUEUES],
        task_default_queue="bench",
        task_acks_late=True,  # a message is acknowledged when its job ends, not when it starts
        task_reject_on_worker_lost=True,  # a worker killed mid-task hands the message back
        worker_prefetch_multiplier=1,  # a long job must not hold other jobs hostage
        task_ignore_result=True,  # results and progress live in our database
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(broker_url),
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        accept_content=["json"],
        task_serializer="json",
    )
    return app


def _transport_options(broker_url: str) -> dict:
    if broker_url.startswith("sqla+"):
        # kombu hands these to sqlalchemy.create_engine: wait for SQLite's write lock
        return {"connect_args": {"timeout": 30}}
    # redis: an unacknowledged message (its worker died) is handed out again after this long;
    # the reaper re-sends a lost job much sooner, and a duplicate finds its job taken
    return {"visibility_timeout": 3600}


@cache
def celery_app() -> Celery:
    """The process's Celery app, on the broker of the settings."""
    return make_celery(get_settings().resolved_broker_url())
