"""What a running attempt of a job works with: the job, its lease, collaborators and limits.

The worker's task base builds one per attempt; use-cases take it as their one argument, so
they need neither Celery nor Redis. ``heartbeat`` is cheap and called often (it notices a lost
lease, and raises ``Cancelled`` once the job is asked to stop); ``guard`` asks the catalog and is
called right before a side effect is committed. ``should_cancel`` says whether a cancel was
asked, for code that stops on its own (the vault's backup and restore).
``warnings`` collects what the job should end ``CompletedWithWarnings`` with; ``subtasks`` are
the job's steps as they go, and ``progress`` publishes them (the job record, Flower).
``results`` are properties found so far, kept on the job even if the attempt then fails (a
Verify that finds broken points fails, and still says what it checked). ``followups`` are jobs
the attempt created (stored, not sent): the task base sends them once
this job has ended and freed its item, so that a follow-up on the same VM never finds it busy.
``settled`` is the VM state the job's success leaves (``settle_vm``): the task base writes it
with the job's Completed record, in one fenced write, so a short job ends in one round trip and
the VM never shows the end of a job that is not recorded as ended. ``started_vm`` is the VM's
catalog record as the attempt's start read it (``Catalog.start_attempt``); ``catalog_vm`` returns
it, so an operation that begins by reading its VM costs no round trip of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backup_jobs.catalog import Catalog, Fence, VMRead
from backup_jobs.clock import Clock, SystemClock
from backup_jobs.dispatcher import Dispatcher
from backup_jobs.models import VM, Job, SubTask, VaultConfig
from backup_jobs.provider import Provider
from backup_jobs.settings import Settings


def _nothing() -> None:
    """The default guard and progress: nothing to check or publish."""


def _never() -> bool:
    """The default ``should_cancel``: no cancel is ever asked."""
    return False


@dataclass(frozen=True)
class JobContext:
    """One attempt's job, fence, collaborators, limits and what it reports as it goes."""

    job: Job
    fence: Fence
    vault: VaultConfig
    catalog: Catalog
    provider: Provider
    settings: Settings
    heartbeat: Callable[[], None]
    guard: Callable[[], None] = _nothing
    warnings: list[str] = field(default_factory=list)
    clock: Clock = field(default_factory=SystemClock)
    dispatcher: Dispatcher | None = None
    subtasks: list[SubTask] = field(default_factory=list)
    progress: Callable[[], None] = _nothing
    followups: list[Job] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    should_cancel: Callable[[], bool] = _never
    settled: list[VM] = field(default_factory=list)
    started_vm: VMRead | None = None

    def catalog_vm(self) -> VM | None:
        """The catalog's record of the job's VM (None if it has none): as the attempt's start
        read it, else read now. ``CorruptRecord`` if it cannot be read."""
        if self.started_vm is not None:
            return self.started_vm.get()
        return self.catalog.get_vm(self.vault.name, self.job.item)

    def settle_vm(self, vm: VM) -> None:
        """Leave ``vm``'s state (registration, last job, last error) to be written with the
        job's success; a failed attempt drops it (its roll-back writes the VM's state)."""
        self.settled[:] = [vm]
