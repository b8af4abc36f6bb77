"""Worker-side Celery settings, each with its reason (DESIGN §5).

Built on ``client_config`` so that senders and workers agree on serializers and the
visibility timeout.
"""

from __future__ import annotations

from typing import Any

from kombu import Queue

from backup_jobs import wire
from backup_jobs.dispatchers.celery import client_config
from backup_jobs.settings import Settings
from workers.beat import beat_schedule


def build(settings: Settings, redis_url: str) -> dict[str, Any]:
    """Every Celery setting the worker, beat and Flower processes use."""
    return {
        **client_config(settings, redis_url),
        "task_queues": [Queue(name) for name in wire.QUEUES],
        "task_default_queue": wire.QUEUE_CONTROL,
        # A job is acknowledged when it ends, so a message is not lost with a dead worker;
        # the tasks are idempotent, so a re-delivery is harmless.
        "task_acks_late": True,
        # One message at a time per child: a long backup must not hold other jobs hostage.
        "worker_prefetch_multiplier": 1,
        # Stop running tasks when the broker connection drops instead of finishing them
        # unacknowledged (they would run twice once the message is re-delivered).
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # STARTED state and events: Flower shows live tasks.
        "task_track_started": True,
        "worker_send_task_events": True,
        # Workers log in UTC like beat; policies do their own time-zone arithmetic.
        "beat_schedule": beat_schedule(settings),
        # Child processes are recycled now and then: long-lived workers do not accumulate memory.
        "worker_max_tasks_per_child": 1000,
        "worker_hijack_root_logger": False,
    }
