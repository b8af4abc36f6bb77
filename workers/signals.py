"""Celery signal handlers of the beat process.

Beat only sends ticks, and ticks must not crowd Flower's task list: beat sends no
``task-sent`` events (the tick tasks themselves send none either). Beat also records itself
in Redis when it starts, so that ``backup-jobs up`` can tell it is running.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from typing import Any

import redis
from celery.signals import beat_init

from backup_jobs import wire
from backup_jobs.errors import BackupJobsError
from backup_jobs.models import to_iso, utcnow
from workers import root


@beat_init.connect
def _beat_started(sender: Any = None, **_: Any) -> None:
    """Silence task-sent events for ticks and record this beat (pid, host, start time)."""
    if sender is not None:
        sender.app.conf.task_send_sent_event = False
    record = {
        "pid": str(os.getpid()),
        "host": socket.gethostname(),
        "started_at": to_iso(utcnow()) or "",
    }
    with contextlib.suppress(BackupJobsError, redis.RedisError):
        root.catalog().client.set(wire.BEAT_KEY, json.dumps(record))
