"""How the control-plane benchmark learns that a task ended, the same way on both sides.

Both benchmark workers (the bare Celery no-op app and the real workers' app) import this
module: after every task (success or failure, after Celery stored its result) the child pushes
the task id onto one Redis list. The benchmark polls that list's length (one O(1) LLEN) to see a
batch end, and BLPOPs it to time a single task, instead of SCANning the keyspace for results
(which costs more the more keys a side writes). Both sides pay the same one RPUSH per task.
"""

from __future__ import annotations

import functools
from typing import Any

import redis
from celery.signals import task_postrun

from benchmarks.common import FINISHED_KEY
from workers import root


@functools.cache
def _client() -> redis.Redis:
    # redis-py re-opens its connections in a forked child by itself.
    return redis.Redis.from_url(root.redis_url())


@task_postrun.connect
def _finished(task_id: str | None = None, **_: Any) -> None:
    """Push the id of the task that just ended."""
    _client().rpush(FINISHED_KEY, task_id or "")
