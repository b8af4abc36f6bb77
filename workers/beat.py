"""The beat schedule: a few fixed clock ticks, not one entry per policy (DESIGN §6).

Ticks go to their own queue (``ticks``), consumed by a process of their own (``celery -A
workers worker --queues ticks``), never by the job pool: a tick runs within a tick interval of
being due whatever the job queues hold (DESIGN §10).
"""

from __future__ import annotations

import time
from typing import Any

from celery.beat import PersistentScheduler

from backup_jobs import wire
from backup_jobs.settings import Settings
from workers.signals import record_heartbeat

TICKS = wire.BEAT_TICKS


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Ticks that claim due retries, reap jobs whose worker died, re-send lost messages, start
    scheduled backups, repair the job indexes (a cheap check unless a pass is due), start each
    vault's Prune, Verify and GarbageCollect jobs (a cheap check unless one is due) and delete
    final jobs older than the job history (one range read when none is due)."""
    tick = settings.tick_seconds
    # A tick still unconsumed when the next is due (its consumer is down) is dropped: the next
    # one does its work, so ticks never pile up behind a stopped consumer.
    options = {"queue": wire.QUEUE_TICKS, "expires": tick}
    return {
        name: {"task": task, "schedule": tick, "options": options} for name, task in TICKS.items()
    }


class HeartbeatScheduler(PersistentScheduler):
    """Beat's scheduler, refreshing ``wire.BEAT_HEARTBEAT_KEY`` as it loops.

    Beat wakes at least once per tick interval (every tick is due that often), and the key
    lives several intervals (``wire.heartbeat_ttl_seconds``): it is gone soon after beat
    stops or hangs, which ``backup-jobs health`` reports.
    """

    _next_heartbeat = 0.0

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Send what is due, then refresh the heartbeat at most once a second."""
        interval: float = super().tick(*args, **kwargs)
        now = time.monotonic()
        if now >= self._next_heartbeat:
            record_heartbeat(wire.BEAT_HEARTBEAT_KEY)
            self._next_heartbeat = now + 1.0
        return interval
