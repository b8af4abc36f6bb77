"""Celery signal handlers of the beat process.

Beat only sends ticks, and ticks must not crowd Flower's task list: beat sends no
``task-sent`` events (the tick tasks themselves send none either). Beat also records itself
in Redis when it starts, so that ``backup-jobs up`` can tell it is running. Every process
(worker, tick consumer, beat) renders backup-jobs' events as structured lines once Celery has
set its logging up (``backup_jobs.logs``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from typing import Any

import redis
from celery.signals import after_setup_logger, beat_init

from backup_jobs import logs, wire
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


@after_setup_logger.connect
def _logging_set_up(**_: Any) -> None:
    """Structured events in the format ``BACKUP_JOBS_LOG_FORMAT`` names."""
    logs.configure(root.settings().log_format)


def record_heartbeat(key: str) -> None:
    """Refresh a heartbeat key (``wire.BEAT_HEARTBEAT_KEY``, ``wire.TICKS_HEARTBEAT_KEY``):
    this host and pid, now, living ``wire.heartbeat_ttl_seconds``. Redis trouble is ignored:
    a missed heartbeat is what it should look like."""
    record = {"host": socket.gethostname(), "pid": os.getpid(), "at": to_iso(utcnow())}
    ttl = wire.heartbeat_ttl_seconds(root.settings().tick_seconds)
    with contextlib.suppress(BackupJobsError, redis.RedisError):
        root.catalog().client.set(key, json.dumps(record), ex=ttl)
