"""The Celery app of the job queue: three queues (finetune, bench, judge), late acknowledgement.

The broker only carries job ids. Whether a job is queued, running, done or lost is decided in
our own tables (``arena.jobs``): a message delivered twice finds its job already taken or
finished and does nothing, and a job whose worker died is queued again by the reaper.
"""

from __future__ import annotations

from functools import cache

from celery import Celery
from kombu import Queue

from arena.settings import get_settings

QUEUES = ("finetune", "bench", "judge")


def make_celery(broker_url: str) -> Celery:
    app = Celery("arena", broker=broker_url, include=["arena.tasks"])
    app.conf.update(
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="bench",
        task_acks_late=True,  # a message is acknowledged when its job ends, not when it starts
        task_reject_on_worker_lost=True,  # a worker killed mid-task hands the message back
        worker_prefetch_multiplier=1,  # a long job must not hold other jobs hostage
        task_ignore_result=True,  # results and progress live in our database
        broker_connection_retry_on_startup=True,
        broker_transport_options={"polling_interval": 0.5, "visibility_timeout": 3600},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        accept_content=["json"],
        task_serializer="json",
    )
    return app


@cache
def celery_app() -> Celery:
    """The process's Celery app, on the broker of the settings."""
    return make_celery(get_settings().resolved_broker_url())
