"""The catalog's protection records, one contract for memory and Redis: policies, protected
items with their policy sets and schedule, skipped/missed runs, the recovery-point mirror."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backup_jobs import wire
from backup_jobs.catalog import Catalog, Fence
from backup_jobs.errors import LeaseLost
from backup_jobs.items import (
    ProtectedItem,
    ProtectionState,
    RecoveryPointRecord,
    RunOutcome,
    ScheduleEvent,
    VerifyState,
)
from backup_jobs.models import VaultConfig
from backup_jobs.policies import Policy, Retention, ScheduleKind, make_policy

T0 = datetime(2026, 5, 1, 22, 0, tzinfo=UTC)


def _policy(name: str, at: str = "22:00") -> Policy:
    return make_policy(name, ScheduleKind.DAILY, times=[at], retention=Retention(7))


def _item(
    vm: str, policy: str = "nightly", state: ProtectionState = ProtectionState.PENDING
) -> ProtectedItem:
    return ProtectedItem("v", vm, policy, state, protected_at=T0)


def test_policies_are_created_once_replaced_on_request_listed_and_deleted(
    catalog: Catalog,
) -> None:
    assert catalog.put_policy("v", _policy("nightly"))
    assert not catalog.put_policy("v", _policy("nightly", "23:00"))
    assert catalog.put_policy("v", _policy("nightly", "23:00"), replace=True)
    catalog.put_policy("v", _policy("weekly"))

    assert catalog.get_policy("v", "nightly") == _policy("nightly", "23:00")
    assert [p.name for p in catalog.list_policies("v")] == ["nightly", "weekly"]
    assert catalog.delete_policy("v", "weekly") is None
    assert [p.name for p in catalog.list_policies("v")] == ["nightly"]
    assert catalog.get_policy("v", "weekly") is None and catalog.get_policy("w", "nightly") is None


def test_a_policy_an_item_uses_cannot_be_deleted_and_names_the_vms(catalog: Catalog) -> None:
    catalog.put_policy("v", _policy("nightly"))
    catalog.put_item(_item("cs/a"), schedule_at=T0)
    catalog.put_item(_item("cs/b"), schedule_at=T0)

    assert catalog.delete_policy("v", "nightly") == ["cs/a", "cs/b"]
    catalog.put_item(_item("cs/a", state=ProtectionState.STOPPED))
    catalog.put_item(_item("cs/b", policy="other"))
    assert catalog.policy_items("v", "nightly") == []
    assert catalog.policy_items("v", "other") == ["cs/b"]
    assert catalog.delete_policy("v", "nightly") is None


def test_an_item_is_scheduled_while_its_state_is_and_unscheduled_otherwise(
    catalog: Catalog,
) -> None:
    catalog.put_item(_item("cs/a"), schedule_at=T0)
    catalog.put_item(_item("cs/b"), schedule_at=T0 + timedelta(hours=1))
    catalog.put_item(_item("cs/a", state=ProtectionState.PROTECTED))  # keeps its next run

    assert catalog.next_run("v", "cs/a") == T0
    assert [(r.vm_id, r.scheduled_at) for r in catalog.due_runs(T0 + timedelta(minutes=1))] == [
        ("cs/a", T0)
    ]
    catalog.schedule("v", "cs/a", T0 + timedelta(days=1))
    catalog.put_item(_item("cs/b", state=ProtectionState.STOPPED))
    assert catalog.due_runs(T0 + timedelta(hours=2)) == []
    assert catalog.next_run("v", "cs/b") is None
    assert [i.vm_id for i in catalog.list_items("v")] == ["cs/a", "cs/b"]


def test_a_run_moves_only_from_where_it_still_is(catalog: Catalog) -> None:
    catalog.put_item(_item("cs/a"), schedule_at=T0)
    later, rescheduled = T0 + timedelta(days=1), T0 + timedelta(seconds=0.5)

    assert catalog.move_run("v", "cs/a", T0, later)
    assert not catalog.move_run("v", "cs/a", T0, T0 + timedelta(days=2))  # a second tick
    catalog.schedule("v", "cs/a", rescheduled)
    assert not catalog.move_run("v", "cs/a", later, None)  # lost the race to a newer schedule
    assert catalog.next_run("v", "cs/a") == rescheduled
    assert catalog.move_run("v", "cs/a", rescheduled, None)
    assert catalog.next_run("v", "cs/a") is None
    assert not catalog.move_run("v", "cs/b", T0, later)


def test_an_item_write_is_fenced(catalog: Catalog) -> None:
    lock = catalog.acquire_lock("v", "cs/a", "job-1", 30)
    fence = Fence("v", "cs/a", lock.token)
    catalog.put_item(_item("cs/a"), fence, schedule_at=T0)
    catalog.invalidate_fence("v", "cs/a")

    with pytest.raises(LeaseLost):
        catalog.put_item(_item("cs/a", state=ProtectionState.PROTECTED), fence)
    assert catalog.get_item("v", "cs/a") == _item("cs/a")


def test_schedule_events_are_kept_once_each_newest_first_and_bounded(catalog: Catalog) -> None:
    for minutes in range(25):
        event = ScheduleEvent(T0 + timedelta(minutes=minutes), RunOutcome.SKIPPED, "still running")
        catalog.record_event("v", "cs/a", event)
        catalog.record_event("v", "cs/a", event)  # a second beat records the same run

    events = catalog.events("v", "cs/a")

    assert len(events) == 20
    assert events[0].scheduled_at == T0 + timedelta(minutes=24)


def test_active_backup_and_recovery_points_are_mirrored_newest_first(catalog: Catalog) -> None:
    catalog.set_active_backup("v", "cs/a", "job-9")
    for n in range(3):
        catalog.add_recovery_point(
            "v",
            RecoveryPointRecord(f"rp{n}", "cs/a", T0 + timedelta(days=n), "CrashConsistent", 10, 5),
        )

    assert catalog.active_backup("v", "cs/a") == "job-9"
    assert catalog.active_backup("v", "cs/b") is None
    assert [p.id for p in catalog.recovery_points("v", "cs/a")] == ["rp2", "rp1", "rp0"]


def test_an_unreadable_item_or_policy_is_skipped_by_listings(catalog: Catalog) -> None:
    catalog.put_policy("v", _policy("nightly"))
    catalog.put_item(_item("cs/a"), schedule_at=T0)
    catalog.put_item(_item("cs/b"), schedule_at=T0)
    for key in (wire.item_key("v", "cs/b"), wire.policy_key("v", "nightly")):
        if hasattr(catalog, "records"):
            catalog.records[key] = "{garbage"
        else:
            catalog.client.set(key, "{garbage")  # type: ignore[attr-defined]

    items, policies = catalog.list_items("v"), catalog.list_policies("v")

    assert [i.vm_id for i in items] == ["cs/a"] and len(items.problems) == 1
    assert list(policies) == [] and len(policies.problems) == 1


def _point(n: int, vm: str = "cs/a") -> RecoveryPointRecord:
    return RecoveryPointRecord(f"rp{n}", vm, T0 + timedelta(days=n), "CrashConsistent", 10, 5)


def test_an_item_s_point_count_follows_its_mirror_whoever_writes_last(catalog: Catalog) -> None:
    catalog.put_item(_item("cs/a", state=ProtectionState.PROTECTED))
    for n in range(3):
        catalog.add_recovery_point("v", _point(n))
    stale = catalog.get_item("v", "cs/a")
    assert stale is not None and stale.recovery_points == 3

    catalog.remove_recovery_point("v", "cs/a", "rp-gone")  # not mirrored: harmless
    catalog.remove_recovery_point("v", "cs/a", "rp0")  # a prune, while a backup ran
    catalog.put_item(stale.evolve(recovery_points=stale.recovery_points + 1))  # the backup

    item = catalog.get_item("v", "cs/a")
    assert [p.id for p in catalog.recovery_points("v", "cs/a")] == ["rp2", "rp1"]
    assert item is not None and item.recovery_points == 2


def test_a_verify_mark_replaces_a_mirrored_point_but_never_brings_a_removed_one_back(
    catalog: Catalog,
) -> None:
    catalog.add_recovery_point("v", _point(1))
    catalog.add_recovery_point("v", _point(2))
    catalog.remove_recovery_point("v", "cs/a", "rp2")

    broken = _point(1).evolve(verify_state=VerifyState.BROKEN, verified_at=T0, broken_reason="x")
    assert catalog.update_recovery_point("v", broken)
    assert not catalog.update_recovery_point("v", _point(2).evolve(verify_state="Verified"))
    assert list(catalog.recovery_points("v", "cs/a")) == [broken]


def test_removing_an_item_forgets_its_schedule_policy_membership_and_runs_and_is_fenced(
    catalog: Catalog,
) -> None:
    catalog.put_policy("v", _policy("nightly"))
    lock = catalog.acquire_lock("v", "cs/a", "job-1", 30)
    fence = Fence("v", "cs/a", lock.token)
    catalog.put_item(_item("cs/a"), fence, schedule_at=T0)
    catalog.put_item(_item("cs/b"), schedule_at=T0)
    catalog.record_event("v", "cs/a", ScheduleEvent(T0, RunOutcome.MISSED, "down"))
    catalog.set_active_backup("v", "cs/a", "job-0")
    catalog.invalidate_fence("v", "cs/a")
    with pytest.raises(LeaseLost):
        catalog.remove_item("v", "cs/a", fence)

    catalog.remove_item("v", "cs/a")

    assert catalog.get_item("v", "cs/a") is None and catalog.count_items("v") == 1
    assert [i.vm_id for i in catalog.list_items("v")] == ["cs/b"]
    assert catalog.policy_items("v", "nightly") == ["cs/b"]
    assert catalog.next_run("v", "cs/a") is None and catalog.events("v", "cs/a") == []
    assert catalog.active_backup("v", "cs/a") is None
    assert catalog.delete_policy("v", "nightly") == ["cs/b"]


def test_vaults_are_listed_by_name(catalog: Catalog) -> None:
    for name in ("west", "east"):
        catalog.put_vault(VaultConfig(name, "r1", "local", "/fleet"))

    assert catalog.list_vaults() == ["east", "west"]


def test_a_point_recorded_before_verify_existed_reads_as_unverified() -> None:
    old = {k: v for k, v in _point(1).to_dict().items() if "verif" not in k and "broken" not in k}

    point = RecoveryPointRecord.from_dict(old)

    assert point.verify_state == VerifyState.UNVERIFIED and point.good
    assert point.verified_at is None and point.broken_reason is None
    assert RecoveryPointRecord.from_dict(point.to_dict()) == point
