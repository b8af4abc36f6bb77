"""``backup-jobs health``: is the service working? Each check a name, ok or not, what it saw,
and what to do when it fails.

Checks: Redis answers; at least one job worker answers (a Celery broadcast, ``WORKER_TIMEOUT
_SECONDS``); the tick consumer and beat have refreshed their heartbeat keys
(``wire.TICKS_HEARTBEAT_KEY``, ``wire.BEAT_HEARTBEAT_KEY``, which expire a few tick intervals
after their process stops); every tick ran recently (tick lag); no retry is overdue (due for
longer than a heartbeat's life: nothing claims them); no job has waited in ``Queued`` longer
than ``QUEUED_AGE_LIMIT_SECONDS``. The whole run takes about one second.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from backup_jobs import wire
from backup_jobs.catalogs.redis import RedisCatalog
from backup_jobs.dispatchers.celery import CeleryDispatcher
from backup_jobs.errors import BackupJobsError
from backup_jobs.runtime.backlog import heartbeat, read_backlog, tick_runs
from backup_jobs.settings import Settings

# How long the workers have to answer the broadcast (it is always waited out in full).
WORKER_TIMEOUT_SECONDS = 1.0
# A job not started by any worker for an hour: the queue sweep re-sends its message then, so
# older means workers are missing or all busy for long.
QUEUED_AGE_LIMIT_SECONDS = 3600.0
START_HINT = "start it with `backup-jobs up`, the Procfile or its systemd unit"


@dataclass(frozen=True)
class Check:
    """One health check's outcome."""

    name: str
    ok: bool
    value: str
    action: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)


def check_health(
    settings: Settings,
    catalog: RedisCatalog | None,
    dispatcher: CeleryDispatcher | None,
    now: Callable[[], datetime],
    problem: str = "",
) -> list[Check]:
    """Every check; without a catalog (``problem`` says why) the others are not run."""
    redis_check = _redis(catalog, problem)
    if catalog is None or dispatcher is None or not redis_check.ok:
        skipped = "not checked: Redis does not answer"
        names = ("workers", "tick-consumer", "beat", "tick-lag", "retries", "queued")
        return [redis_check, *(Check(n, False, skipped, "fix Redis first") for n in names)]
    checks = [redis_check, _workers(dispatcher)]
    ttl = wire.heartbeat_ttl_seconds(settings.tick_seconds)
    for name, key, process in (
        ("tick-consumer", wire.TICKS_HEARTBEAT_KEY, "the tick consumer (`--queues ticks`)"),
        ("beat", wire.BEAT_HEARTBEAT_KEY, "beat"),
    ):
        checks.append(_heartbeat(catalog, name, key, process, ttl))
    try:
        checks.extend(_ticks_and_backlog(catalog, now(), ttl))
    except BackupJobsError as exc:
        checks.append(Check("backlog", False, exc.message, exc.action))
    return checks


def _redis(catalog: RedisCatalog | None, problem: str) -> Check:
    action = "start Redis (`backup-jobs up`) or fix BACKUP_JOBS_REDIS_URL"
    if catalog is None:
        return Check("redis", False, problem, action)
    started = time.monotonic()
    try:
        catalog.ping()
    except BackupJobsError as exc:
        return Check("redis", False, exc.message, exc.action or action)
    return Check("redis", True, f"answered in {(time.monotonic() - started) * 1000:.1f} ms")


def _workers(dispatcher: CeleryDispatcher) -> Check:
    nodes = dispatcher.consumers(WORKER_TIMEOUT_SECONDS)
    job_workers = sorted(n for n, queues in nodes.items() if set(queues) & set(wire.QUEUES))
    if not job_workers:
        return Check(
            "workers",
            False,
            f"no job worker answered within {WORKER_TIMEOUT_SECONDS:g} s",
            f"start a worker (`--queues {','.join(wire.QUEUES)}`): {START_HINT}",
        )
    return Check("workers", True, f"{len(job_workers)} answering: {', '.join(job_workers)}")


def _heartbeat(catalog: RedisCatalog, name: str, key: str, process: str, ttl: int) -> Check:
    try:
        record = heartbeat(catalog, key)
    except BackupJobsError as exc:
        return Check(name, False, exc.message, exc.action)
    if record is None:
        return Check(
            name,
            False,
            f"no heartbeat within {ttl} s ({key} expired or never written)",
            f"{process} is not running: {START_HINT}",
        )
    return Check(name, True, f"alive (pid {record.get('pid')} on {record.get('host')})")


def _ticks_and_backlog(catalog: RedisCatalog, now: datetime, ttl: int) -> list[Check]:
    ticks = tick_runs(catalog)
    lag = max(((now - at).total_seconds() for at in ticks.values()), default=None)
    action = "beat or the tick consumer is stopped or stuck: look at their logs"
    if lag is None:
        tick = Check("tick-lag", False, "no tick has ever run", action)
    else:
        tick = Check("tick-lag", lag <= ttl, f"oldest tick ran {lag:.1f} s ago", action)
    backlog = read_backlog(catalog, now, ttl)
    overdue = backlog.retries_overdue
    retries = Check(
        "retries",
        overdue == 0,
        f"{backlog.retries} waiting, {backlog.retries_due} due, {overdue} overdue by {ttl} s",
        "due retries are not being claimed: check the tick consumer and beat",
    )
    oldest = max(backlog.oldest_queued_seconds.values(), default=0.0)
    queued = Check(
        "queued",
        oldest <= QUEUED_AGE_LIMIT_SECONDS,
        f"oldest queued job waited {oldest:.0f} s" if oldest else "no queued job",
        "no worker has started it: start more workers or look at their logs",
    )
    return [tick, retries, queued]


def render(checks: list[Check]) -> str:
    """One line per check: ok/FAIL, name, what it saw, and what to do when it failed."""
    lines = []
    for check in checks:
        line = f"{'ok' if check.ok else 'FAIL':<5} {check.name:<14} {check.value}"
        if not check.ok and check.action:
            line += f" -- {check.action}"
        lines.append(line)
    return "\n".join(lines)
