"""The maintenance tick: start each vault's Prune (hourly), Verify and GarbageCollect (daily)
jobs when they are due (DESIGN §6).

It runs at every beat tick and costs one read of the ticks hash plus one count per vault: each
vault's last start of each operation is kept in Redis (``wire.TICKS_KEY``, field
``<Operation>:<vault>``), so the cadence survives beat restarts (an interval schedule in beat
restarts its countdown with beat). A vault seen for the first time only starts counting: its
first prune comes an hour after its first protected item, not at once.

Idempotent like the backup dispatch: a job's id is derived from (vault, operation, the last
start it follows), so two beats or a re-run tick that read the same last start create one job.
Only vaults with protected items are maintained.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from backup_jobs import jobs
from backup_jobs.catalog import Catalog
from backup_jobs.clock import Clock
from backup_jobs.dispatcher import Dispatcher
from backup_jobs.maintenance import GC_ITEM, PRUNE_ITEM, VERIFY_ITEM
from backup_jobs.models import Operation
from backup_jobs.settings import Settings
from backup_jobs.ticks import TickReport

LEASE_ITEMS = {
    Operation.PRUNE: PRUNE_ITEM,
    Operation.VERIFY: VERIFY_ITEM,
    Operation.GARBAGE_COLLECT: GC_ITEM,
}
_NAMESPACE = uuid.UUID("8d2f1f0e-3b7a-4c55-9a3e-6f1d2c9b7e10")


def cadence(settings: Settings) -> dict[Operation, float]:
    """Seconds between two starts of each maintenance operation on one vault."""
    return {
        Operation.PRUNE: settings.prune_every_seconds,
        Operation.VERIFY: settings.verify_every_seconds,
        Operation.GARBAGE_COLLECT: settings.gc_every_seconds,
    }


def last_start_key(operation: Operation, vault: str) -> str:
    """The field of ``wire.TICKS_KEY`` holding when ``operation`` last started on ``vault``."""
    return f"{operation.value}:{vault}"


def due_job_id(vault: str, operation: Operation, last: datetime) -> str:
    """The id of the job that follows the start at ``last``: the same for every tick."""
    return str(uuid.uuid5(_NAMESPACE, f"{vault}|{operation.value}|{last.timestamp():.3f}"))


def start_maintenance(
    catalog: Catalog,
    dispatcher: Dispatcher,
    clock: Clock,
    every: dict[Operation, float],
    max_attempts: int,
) -> TickReport:
    """Start every maintenance job that is due on a vault with protected items."""
    report = TickReport()
    now = clock.now()
    last_starts = catalog.last_ticks()
    for vault in catalog.list_vaults():
        if not catalog.count_items(vault):
            continue
        for operation, seconds in every.items():
            key = last_start_key(operation, vault)
            last = last_starts.get(key)
            if last is None:  # first sighting: start counting
                catalog.record_tick(key, now)
            elif not 0 <= (now - last).total_seconds() < seconds:
                if _start(catalog, dispatcher, clock, vault, operation, last, max_attempts):
                    report.jobs.append(due_job_id(vault, operation, last))
                catalog.record_tick(key, now)
    return report


def _start(
    catalog: Catalog,
    dispatcher: Dispatcher,
    clock: Clock,
    vault: str,
    operation: Operation,
    last: datetime,
    max_attempts: int,
) -> bool:
    """Create and send the job; False if another tick did."""
    job = jobs.new_job(
        vault,
        operation,
        LEASE_ITEMS[operation],
        vault,
        max_attempts,
        clock,
        job_id=due_job_id(vault, operation, last),
    )
    job = job.evolve(properties={"trigger": "schedule"})
    if not jobs.create(catalog, job, clock):
        return False
    jobs.send_first(catalog, dispatcher, job, clock)
    return True
