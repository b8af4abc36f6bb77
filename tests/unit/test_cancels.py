"""Cancelling a job, on the in-memory catalog with a frozen clock: each phase, each race."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from backup_jobs import cancels, errors, jobs, ticks
from backup_jobs.catalog import Catalog, Fence, LockResult
from backup_jobs.inventory import register_failed
from backup_jobs.models import VM, Job, JobStatus, Operation, RegistrationState
from backup_jobs.testing import FrozenClock, MemoryCatalog, RecordingDispatcher

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ITEM = "cs/vm"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


def _submit(catalog: Catalog, clock: FrozenClock) -> Job:
    job = jobs.new_job("v", Operation.REGISTER, ITEM, ITEM, 3, clock)
    jobs.submit(catalog, RecordingDispatcher(), job, clock)
    return job


def _started(catalog: Catalog, clock: FrozenClock, ttl: float = 60) -> jobs.Started:
    job = _submit(catalog, clock)
    started = jobs.begin_attempt(catalog, job.id, 1, "task-1", ttl, 900, clock)
    assert started is not None
    return started


def _stored(catalog: Catalog, job_id: str) -> Job:
    job = catalog.get_job(job_id)
    assert job is not None
    return job


def _no_rollback(catalog: Catalog, job: Job, fence: Fence, error: errors.BackupJobsError) -> None:
    pass


def test_a_queued_job_is_cancelled_at_once_and_its_message_then_does_nothing(
    clock: FrozenClock,
) -> None:
    catalog = MemoryCatalog()
    job = _submit(catalog, clock)

    cancelled = cancels.request_cancel(catalog, job.id, clock)
    late_message = jobs.begin_attempt(catalog, job.id, 1, "task-1", 60, 900, clock)

    stored = _stored(catalog, job.id)
    assert cancelled.status == stored.status == JobStatus.CANCELLED
    assert stored.ended_at == T0 and stored.error is not None
    assert stored.error["code"] == "Cancelled"
    assert late_message is None
    assert catalog.due_queued(T0 + timedelta(days=1)) == []  # the sweep never sends it again
    assert catalog.lock_holder("v", ITEM) is None


def test_a_job_waiting_to_retry_is_cancelled_at_once_and_its_retry_removed(
    clock: FrozenClock,
) -> None:
    catalog, dispatcher = MemoryCatalog(), RecordingDispatcher()
    started = _started(catalog, clock)
    waiting = jobs.fail_attempt(
        catalog, started.job, errors.WorkerLost(ITEM), 900, clock, started.fence
    )
    assert waiting.status == JobStatus.WAITING_TO_RETRY

    cancels.request_cancel(catalog, waiting.id, clock)
    clock.advance(901)
    dispatched = ticks.dispatch_due_retries(catalog, dispatcher, clock)

    stored = _stored(catalog, waiting.id)
    assert stored.status == JobStatus.CANCELLED and stored.next_retry_at is None
    assert dispatched.jobs == [] and dispatcher.sent == []
    assert catalog.due_retries(clock.now()) == []
    # The failed attempt keeps how it ended: the cancel closed no attempt of its own.
    assert stored.attempts[0].status == JobStatus.FAILED
    assert stored.attempts[0].error is not None
    assert stored.attempts[0].error["code"] == "WorkerLost"


def test_a_running_job_is_cancelling_keeps_its_lease_and_ends_cancelled_by_its_attempt(
    clock: FrozenClock,
) -> None:
    catalog = MemoryCatalog()
    started = _started(catalog, clock)

    cancelling = cancels.request_cancel(catalog, started.job.id, clock)
    again = cancels.request_cancel(catalog, started.job.id, clock)
    held = catalog.lock_holder("v", ITEM)
    listed = list(catalog.in_progress())
    # The attempt's own progress write does not overwrite the cancel.
    progress = catalog.save_job(started.job, started.fence, expect=JobStatus.IN_PROGRESS)
    ended = cancels.end_cancelled(
        catalog, started.job, errors.Cancelled(ITEM), clock, started.fence
    )

    assert cancelling.status == again.status == JobStatus.CANCELLING
    assert held == started.job.id and listed == [started.job.id]
    assert progress is False
    stored = _stored(catalog, started.job.id)
    assert ended.status == stored.status == JobStatus.CANCELLED
    assert stored.attempts[-1].status == JobStatus.CANCELLED
    assert stored.error is not None and stored.error["code"] == "Cancelled"
    assert catalog.lock_holder("v", ITEM) is None and list(catalog.in_progress()) == []


def test_an_attempt_that_completes_before_it_sees_the_cancel_ends_completed_and_free(
    clock: FrozenClock,
) -> None:
    catalog = MemoryCatalog()
    started = _started(catalog, clock)
    cancels.request_cancel(catalog, started.job.id, clock)

    done = jobs.complete(catalog, started, {"recovery_point_id": "p1"}, clock)

    assert done.status == _stored(catalog, started.job.id).status == JobStatus.COMPLETED
    assert catalog.lock_holder("v", ITEM) is None and list(catalog.in_progress()) == []
    with pytest.raises(errors.JobNotCancellable, match="Completed"):
        cancels.request_cancel(catalog, started.job.id, clock)


def test_a_failure_of_an_attempt_being_cancelled_does_not_overwrite_the_cancel(
    clock: FrozenClock,
) -> None:
    catalog = MemoryCatalog()
    started = _started(catalog, clock)
    cancels.request_cancel(catalog, started.job.id, clock)

    stored = jobs.fail_attempt(
        catalog,
        started.job,
        errors.VaultTransferTimeout(ITEM),
        900,
        clock,
        started.fence,
        expect=JobStatus.IN_PROGRESS,
    )

    assert stored.status == JobStatus.CANCELLING  # the worker then ends it Cancelled
    assert catalog.due_retries(T0 + timedelta(days=1)) == []


@pytest.mark.parametrize("status", [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED])
def test_cancelling_a_final_job_fails_with_job_not_cancellable(
    clock: FrozenClock, status: JobStatus
) -> None:
    catalog = MemoryCatalog()
    started = _started(catalog, clock)
    catalog.save_job(started.job.evolve(status=status, ended_at=T0), started.fence)

    with pytest.raises(errors.JobNotCancellable) as raised:
        cancels.request_cancel(catalog, started.job.id, clock)

    assert status.value in raised.value.message
    assert raised.value.exit_code == 4
    assert _stored(catalog, started.job.id).status == status


def test_cancelling_an_unknown_job_fails_with_job_not_found(clock: FrozenClock) -> None:
    with pytest.raises(errors.JobNotFound):
        cancels.request_cancel(MemoryCatalog(), "no-such-job", clock)


class _CancelWhileAcquiring(MemoryCatalog):
    """A catalog on which a cancel lands between an attempt's read and its first save: before
    the one step that starts it, or (taking a stale lease over) between the acquire and the
    save."""

    def start_attempt(
        self, job: Job, ttl_seconds: float, *, expect: JobStatus, read_vm: bool = False
    ) -> LockResult:
        if self.lock_holder(job.vault, job.item) is None:
            cancels.request_cancel(self, job.id, FrozenClock(T0))
        return super().start_attempt(job, ttl_seconds, expect=expect, read_vm=read_vm)

    def acquire_lock(
        self,
        vault: str,
        item: str,
        holder: str,
        ttl_seconds: float,
        stale_holder: str | None = None,
    ) -> LockResult:
        acquired = super().acquire_lock(vault, item, holder, ttl_seconds, stale_holder)
        if acquired.acquired:
            cancels.request_cancel(self, holder, FrozenClock(T0))
        return acquired


def test_a_cancel_saved_while_an_attempt_starts_wins_and_the_lease_is_freed(
    clock: FrozenClock,
) -> None:
    catalog = _CancelWhileAcquiring()
    job = _submit(catalog, clock)

    started = jobs.begin_attempt(catalog, job.id, 1, "task-1", 60, 900, clock)

    assert started is None
    assert _stored(catalog, job.id).status == JobStatus.CANCELLED
    assert catalog.lock_holder("v", ITEM) is None


def test_a_cancel_saved_while_an_attempt_takes_a_stale_lease_over_wins_and_frees_the_lease(
    clock: FrozenClock,
) -> None:
    catalog = _CancelWhileAcquiring()
    job = _submit(catalog, clock)
    MemoryCatalog.acquire_lock(catalog, "v", ITEM, "a-job-long-gone", 60)

    started = jobs.begin_attempt(catalog, job.id, 1, "task-1", 60, 900, clock)

    assert started is None
    assert _stored(catalog, job.id).status == JobStatus.CANCELLED
    assert catalog.lock_holder("v", ITEM) is None


def test_the_reaper_ends_a_cancelling_job_whose_worker_died_cancelled_not_retried(
    clock: FrozenClock,
) -> None:
    catalog = MemoryCatalog()
    catalog.put_vm("v", VM("vm", "cs", "r1"))
    started = _started(catalog, clock, ttl=0.01)
    catalog.put_vm_state(
        "v", VM("vm", "cs", "r1", registration=RegistrationState.REGISTERING), started.fence
    )
    cancels.request_cancel(catalog, started.job.id, clock)
    time.sleep(0.02)  # the lease expires: its worker is gone

    reaped = ticks.reap_lost_jobs(catalog, 900, clock, register_failed)

    stored = _stored(catalog, started.job.id)
    assert reaped.jobs == [started.job.id]
    assert stored.status == JobStatus.CANCELLED and stored.next_retry_at is None
    assert stored.error is not None and stored.error["code"] == "Cancelled"
    assert catalog.due_retries(T0 + timedelta(days=1)) == []
    assert list(catalog.in_progress()) == []
    vm = catalog.get_vm("v", ITEM)
    assert vm is not None and vm.registration == RegistrationState.NOT_REGISTERED


def test_the_reaper_leaves_a_cancelling_job_with_a_live_lease_to_its_worker(
    clock: FrozenClock,
) -> None:
    catalog = MemoryCatalog()
    started = _started(catalog, clock)
    cancels.request_cancel(catalog, started.job.id, clock)

    assert ticks.reap_lost_jobs(catalog, 900, clock, _no_rollback).jobs == []
    assert _stored(catalog, started.job.id).status == JobStatus.CANCELLING


def test_the_cancel_watch_reads_at_most_once_per_interval_and_remembers_a_cancel(
    clock: FrozenClock,
) -> None:
    catalog = MemoryCatalog()
    started = _started(catalog, clock)
    now = [100.0]
    watch = cancels.CancelWatch(catalog, started.job.id, 0.5, lambda: now[0])

    before = watch()
    cancels.request_cancel(catalog, started.job.id, clock)
    within_interval = watch()
    now[0] += 0.5
    after_interval = watch()
    catalog.save_job(started.job, started.fence)  # even if the record changed again
    remembered = watch()

    assert (before, within_interval, after_interval, remembered) == (False, False, True, True)


def test_a_fresh_cancel_watch_first_reads_one_interval_after_the_attempt_started(
    clock: FrozenClock,
) -> None:
    catalog = MemoryCatalog()
    started = _started(catalog, clock)
    now = [100.0]
    watch = cancels.CancelWatch(catalog, started.job.id, 0.5, lambda: now[0], fresh=True)
    cancels.request_cancel(catalog, started.job.id, clock)

    at_once = watch()
    now[0] += 0.5

    assert (at_once, watch(), watch.refresh()) == (False, True, True)
