"""Configure protection, the dispatch tick and policy changes, on in-memory adapters."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backup_jobs import Client, errors, jobs, protection, scheduling, ticks
from backup_jobs.context import JobContext
from backup_jobs.items import ProtectedItem, ProtectionState, RunOutcome
from backup_jobs.models import VM, JobStatus, Operation, RegistrationState, VaultConfig
from backup_jobs.policies import Retention, ScheduleKind, make_policy
from backup_jobs.settings import Settings
from backup_jobs.testing import FrozenClock, MemoryCatalog, MemoryProvider, RecordingDispatcher

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # 14:00 in Berlin
VAULT = VaultConfig("v", "r1", "local", "/fleet")
WEB = VM("web01", "cs", "r1", agent_version="2.7.0.0", registration=RegistrationState.REGISTERED)
KEEP = Retention(7)
NIGHTLY = make_policy(
    "nightly", ScheduleKind.DAILY, times=["22:00"], retention=KEEP, timezone="Europe/Berlin"
)
WINDOW = 7200


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
def catalog() -> MemoryCatalog:
    catalog = MemoryCatalog()
    for vm in (
        WEB,
        replace(WEB, name="app01"),
        replace(WEB, name="new01", registration=RegistrationState.NOT_REGISTERED),
    ):
        catalog.put_vm("v", vm)
        catalog.put_vm_state("v", vm)
    catalog.put_policy("v", NIGHTLY)
    return catalog


def _configure(
    catalog: MemoryCatalog, clock: FrozenClock, vm: str = "cs/web01", **properties: object
) -> JobContext:
    job = jobs.new_job("v", Operation.CONFIGURE_PROTECTION, vm, vm, 3, clock)
    job = job.evolve(properties={"policy": "nightly", **properties})
    catalog.create_job(job, clock.now())
    started = jobs.begin_attempt(catalog, job.id, 1, "t", 60, 900, clock)
    assert started is not None
    ctx = JobContext(
        started.job,
        started.fence,
        VAULT,
        catalog,
        MemoryProvider(),
        Settings(),
        lambda: None,
        clock=clock,
    )
    protection.configure_protection(ctx)
    return ctx


def test_protecting_a_vm_makes_it_pending_its_initial_backup_and_schedules_it(
    catalog: MemoryCatalog, clock: FrozenClock
) -> None:
    _configure(catalog, clock)

    item = catalog.get_item("v", "cs/web01")
    assert item is not None and item.state == ProtectionState.PENDING
    assert item.state.shown == "Protected (pending initial backup)"
    assert catalog.next_run("v", "cs/web01") == datetime(2026, 6, 1, 20, 0, tzinfo=UTC)
    assert catalog.policy_items("v", "nightly") == ["cs/web01"]


def test_backup_now_creates_the_initial_backup_to_be_sent_after_the_job_ends(
    catalog: MemoryCatalog, clock: FrozenClock
) -> None:
    ctx = _configure(catalog, clock, backup_now=True)

    [followup] = ctx.followups
    stored = catalog.get_job(followup.id)
    assert stored is not None and stored.operation == Operation.BACKUP
    assert stored.status == JobStatus.QUEUED
    assert catalog.active_backup("v", "cs/web01") == followup.id


def test_only_registered_vms_in_the_vault_s_region_can_be_protected(
    catalog: MemoryCatalog, clock: FrozenClock
) -> None:
    with pytest.raises(errors.NotRegistered):
        _configure(catalog, clock, vm="cs/new01")
    with pytest.raises(errors.RegionMismatch):
        protection.check_protectable(replace(WEB, region="r2"), VAULT)


def _client(
    catalog: MemoryCatalog, clock: FrozenClock, tmp_path: Path
) -> tuple[Client, RecordingDispatcher]:
    dispatcher = RecordingDispatcher()
    settings = Settings(vault="v", region="r1", fleet_dir=tmp_path)
    return Client(settings, catalog, dispatcher, clock), dispatcher


def test_the_client_refuses_each_unprotectable_vm_and_an_unknown_policy(
    catalog: MemoryCatalog, clock: FrozenClock, tmp_path: Path
) -> None:
    client, dispatcher = _client(catalog, clock, tmp_path)

    batch = client.protect(["web01", "new01", "nosuch"], "nightly")
    with pytest.raises(errors.PolicyNotFound, match="Did you mean: nightly"):
        client.protect(["web01"], "nigthly")

    assert len(batch) == 1
    assert sorted(r.error.code for r in batch.refused) == ["NotRegistered", "VMNotFoundInInventory"]
    assert len(dispatcher.sent) == 1


def test_a_policy_in_use_cannot_be_deleted_and_a_changed_policy_reschedules_its_vms(
    catalog: MemoryCatalog, clock: FrozenClock, tmp_path: Path
) -> None:
    client, _ = _client(catalog, clock, tmp_path)
    _configure(catalog, clock)

    with pytest.raises(errors.PolicyInUse, match="cs/web01"):
        client.delete_policy("nightly")
    client.update_policy(
        replace(
            NIGHTLY,
            schedule=replace(NIGHTLY.schedule, times=(NIGHTLY.schedule.times[0].replace(hour=6),)),
        )
    )

    assert catalog.next_run("v", "cs/web01") == datetime(2026, 6, 2, 4, 0, tzinfo=UTC)


def _protected(catalog: MemoryCatalog, vm: str, at: datetime) -> None:
    catalog.put_item(ProtectedItem("v", vm, "nightly", ProtectionState.PROTECTED), schedule_at=at)


def _dispatch(
    catalog: MemoryCatalog, dispatcher: RecordingDispatcher, clock: FrozenClock
) -> list[str]:
    return scheduling.dispatch_due_backups(catalog, dispatcher, clock, WINDOW, 3).jobs


def test_a_due_run_starts_one_backup_once_whatever_the_number_of_ticks(
    catalog: MemoryCatalog, clock: FrozenClock
) -> None:
    due = datetime(2026, 6, 1, 20, 0, tzinfo=UTC)
    _protected(catalog, "cs/web01", due)
    dispatcher = RecordingDispatcher()

    early = _dispatch(catalog, dispatcher, clock)
    clock.advance((due - T0).total_seconds() + 5)
    first = _dispatch(catalog, dispatcher, clock)
    catalog.schedule("v", "cs/web01", due)  # as if a second beat had read the run before
    second = _dispatch(catalog, dispatcher, clock)

    assert early == [] and second == []
    assert first == [scheduling.scheduled_job_id("v", "cs/web01", due)]
    assert dispatcher.sent == [(first[0], 1)]
    assert catalog.next_run("v", "cs/web01") == due + timedelta(days=1)
    assert catalog.events("v", "cs/web01") == []


def test_a_run_while_the_previous_backup_runs_is_skipped_and_recorded(
    catalog: MemoryCatalog, clock: FrozenClock
) -> None:
    dispatcher = RecordingDispatcher()
    _protected(catalog, "cs/web01", T0)
    [running] = _dispatch(catalog, dispatcher, clock)
    catalog.schedule("v", "cs/web01", T0 + timedelta(minutes=1))
    clock.advance(120)

    skipped = _dispatch(catalog, dispatcher, clock)

    assert skipped == []
    [event] = catalog.events("v", "cs/web01")
    assert event.outcome == RunOutcome.SKIPPED and running in event.reason


def test_runs_missed_beyond_the_start_window_are_recorded_not_run_late(
    catalog: MemoryCatalog, clock: FrozenClock
) -> None:
    dispatcher = RecordingDispatcher()
    # The service was down three days: the runs at 22:00 Berlin on 29, 30 and 31 May.
    _protected(catalog, "cs/web01", datetime(2026, 5, 29, 20, 0, tzinfo=UTC))

    started = _dispatch(catalog, dispatcher, clock)

    assert started == []
    events = catalog.events("v", "cs/web01")
    assert [e.outcome for e in events] == [RunOutcome.MISSED] * 3
    next_at = catalog.next_run("v", "cs/web01")
    assert next_at is not None and T0 < next_at <= T0 + timedelta(days=1)


def test_items_that_are_gone_or_stopped_leave_the_schedule(
    catalog: MemoryCatalog, clock: FrozenClock
) -> None:
    catalog.schedule("v", "cs/ghost", T0)
    catalog.put_item(
        ProtectedItem("v", "cs/web01", "nightly", ProtectionState.PROTECTED), schedule_at=T0
    )
    catalog.put_item(ProtectedItem("v", "cs/web01", "nightly", ProtectionState.STOPPED))

    assert _dispatch(catalog, RecordingDispatcher(), clock) == []
    assert catalog.due_runs(T0 + timedelta(days=30)) == []


def test_a_tick_reads_each_policy_once_and_a_changed_policy_at_the_next_tick(
    catalog: MemoryCatalog, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    get_policy = catalog.get_policy
    monkeypatch.setattr(
        catalog, "get_policy", lambda vault, name: reads.append(name) or get_policy(vault, name)
    )
    for vm in ("cs/web01", "cs/app01"):
        _protected(catalog, vm, T0)
    started = _dispatch(catalog, RecordingDispatcher(), clock)
    later = replace(NIGHTLY, name="nightly", timezone="UTC")
    catalog.put_policy("v", later, replace=True)
    _protected(catalog, "cs/web01", T0 + timedelta(minutes=1))
    clock.advance(120)

    _dispatch(catalog, RecordingDispatcher(), clock)

    assert len(started) == 2 and reads == ["nightly", "nightly"]
    assert catalog.next_run("v", "cs/web01") == datetime(2026, 6, 1, 22, 0, tzinfo=UTC)


def test_an_unreadable_item_stays_scheduled_and_runs_once_repaired_the_others_run_now(
    catalog: MemoryCatalog, clock: FrozenClock
) -> None:
    for vm in ("cs/web01", "cs/app01"):
        _protected(catalog, vm, T0)
    good = catalog.records["bj:item:v:cs/app01"]
    catalog.records["bj:item:v:cs/app01"] = "{broken"
    dispatcher = RecordingDispatcher()

    first = _dispatch(catalog, dispatcher, clock)
    catalog.records["bj:item:v:cs/app01"] = good  # repaired
    clock.advance(ticks.UNREADABLE_BACKOFF_SECONDS)
    second = _dispatch(catalog, dispatcher, clock)

    assert [catalog.get_job(j).item for j in first] == ["cs/web01"]  # type: ignore[union-attr]
    assert [catalog.get_job(j).item for j in second] == ["cs/app01"]  # type: ignore[union-attr]
    assert [p.key for p in catalog.problems()] == ["bj:item:v:cs/app01"]


def test_a_policy_built_by_hand_is_checked_like_make_policy_builds_it(
    clock: FrozenClock, tmp_path: Path
) -> None:
    client, _ = _client(MemoryCatalog(), clock, tmp_path)
    hourly = replace(NIGHTLY, name="p2", schedule=replace(NIGHTLY.schedule, interval_hours=0))
    hourly = replace(hourly, schedule=replace(hourly.schedule, kind=ScheduleKind.HOURLY))

    with pytest.raises(errors.InvalidPolicy, match="p2"):
        client.create_policy(hourly)
    with pytest.raises(errors.InvalidPolicy, match="name"):
        client.create_policy(replace(NIGHTLY, name="../x"))
    with pytest.raises(TypeError, match="a Policy"):
        client.create_policy("nightly")  # type: ignore[arg-type]
    assert client.policies() == []


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.backup_now(None),
        lambda c: c.backup_now(["cs/web01"]),
        lambda c: c.policy(None),
        lambda c: c.protect(["cs/web01"], "nightly", backup_now="no"),
    ],
    ids=["backup_now(None)", "backup_now(list)", "policy(None)", "backup_now='no'"],
)
def test_the_python_api_names_a_wrong_type_in_a_type_error(
    call: object, catalog: MemoryCatalog, clock: FrozenClock, tmp_path: Path
) -> None:
    client, dispatcher = _client(catalog, clock, tmp_path)
    with pytest.raises(TypeError, match="not "):
        call(client)  # type: ignore[operator]
    assert dispatcher.sent == []
