"""The life of a job on the in-memory catalog, with a frozen clock."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from backup_jobs import errors, jobs
from backup_jobs.models import Job, JobStatus, Operation, SubTask
from backup_jobs.testing import FrozenClock, MemoryCatalog, RecordingDispatcher

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


def _submit(catalog: MemoryCatalog, clock: FrozenClock, item: str = "cs/vm") -> Job:
    job = jobs.new_job("v", Operation.REGISTER, item, item, 3, clock)
    jobs.submit(catalog, RecordingDispatcher(), job, clock)
    return job


def _started(catalog: MemoryCatalog, clock: FrozenClock) -> jobs.Started:
    """A submitted job's first attempt, begun."""
    started = jobs.begin_attempt(catalog, _submit(catalog, clock).id, 1, "t", 60, 900, clock)
    assert started is not None
    return started


def test_attempt_takes_the_lease_and_records_its_fencing_token(clock: FrozenClock) -> None:
    catalog = MemoryCatalog()
    job = _submit(catalog, clock)

    started = jobs.begin_attempt(catalog, job.id, 1, "task-1", 60, 900, clock)

    assert started is not None
    assert started.job.status == JobStatus.IN_PROGRESS
    assert started.job.fencing_token == started.fence.token == 1
    assert catalog.lock_holder("v", "cs/vm") == job.id
    assert catalog.in_progress() == [job.id]


def test_duplicate_delivery_of_a_running_or_finished_attempt_does_nothing(
    clock: FrozenClock,
) -> None:
    catalog = MemoryCatalog()
    started = _started(catalog, clock)
    job = started.job

    assert jobs.begin_attempt(catalog, job.id, 1, "t", 60, 900, clock) is None
    jobs.complete(catalog, started, {"ok": 1}, clock)
    assert jobs.begin_attempt(catalog, job.id, 1, "t", 60, 900, clock) is None
    assert catalog.get_job(job.id).status == JobStatus.COMPLETED  # type: ignore[union-attr]


def test_job_on_a_held_item_fails_at_once_naming_the_running_job(clock: FrozenClock) -> None:
    catalog = MemoryCatalog()
    first, second = _submit(catalog, clock), _submit(catalog, clock)
    jobs.begin_attempt(catalog, first.id, 1, "t", 60, 900, clock)

    assert jobs.begin_attempt(catalog, second.id, 1, "t", 60, 900, clock) is None

    failed = catalog.get_job(second.id)
    assert failed is not None and failed.status == JobStatus.FAILED
    assert failed.error is not None and failed.error["code"] == "OperationInProgress"
    assert f"Running job: {first.id} (Register, InProgress)" in failed.error["message"]
    assert catalog.lock_holder("v", "cs/vm") == first.id


def test_last_retryable_failure_is_final(clock: FrozenClock) -> None:
    catalog = MemoryCatalog()
    job = _submit(catalog, clock)
    for attempt in (1, 2, 3):
        started = jobs.begin_attempt(catalog, job.id, attempt, "t", 60, 900, clock)
        assert started is not None
        last = jobs.fail_attempt(
            catalog, started.job, errors.WorkerLost("x"), 0, clock, started.fence
        )

    assert last.status == JobStatus.FAILED
    assert [a.status for a in last.attempts] == [JobStatus.FAILED] * 3
    assert catalog.due_retries(clock.now()) == []
    # The job's error and its last attempt's say that nothing is retried any more.
    first_action = last.attempts[0].error["recommended_action"]  # type: ignore[index]
    assert "retried automatically" in first_action
    for error in (last.error, last.attempts[-1].error):
        assert error is not None and "retried" not in error["recommended_action"]
        assert error["recommended_action"].startswith("All 3 attempts failed. Check why workers")


def test_an_attempt_that_meets_an_unreadable_record_names_it_in_the_problem_list(
    clock: FrozenClock,
) -> None:
    # CorruptRecord's action says `problem list` shows every record found unreadable.
    catalog = MemoryCatalog()
    started = _started(catalog, clock)
    job = started.job

    error = errors.CorruptRecord("bj:vmstate:v:cs/vm", "not JSON")
    jobs.fail_attempt(catalog, started.job, error, 0, clock, started.fence)

    [problem] = catalog.problems()
    assert (problem.key, problem.reason) == ("bj:vmstate:v:cs/vm", "not JSON")
    assert problem.seen_by == f"Register job {job.id}" and problem.seen_at == T0


class RefusingDispatcher:
    """A broker that refuses every message."""

    def send(self, job: Job, attempt: int) -> str:
        raise errors.RedisUnavailable(job.item_name, "redis://127.0.0.1:1/0: refused")


def test_a_job_whose_message_cannot_be_sent_fails_instead_of_staying_queued(
    clock: FrozenClock,
) -> None:
    catalog = MemoryCatalog()
    job = jobs.new_job("v", Operation.DISCOVERY, "vault", "v", 3, clock)

    with pytest.raises(errors.RedisUnavailable):
        jobs.submit(catalog, RefusingDispatcher(), job, clock)

    record = catalog.get_job(job.id)
    assert record is not None and record.status == JobStatus.FAILED
    assert record.error is not None and record.error["code"] == "RedisUnavailable"


def test_a_retry_that_finds_its_item_busy_waits_for_the_next_retry(clock: FrozenClock) -> None:
    catalog = MemoryCatalog()
    job, other = _submit(catalog, clock), _submit(catalog, clock)
    started = jobs.begin_attempt(catalog, job.id, 1, "t", 60, 900, clock)
    assert started is not None
    jobs.fail_attempt(catalog, started.job, errors.WorkerLost("cs/vm"), 900, clock, started.fence)
    jobs.begin_attempt(catalog, other.id, 1, "t", 60, 900, clock)  # another job takes the VM

    assert jobs.begin_attempt(catalog, job.id, 2, "t2", 60, 900, clock) is None

    record = catalog.get_job(job.id)
    assert record is not None and record.status == JobStatus.WAITING_TO_RETRY
    assert record.attempt == 2
    assert record.attempts[-1].error is not None
    assert record.attempts[-1].error["code"] == "OperationInProgress"
    assert catalog.due_retries(clock.now() + timedelta(seconds=900)) == [job.id]


def test_a_lease_left_by_a_job_that_no_longer_runs_is_taken_over(clock: FrozenClock) -> None:
    catalog = MemoryCatalog()
    ended, job = _submit(catalog, clock), _submit(catalog, clock)
    catalog.save_job(ended.evolve(status=JobStatus.FAILED))
    catalog.acquire_lock("v", "cs/vm", ended.id, 60)  # as a crash between two writes could

    started = jobs.begin_attempt(catalog, job.id, 1, "t", 60, 900, clock)

    assert started is not None and catalog.lock_holder("v", "cs/vm") == job.id


def test_a_lease_held_by_a_job_being_started_is_not_taken_over(clock: FrozenClock) -> None:
    catalog = MemoryCatalog()
    starting, job = _submit(catalog, clock), _submit(catalog, clock)
    catalog.acquire_lock("v", "cs/vm", starting.id, 60)  # acquired, not saved InProgress yet

    assert jobs.begin_attempt(catalog, job.id, 1, "t", 60, 900, clock) is None
    assert catalog.lock_holder("v", "cs/vm") == starting.id


def test_a_failed_attempt_ends_the_sub_task_it_left_running(clock: FrozenClock) -> None:
    catalog = MemoryCatalog()
    started = _started(catalog, clock)
    steps = (
        SubTask("Take Snapshot", JobStatus.COMPLETED, T0, T0),
        SubTask("Transfer data to vault", JobStatus.IN_PROGRESS, T0, None, 10, 100),
    )
    clock.advance(5)

    failed = jobs.fail_attempt(
        catalog, started.job.evolve(subtasks=steps), errors.WorkerLost("x"), 0, clock, None
    )

    assert [s.status for s in failed.subtasks] == [JobStatus.COMPLETED, JobStatus.FAILED]
    assert failed.subtasks[1].ended_at == clock.now() and failed.subtasks[1].bytes_done == 10


class _CountingCatalog(MemoryCatalog):
    """Counts the writes that tell the sweep messages went out."""

    def __init__(self) -> None:
        super().__init__()
        self.mark_sent_writes: list[int] = []

    def mark_sent(self, sent: Mapping[str, datetime]) -> None:
        self.mark_sent_writes.append(len(sent))
        super().mark_sent(sent)


class _RefusingAfter(RecordingDispatcher):
    def __init__(self, sends: int) -> None:
        super().__init__()
        self.sends = sends

    def send(self, job: Job, attempt: int) -> str:
        if len(self.sent) == self.sends:
            raise errors.RedisUnavailable(detail="redis://127.0.0.1:1/0")
        return super().send(job, attempt)


def _batch(clock: FrozenClock, n: int) -> list[Job]:
    return [jobs.new_job("v", Operation.REGISTER, f"cs/vm{i}", "x", 3, clock) for i in range(n)]


def test_a_batch_is_confirmed_sent_in_one_write_per_hundred_jobs(clock: FrozenClock) -> None:
    catalog = _CountingCatalog()

    submitted = jobs.submit_all(catalog, RecordingDispatcher(), _batch(clock, 250), clock)

    assert len(submitted) == 250 and catalog.mark_sent_writes == [100, 100, 50]
    assert catalog.due_queued(clock.now() + timedelta(seconds=jobs.SEND_GRACE_SECONDS)) == []


def test_a_batch_whose_send_fails_confirms_the_jobs_sent_before_and_submits_none_after(
    clock: FrozenClock,
) -> None:
    catalog = _CountingCatalog()
    batch = _batch(clock, 5)

    with pytest.raises(errors.RedisUnavailable):
        jobs.submit_all(catalog, _RefusingAfter(2), batch, clock)

    assert catalog.mark_sent_writes == [2]
    failed = catalog.get_job(batch[2].id)
    assert failed is not None and failed.status == JobStatus.FAILED
    assert [catalog.get_job(job.id) for job in batch[3:]] == [None, None]
