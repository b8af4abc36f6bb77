"""What waits in Redis: the retry set, the oldest queued job, the heartbeats. Reads only.

Shared by the exporter and ``backup-jobs health``; every figure is one cheap command
(ZCARD, ZCOUNT, a ZRANGE of one entry, GET). Redis errors become ``RedisUnavailable`` (or
``CorruptRecord`` for a key of the wrong type) as in the catalog.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backup_jobs import wire
from backup_jobs.catalogs.redis import RedisCatalog
from backup_jobs.catalogs.redis_errors import translated
from backup_jobs.models import JobStatus


@dataclass(frozen=True)
class Backlog:
    """Jobs waiting: to be retried (all, and due now) and the oldest still queued."""

    retries: int
    retries_due: int
    # Due for longer than the ``grace`` asked for: nothing claims them.
    retries_overdue: int
    # Seconds since the oldest Queued job was queued, per vault (vaults with none are absent).
    oldest_queued_seconds: dict[str, float]


def read_backlog(catalog: RedisCatalog, now: datetime, grace_seconds: float = 0.0) -> Backlog:
    """The retry set's size, due part and part due for more than ``grace_seconds``, and the
    age of each vault's oldest queued job."""
    client: Any = catalog.client
    key = wire.RETRY_SET_KEY
    with translated(catalog.url, key):
        retries = int(client.zcard(key))
        due = int(client.zcount(key, "-inf", now.timestamp()))
        overdue = int(client.zcount(key, "-inf", now.timestamp() - grace_seconds))
    oldest: dict[str, float] = {}
    for vault in catalog.list_vaults():
        queued = wire.jobs_by_status_key(vault, JobStatus.QUEUED.value)
        with translated(catalog.url, queued):
            first = client.zrange(queued, 0, 0, withscores=True)
        if first:
            oldest[vault] = max(0.0, now.timestamp() - float(first[0][1]))
    return Backlog(retries, due, overdue, oldest)


def heartbeat(catalog: RedisCatalog, key: str) -> dict[str, Any] | None:
    """The record of a live heartbeat key (host, pid, at), or None once it expired."""
    with translated(catalog.url, key):
        raw = catalog.client.get(key)
    try:
        record = json.loads(raw) if raw else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def tick_runs(catalog: RedisCatalog) -> dict[str, datetime]:
    """When each of beat's ticks last ran (not the other fields kept beside them)."""
    return {n: at for n, at in catalog.last_ticks().items() if n in wire.BEAT_TICKS}
