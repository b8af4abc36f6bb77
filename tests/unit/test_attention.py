"""Which protected items need action: one rule per reason, judged at a given time."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backup_jobs.attention import Attention, needs_action
from backup_jobs.dashboard import ANY, reason_filter
from backup_jobs.errors import ConfigurationError, InvalidRestoreTarget
from backup_jobs.items import (
    LastBackup,
    ProtectedItem,
    ProtectionState,
    RecoveryPointRecord,
    RunOutcome,
    ScheduleEvent,
)
from backup_jobs.models import JobStatus
from backup_jobs.restores import new_vm_id, restore_target

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
ITEM = ProtectedItem("v", "cs/vm", "p", ProtectionState.PROTECTED, protected_at=NOW)
POINT = RecoveryPointRecord("rp1", "cs/vm", NOW - timedelta(hours=1), "CrashConsistent", 1, 1)


def _ok(at: datetime) -> LastBackup:
    return LastBackup("j", at, JobStatus.COMPLETED)


def test_a_healthy_item_needs_nothing() -> None:
    assert needs_action(ITEM.evolve(last_backup=_ok(NOW)), [], [POINT], NOW) == ()


def test_a_failed_last_backup_needs_action() -> None:
    assert needs_action(ITEM.evolve(state=ProtectionState.ERROR), [], [], NOW) == (
        Attention.FAILED_BACKUP,
    )


def test_a_missed_run_needs_action_until_a_good_backup_follows_it() -> None:
    missed = ScheduleEvent(NOW - timedelta(hours=5), RunOutcome.MISSED, "service down")
    skipped = ScheduleEvent(NOW - timedelta(hours=4), RunOutcome.SKIPPED, "previous running")
    before = ITEM.evolve(last_backup=_ok(NOW - timedelta(days=1)))
    after = ITEM.evolve(last_backup=_ok(NOW - timedelta(hours=1)))
    stopped = before.evolve(state=ProtectionState.STOPPED)

    assert needs_action(before, [missed], [], NOW) == (Attention.MISSED_RUNS,)
    assert needs_action(after, [missed], [], NOW) == ()
    assert needs_action(before, [skipped], [], NOW) == ()
    assert needs_action(stopped, [missed], [], NOW) == ()


def test_broken_points_and_points_left_unverified_need_action() -> None:
    broken = replace(POINT, verify_state="Broken", broken_reason="chunk abc is corrupt")
    old = replace(POINT, created_at=NOW - timedelta(days=3))
    verified_old = replace(old, verify_state="Verified", verified_at=NOW)

    assert needs_action(ITEM, [], [broken], NOW) == (Attention.BROKEN_POINTS,)
    assert needs_action(ITEM, [], [old], NOW) == (Attention.UNVERIFIED_POINTS,)
    assert needs_action(ITEM, [], [verified_old, POINT], NOW) == ()


def test_protection_pending_its_first_backup_for_a_day_needs_action() -> None:
    pending = ITEM.evolve(state=ProtectionState.PENDING)

    assert needs_action(pending, [], [], NOW + timedelta(hours=23)) == ()
    assert needs_action(pending, [], [], NOW + timedelta(hours=25)) == (Attention.STUCK_PENDING,)


def test_a_reason_is_read_in_any_spelling_and_garbage_names_the_accepted_ones() -> None:
    assert reason_filter("failed-backup") == Attention.FAILED_BACKUP
    assert reason_filter(" ANY ") == ANY and reason_filter(None) is None
    with pytest.raises(ConfigurationError, match="accepted: any, FailedBackup"):
        reason_filter("nope")


def test_a_restore_target_stays_inside_the_root(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "out").symlink_to(tmp_path)

    assert restore_target("a/b", tmp_path / "root") == tmp_path / "root" / "a" / "b"
    assert restore_target(tmp_path / "root" / "c", tmp_path / "root") == tmp_path / "root" / "c"
    for bad in ("../x", "a/../b", str(tmp_path / "elsewhere"), "out/x", "", "  "):
        with pytest.raises(InvalidRestoreTarget):
            restore_target(bad, tmp_path / "root")


def test_a_new_vm_is_named_in_the_source_s_cloud_service_unless_given_one() -> None:
    assert new_vm_id("copy", "cs-app/app01") == "cs-app/copy"
    assert new_vm_id("cs-new/copy", "cs-app/app01") == "cs-new/copy"
    assert new_vm_id("n" * 64, "cs-app/app01") == "cs-app/" + "n" * 64
    for bad in ("", "../x", "a/b/c", ".hidden", "sp ace", "cs/", "/x", "n" * 65, "c" * 65 + "/x"):
        with pytest.raises(InvalidRestoreTarget, match="Choose a valid name"):
            new_vm_id(bad, "cs-app/app01")


def test_a_protection_state_is_read_as_listed_or_as_shown() -> None:
    assert ProtectionState.parse("protection-stopped") == ProtectionState.STOPPED
    assert ProtectionState.parse("Protection stopped") == ProtectionState.STOPPED
    assert ProtectionState.parse("protected (pending initial backup)") == ProtectionState.PENDING
    with pytest.raises(ConfigurationError, match="accepted: ConfiguringProtection"):
        ProtectionState.parse("nope")
