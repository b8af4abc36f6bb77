"""The beat schedule: a few fixed clock ticks, not one entry per policy (DESIGN §6)."""

from __future__ import annotations

from typing import Any

from backup_jobs import wire
from backup_jobs.settings import Settings


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Ticks that claim due retries and reap jobs whose worker died."""
    tick = settings.tick_seconds
    # A tick not picked up before the next one is due is dropped: the next one does its work.
    options = {"queue": wire.QUEUE_MAINTENANCE, "expires": tick}
    return {
        "dispatch-due-retries": {
            "task": wire.TASK_DISPATCH_RETRIES,
            "schedule": tick,
            "options": options,
        },
        "reap-lost-jobs": {"task": wire.TASK_REAP, "schedule": tick, "options": options},
    }
