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
        "task_queues": [Queue(name) for name in (*wire.QUEUES, wire.QUEUE_TICKS)],
        "task_default_queue": wire.QUEUE_CONTROL,
        # A job is acknowledged when it ends, so a message is not lost with a dead worker;
        # the tasks are idempotent, so a re-delivery is harmless.
        "task_acks_late": True,
        # One message at a time per child: a long backup must not hold other jobs hostage.
        "worker_prefetch_multiplier": 1,
        # A Redis that refuses commands (MISCONF, OOM, READONLY) is a lost connection to
        # reconnect to, never a reason for the worker to exit (``workers/transport.py``).
        "broker_transport": "workers.transport:Transport",
        # Retry the broker connection forever: workers come back whenever Redis does.
        "broker_connection_max_retries": None,
        # Running attempts go on across a short Redis outage instead of being thrown away
        # (an hour-long backup would start again). The job record and the fencing token are
        # the truth, so the message re-delivered later finds its attempt done and does
        # nothing, and an attempt whose lease expired during the outage was reaped: its
        # fenced writes fail and it stops. See README, "Redis trouble".
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # STARTED state and events: Flower shows live tasks.
        "task_track_started": True,
        "worker_send_task_events": True,
        # Workers log in UTC like beat; policies do their own time-zone arithmetic.
        "beat_schedule": beat_schedule(settings),
        # Beat refreshes a heartbeat key as it loops (`backup-jobs health`).
        "beat_scheduler": "workers.beat:HeartbeatScheduler",
        # Child processes are recycled now and then: long-lived workers do not accumulate memory.
        "worker_max_tasks_per_child": 1000,
        "worker_hijack_root_logger": False,
    }
