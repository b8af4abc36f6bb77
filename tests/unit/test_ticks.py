"""The ticks on the in-memory catalog with a frozen clock: retries, the reaper, the sweep."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from backup_jobs import errors, jobs, ticks, wire
from backup_jobs.catalog import Catalog, Fence
from backup_jobs.inventory import register_failed
from backup_jobs.models import VM, Job, JobStatus, Operation, RegistrationState
from backup_jobs.testing import FrozenClock, MemoryCatalog, RecordingDispatcher

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WEEK = 7 * 24 * 3600


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


def _submit(catalog: MemoryCatalog, clock: FrozenClock, item: str = "cs/vm") -> Job:
    job = jobs.new_job("v", Operation.REGISTER, item, item, 3, clock)
    jobs.submit(catalog, RecordingDispatcher(), job, clock)
    return job


def _no_rollback(catalog: Catalog, job: Job, fence: Fence, error: errors.BackupJobsError) -> None:
    pass


def _failed_once(catalog: MemoryCatalog, clock: FrozenClock, delay: float = 900) -> Job:
    job = _submit(catalog, clock)
    started = jobs.begin_attempt(catalog, job.id, 1, "t", 60, 900, clock)
    assert started is not None
    return jobs.fail_attempt(
        catalog, started.job, errors.WorkerLost("cs/vm"), delay, clock, started.fence
    )


def test_a_retry_waits_without_the_lease_then_is_queued_and_sent_once_when_due(
    clock: FrozenClock,
) -> None:
    catalog, dispatcher = MemoryCatalog(), RecordingDispatcher()
    waiting = _failed_once(catalog, clock)
    clock.advance(899)
    early = ticks.dispatch_due_retries(catalog, dispatcher, clock)
    clock.advance(1)
    due = ticks.dispatch_due_retries(catalog, dispatcher, clock)
    again = ticks.dispatch_due_retries(catalog, dispatcher, clock)  # a second beat, same moment

    assert waiting.status == JobStatus.WAITING_TO_RETRY
    assert waiting.next_retry_at == T0 + timedelta(seconds=900)
    assert catalog.lock_holder("v", "cs/vm") is None
    assert early.jobs == [] and due.jobs == [waiting.id] and again.jobs == []
    assert dispatcher.sent == [(waiting.id, 2)]
    queued = catalog.get_job(waiting.id)
    assert queued is not None and queued.status == JobStatus.QUEUED
    assert queued.dispatched_at == clock.now() and queued.attempt == 1
    assert jobs.begin_attempt(catalog, waiting.id, 2, "t2", 60, 900, clock) is not None


def test_reaper_fails_expired_attempts_fences_out_the_lost_worker_and_rolls_back(
    clock: FrozenClock,
) -> None:
    catalog = MemoryCatalog()
    catalog.put_vm("v", VM("vm", "cs", "r1"))
    job = _submit(catalog, clock)
    started = jobs.begin_attempt(catalog, job.id, 1, "t", 0.01, 900, clock)
    assert started is not None
    catalog.put_vm_state(
        "v", VM("vm", "cs", "r1", registration=RegistrationState.REGISTERING), started.fence
    )
    time.sleep(0.02)

    reaped = ticks.reap_lost_jobs(catalog, 900, clock, register_failed)
    late = jobs.complete(catalog, started, {}, clock)
    twice = ticks.reap_lost_jobs(catalog, 900, clock, register_failed)

    assert reaped.jobs == [job.id] and twice.jobs == []
    record = catalog.get_job(job.id)
    assert record is not None and record.status == JobStatus.WAITING_TO_RETRY
    assert record.attempts[0].error is not None and record.attempts[0].error["code"] == "WorkerLost"
    assert late.status == JobStatus.WAITING_TO_RETRY  # the zombie's completion was refused
    assert catalog.in_progress() == []
    vm = catalog.get_vm("v", "cs/vm")
    assert vm is not None and vm.registration == RegistrationState.NOT_REGISTERED
    assert vm.last_error is not None and vm.last_error["code"] == "WorkerLost"


def test_reaper_leaves_attempts_with_a_live_lease_alone(clock: FrozenClock) -> None:
    catalog = MemoryCatalog()
    job = _submit(catalog, clock)
    jobs.begin_attempt(catalog, job.id, 1, "t", 60, 900, clock)

    assert ticks.reap_lost_jobs(catalog, 900, clock, _no_rollback).jobs == []
    assert catalog.get_job(job.id).status == JobStatus.IN_PROGRESS  # type: ignore[union-attr]


class RefusingDispatcher:
    """A broker that refuses every message."""

    def send(self, job: Job, attempt: int) -> str:
        raise errors.RedisUnavailable(job.item_name, "redis://127.0.0.1:1/0: refused")


class ReadOnlyCatalog(MemoryCatalog):
    """A catalog whose server refuses writes after the job was created (MISCONF)."""

    def save_job(self, *args: object, **kwargs: object) -> bool:
        raise errors.RedisUnavailable(detail="MISCONF")


def test_a_job_stranded_queued_by_a_refused_send_is_re_sent_by_the_sweep(
    clock: FrozenClock,
) -> None:
    catalog, dispatcher = ReadOnlyCatalog(), RecordingDispatcher()
    job = jobs.new_job("v", Operation.DISCOVERY, "vault", "v", 3, clock)
    with pytest.raises(errors.RedisUnavailable):
        jobs.submit(catalog, RefusingDispatcher(), job, clock)
    assert catalog.get_job(job.id).status == JobStatus.QUEUED  # type: ignore[union-attr]

    clock.advance(jobs.SEND_GRACE_SECONDS - 1)
    early = ticks.sweep_queued(catalog, dispatcher, clock, WEEK)
    clock.advance(1)
    swept = ticks.sweep_queued(catalog, dispatcher, clock, WEEK)
    again = ticks.sweep_queued(catalog, dispatcher, clock, WEEK)
    clock.advance(jobs.RESEND_MIN_SECONDS)
    later = ticks.sweep_queued(catalog, dispatcher, clock, WEEK)

    assert early.jobs == [] and swept.jobs == [job.id] and again.jobs == []
    assert later.jobs == [job.id]  # a sent message may still be lost; duplicates are harmless
    assert dispatcher.sent == [(job.id, 1), (job.id, 1)]


def test_a_sent_job_is_left_alone_until_it_may_have_lost_its_message(clock: FrozenClock) -> None:
    catalog, dispatcher = MemoryCatalog(), RecordingDispatcher()
    job = _submit(catalog, clock)

    clock.advance(jobs.RESEND_MIN_SECONDS - 1)
    assert ticks.sweep_queued(catalog, dispatcher, clock, WEEK).jobs == []
    jobs.begin_attempt(catalog, job.id, 1, "t", 60, 900, clock)
    clock.advance(10 * jobs.RESEND_MAX_SECONDS)
    assert ticks.sweep_queued(catalog, dispatcher, clock, WEEK).jobs == []
    assert dispatcher.sent == []


def test_a_job_no_worker_starts_within_the_bound_fails_with_queue_timeout(
    clock: FrozenClock,
) -> None:
    catalog, dispatcher = MemoryCatalog(), RecordingDispatcher()
    job = _submit(catalog, clock)

    for _ in range(40):
        clock.advance(jobs.RESEND_MAX_SECONDS)
        ticks.sweep_queued(catalog, dispatcher, clock, WEEK)

    record = catalog.get_job(job.id)
    assert record is not None and record.status == JobStatus.FAILED
    assert record.error is not None and record.error["code"] == "QueueTimeout"
    assert "control queue" in record.error["message"]
    assert catalog.due_queued(clock.now() + timedelta(days=365)) == []
    assert 20 < len(dispatcher.sent) < 40


TICK_OF_INDEX = {
    wire.RETRY_SET_KEY: lambda catalog, clock: ticks.dispatch_due_retries(
        catalog, RecordingDispatcher(), clock
    ),
    wire.IN_PROGRESS_KEY: lambda catalog, clock: ticks.reap_lost_jobs(
        catalog, 900, clock, _no_rollback
    ),
    wire.QUEUED_KEY: lambda catalog, clock: ticks.sweep_queued(
        catalog, RecordingDispatcher(), clock, WEEK
    ),
}


def _indexed(catalog: MemoryCatalog, index: str) -> list[str]:
    """Every id in one of the ticks' indexes, due or not."""
    if index == wire.IN_PROGRESS_KEY:
        return catalog.in_progress()
    far = T0 + timedelta(days=3650)
    return catalog.due_retries(far) if index == wire.RETRY_SET_KEY else catalog.due_queued(far)


@pytest.mark.parametrize(
    ("index", "status"),
    [
        (wire.RETRY_SET_KEY, JobStatus.WAITING_TO_RETRY),
        (wire.IN_PROGRESS_KEY, JobStatus.IN_PROGRESS),
        (wire.QUEUED_KEY, JobStatus.QUEUED),
    ],
)
def test_a_gone_job_is_dropped_from_its_index_but_an_unreadable_one_waits_to_be_repaired(
    clock: FrozenClock, index: str, status: JobStatus
) -> None:
    catalog = MemoryCatalog()
    for job_id in ("bad", "gone", "good"):
        job = jobs.new_job("v", Operation.REGISTER, f"cs/{job_id}", f"cs/{job_id}", 3, clock)
        job = replace(job, id=job_id, attempt=1, next_retry_at=T0)
        catalog.create_job(job, T0)
        catalog.save_job(job.evolve(status=status), check_at=T0)
    readable = catalog.records[wire.job_key("bad")]
    catalog.records[wire.job_key("bad")] = "{not json"
    del catalog.records[wire.job_key("gone")]
    clock.advance(jobs.RESEND_MAX_SECONDS)

    first = TICK_OF_INDEX[index](catalog, clock)
    again = TICK_OF_INDEX[index](catalog, clock)  # the next beat, same moment
    kept = _indexed(catalog, index)
    catalog.records[wire.job_key("bad")] = readable  # the user repairs the record
    clock.advance(ticks.UNREADABLE_BACKOFF_SECONDS)
    repaired = TICK_OF_INDEX[index](catalog, clock)

    assert first.jobs == ["good"]
    assert [p.key for p in first.problems] == [wire.job_key("bad")]
    assert [p.key for p in catalog.problems()] == [wire.job_key("bad")]
    assert "bad" in kept and "gone" not in kept
    # A sorted set's entry is backed off, not read again at every beat; a set has no score.
    assert again.jobs == [] and (again.problems == [] or index == wire.IN_PROGRESS_KEY)
    assert repaired.jobs == ["bad"]


def test_the_index_repair_puts_back_lost_entries_at_once_then_once_an_hour(
    clock: FrozenClock,
) -> None:
    catalog = MemoryCatalog()
    waiting = _failed_once(catalog, clock)
    catalog.drop_from_index(wire.RETRY_SET_KEY, waiting.id)  # lost, as with a replaced index

    first = ticks.repair_job_indexes(catalog, clock)
    catalog.drop_from_index(wire.RETRY_SET_KEY, waiting.id)
    clock.advance(ticks.INDEX_REPAIR_EVERY_SECONDS - 1)
    early = ticks.repair_job_indexes(catalog, clock)
    clock.advance(1)
    due = ticks.repair_job_indexes(catalog, clock)

    assert first.jobs == [waiting.id] and early.jobs == [] and due.jobs == [waiting.id]
    assert catalog.due_retries(clock.now()) == [waiting.id]


def _finished(catalog: MemoryCatalog, clock: FrozenClock, status: JobStatus) -> Job:
    job = _submit(catalog, clock, item=f"cs/vm{len(catalog.records)}")
    done = job.evolve(status=status, started_at=clock.now(), ended_at=clock.now())
    catalog.save_job(done)
    return done


def test_the_history_tick_deletes_final_jobs_past_the_history_in_batches_never_others(
    clock: FrozenClock,
) -> None:
    catalog = MemoryCatalog()
    old = [_finished(catalog, clock, status) for status in (JobStatus.COMPLETED,) * 3]
    old.append(_finished(catalog, clock, JobStatus.FAILED))
    waiting = _failed_once(catalog, clock)  # as old, but it will run again
    queued = _submit(catalog, clock, item="cs/queued")
    clock.advance(5 * 24 * 3600)
    recent = _finished(catalog, clock, JobStatus.CANCELLED)
    clock.advance(26 * 24 * 3600)  # the old ones ended 31 days ago, the recent one 26

    first = ticks.expire_job_history(catalog, clock, 30, batch=3)
    second = ticks.expire_job_history(catalog, clock, 30, batch=3)
    idle = ticks.expire_job_history(catalog, clock, 30, batch=3)

    assert sorted(first.jobs + second.jobs) == sorted(job.id for job in old)
    assert len(first.jobs) == 3 and idle.jobs == []
    left = {job.id for job in catalog.list_jobs("v")}
    assert left == {waiting.id, queued.id, recent.id}
    assert catalog.count_jobs("v", status=JobStatus.COMPLETED) == 0


def test_the_history_tick_names_an_unreadable_record_and_leaves_it(clock: FrozenClock) -> None:
    catalog = MemoryCatalog()
    job = _finished(catalog, clock, JobStatus.COMPLETED)
    catalog.records[wire.job_key(job.id)] = "not json"
    clock.advance(100 * 24 * 3600)

    report = ticks.expire_job_history(catalog, clock, 90)

    assert report.jobs == [] and [p.key for p in report.problems] == [wire.job_key(job.id)]
    assert wire.job_key(job.id) in [p.key for p in catalog.problems()]
    assert catalog.records[wire.job_key(job.id)] == "not json"
