"""Prune, Verify, GarbageCollect, StopProtection and DeleteBackupData use-cases, and the
maintenance tick, on the memory catalog and a real vault (frozen clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backup_jobs import jobs, maintenance, maintenance_ticks
from backup_jobs.context import JobContext
from backup_jobs.errors import ConfigurationError, NotProtected, VaultIntegrityError
from backup_jobs.items import ProtectedItem, ProtectionState, RecoveryPointRecord, VerifyState
from backup_jobs.maintenance import (
    DRY_RUN,
    PRUNE_ITEM,
    VERIFY_ITEM,
    VM,
    retention_of,
    run_prune,
    run_verify,
)
from backup_jobs.models import Operation, VaultConfig
from backup_jobs.policies import Retention, ScheduleKind, make_policy
from backup_jobs.settings import Settings
from backup_jobs.stopping import delete_backup_data, stop_protection
from backup_jobs.testing import FrozenClock, MemoryCatalog, MemoryProvider, RecordingDispatcher
from backup_jobs.vault import BackupRequest, DiskSource, Manifest, Vault, backup

T0 = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
POLICY = make_policy(
    "nightly", ScheduleKind.DAILY, times=["22:00"], retention=Retention(2), timezone="UTC"
)


def _context(
    tmp_path: Path,
    catalog: MemoryCatalog,
    operation: Operation,
    item: str,
    **properties: object,
) -> JobContext:
    clock = FrozenClock(T0)
    job = jobs.new_job("v", operation, item, item if "/" in item else "v", 3, clock)
    job = job.evolve(properties={**job.properties, **properties})
    catalog.create_job(job, T0)
    started = jobs.begin_attempt(catalog, job.id, 1, "t", 60, 900, clock)
    assert started is not None
    settings = Settings(vault_dir=tmp_path / "vault")
    vault = VaultConfig("v", "r1", "local", str(tmp_path), str(tmp_path / "vault"))
    return JobContext(
        started.job,
        started.fence,
        vault,
        catalog,
        MemoryProvider(),
        settings,
        lambda: None,
        clock=clock,
    )


def _point(vault: Vault, catalog: MemoryCatalog, vm: str, at: datetime) -> Manifest:
    """A committed point (no disks: retention needs only its time) and its mirror."""
    manifest = Manifest(f"{at:%Y%m%dT%H%M%SZ}-{vm[-1]}00000", vm, at, "CrashConsistent", ())
    vault.commit(manifest)
    catalog.add_recovery_point(
        "v", RecoveryPointRecord(manifest.id, vm, at, "CrashConsistent", 0, 0)
    )
    return manifest


@pytest.fixture
def catalog() -> MemoryCatalog:
    catalog = MemoryCatalog()
    catalog.put_policy("v", POLICY)
    for vm in ("cs/a", "cs/b"):
        catalog.put_item(ProtectedItem("v", vm, "nightly", ProtectionState.PROTECTED), None, T0)
    return catalog


def _days(*hours: tuple[int, int]) -> list[datetime]:
    return [T0 - timedelta(days=3) + timedelta(days=d, hours=h) for d, h in hours]


def test_a_policy_s_retention_and_zone_become_the_vault_s() -> None:
    policy = make_policy(
        "p",
        ScheduleKind.DAILY,
        times=["22:00"],
        retention=Retention(30, 4, 12, 2),
        timezone="Europe/Berlin",
    )

    retention = retention_of(policy)

    assert (retention.keep_daily, retention.keep_weekly) == (30, 4)
    assert (retention.keep_monthly, retention.keep_yearly) == (12, 2)
    assert retention.keep_last == 0 and retention.timezone == "Europe/Berlin"


def test_prune_keeps_the_newest_point_of_each_kept_day_and_the_newest_good_one(
    tmp_path: Path, catalog: MemoryCatalog
) -> None:
    vault = Vault.create(tmp_path / "vault")
    d0a, d0b, d1, d2a, d2b = (
        _point(vault, catalog, "cs/a", at) for at in _days((0, 1), (0, 3), (1, 1), (2, 1), (2, 3))
    )
    [newest] = [p for p in catalog.recovery_points("v", "cs/a") if p.id == d2b.id]
    catalog.update_recovery_point("v", newest.evolve(verify_state=VerifyState.BROKEN))
    ctx = _context(tmp_path, catalog, Operation.PRUNE, PRUNE_ITEM)

    result = run_prune(ctx)

    # Two days kept (the newest of day 2, broken, and of day 1), plus the newest good point.
    kept = {d2b.id, d2a.id, d1.id}
    assert {m.id for m in vault.manifests("cs/a")} == kept
    assert {p.id for p in catalog.recovery_points("v", "cs/a")} == kept
    item = catalog.get_item("v", "cs/a")
    assert item is not None and item.recovery_points == 3
    assert result["removed"] == 2 and result["kept"] == 3
    assert [p["id"] for p in result["per_vm"]["cs/a"]["remove"]] == [d0b.id, d0a.id]


def test_prune_keeps_everything_of_a_stopped_item_and_of_a_vm_without_one(
    tmp_path: Path, catalog: MemoryCatalog
) -> None:
    vault = Vault.create(tmp_path / "vault")
    hours = ((0, 1), (0, 2), (1, 1), (2, 1))
    for vm in ("cs/b", "cs/c"):
        for at in _days(*hours):
            _point(vault, catalog, vm, at)
    item = catalog.get_item("v", "cs/b")
    assert item is not None
    catalog.put_item(item.evolve(state=ProtectionState.STOPPED))

    result = run_prune(_context(tmp_path, catalog, Operation.PRUNE, PRUNE_ITEM))

    assert len(vault.manifests("cs/b")) == len(vault.manifests("cs/c")) == 4
    assert result["removed"] == 0 and result["kept"] == 8


def test_a_dry_run_prune_changes_nothing_and_lists_what_would_go(
    tmp_path: Path, catalog: MemoryCatalog
) -> None:
    vault = Vault.create(tmp_path / "vault")
    points = [_point(vault, catalog, "cs/a", at) for at in _days((0, 1), (1, 1), (2, 1))]
    _point(vault, catalog, "cs/b", T0)
    ctx = _context(tmp_path, catalog, Operation.PRUNE, PRUNE_ITEM, **{DRY_RUN: True, VM: "cs/a"})

    result = run_prune(ctx)

    assert len(vault.manifests()) == 4 and len(catalog.recovery_points("v", "cs/a")) == 3
    assert list(result["per_vm"]) == ["cs/a"]
    plan = result["per_vm"]["cs/a"]
    assert [p["id"] for p in plan["remove"]] == [points[0].id]
    assert [p["created_at"] for p in plan["keep"]] == [
        points[2].created_at.isoformat(),
        points[1].created_at.isoformat(),
    ]


def _image(path: Path, seed: int) -> Path:
    path.write_bytes(__import__("random").Random(seed).randbytes(3 * 65536))
    return path


def _backed_up(tmp_path: Path, catalog: MemoryCatalog, vm: str, seed: int) -> Manifest:
    vault = Vault.open(tmp_path / "vault")
    image = _image(tmp_path / f"{seed}.img", seed)
    manifest = backup(vault, BackupRequest(vm, [DiskSource("os", image)], threads=2))
    record = RecoveryPointRecord(
        manifest.id, vm, manifest.created_at, "CrashConsistent", manifest.size_bytes, 0
    )
    catalog.add_recovery_point("v", record)
    return manifest


def test_verify_marks_a_point_with_a_flipped_byte_broken_and_fails_naming_it(
    tmp_path: Path, catalog: MemoryCatalog
) -> None:
    Vault.create(tmp_path / "vault", chunk_size=65536)
    bad = _backed_up(tmp_path, catalog, "cs/a", 1)
    good = _backed_up(tmp_path, catalog, "cs/b", 2)
    vault = Vault.open(tmp_path / "vault")
    index = vault.read_index(bad, bad.disks[0])
    chunk = next(p for p in (tmp_path / "vault" / "chunks").rglob(index.digests[1].hex()))
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0x01
    chunk.write_bytes(bytes(data))
    ctx = _context(tmp_path, catalog, Operation.VERIFY, VERIFY_ITEM)

    with pytest.raises(VaultIntegrityError) as raised:
        run_verify(ctx)

    marks = {p.id: p for vm in ("cs/a", "cs/b") for p in catalog.recovery_points("v", vm)}
    assert marks[bad.id].verify_state == VerifyState.BROKEN
    assert marks[bad.id].broken_reason is not None and chunk.name in marks[bad.id].broken_reason
    assert marks[good.id].verify_state == VerifyState.VERIFIED
    assert marks[good.id].verified_at == T0
    assert bad.id in raised.value.message and chunk.name in raised.value.message
    assert "cs/a" in raised.value.recommended_action
    assert ctx.results["points_broken"] == 1 and ctx.results["chunks_quarantined"] == 1
    assert ctx.results["chunks_checked"] == 6


def test_stop_with_kept_data_stops_scheduling_and_keeps_every_point(
    tmp_path: Path, catalog: MemoryCatalog
) -> None:
    vault = Vault.create(tmp_path / "vault")
    for at in _days((0, 1), (1, 1)):
        _point(vault, catalog, "cs/a", at)
    ctx = _context(tmp_path, catalog, Operation.STOP_PROTECTION, "cs/a")

    result = stop_protection(ctx)

    item = catalog.get_item("v", "cs/a")
    assert item is not None and item.state == ProtectionState.STOPPED
    assert catalog.next_run("v", "cs/a") is None and catalog.policy_items("v", "nightly") == [
        "cs/b"
    ]
    assert result["recovery_points_kept"] == 2 and len(vault.manifests("cs/a")) == 2
    catalog.release_lock("v", "cs/a", ctx.job.id)
    with pytest.raises(NotProtected):
        stop_protection(_context(tmp_path, catalog, Operation.STOP_PROTECTION, "cs/a"))


def test_delete_backup_data_deletes_every_point_then_the_item(
    tmp_path: Path, catalog: MemoryCatalog
) -> None:
    vault = Vault.create(tmp_path / "vault")
    for at in _days((0, 1), (1, 1)):
        _point(vault, catalog, "cs/a", at)
    _point(vault, catalog, "cs/b", T0)
    ctx = _context(tmp_path, catalog, Operation.DELETE_BACKUP_DATA, "cs/a")

    result = delete_backup_data(ctx)

    assert vault.manifests("cs/a") == [] and len(vault.manifests("cs/b")) == 1
    assert list(catalog.recovery_points("v", "cs/a")) == []
    assert catalog.get_item("v", "cs/a") is None and catalog.next_run("v", "cs/a") is None
    assert result["recovery_points_deleted"] == 2
    assert [s.status.value for s in ctx.subtasks] == ["Completed"] * 3


def test_the_maintenance_tick_starts_each_job_once_per_period_and_only_where_items_are() -> None:
    catalog, dispatcher, clock = MemoryCatalog(), RecordingDispatcher(), FrozenClock(T0)
    for name in ("busy", "empty"):
        catalog.put_vault(VaultConfig(name, "r1", "local", "/fleet"))
    catalog.put_item(ProtectedItem("busy", "cs/a", "nightly", ProtectionState.PROTECTED))
    every = {Operation.PRUNE: 3600.0, Operation.VERIFY: 86400.0}

    first = maintenance_ticks.start_maintenance(catalog, dispatcher, clock, every, 3)
    clock.advance(3599)
    early = maintenance_ticks.start_maintenance(catalog, dispatcher, clock, every, 3)
    clock.advance(1)
    stored = catalog.last_ticks()
    due = maintenance_ticks.start_maintenance(catalog, dispatcher, clock, every, 3)
    # A second beat that read the same last start before the first recorded the new one.
    catalog.record_tick("Prune:busy", stored["Prune:busy"])
    again = maintenance_ticks.start_maintenance(catalog, dispatcher, clock, every, 3)

    assert first.jobs == early.jobs == again.jobs == []  # counting starts at first sight
    [job_id] = due.jobs
    job = catalog.get_job(job_id)
    assert job is not None and job.operation == Operation.PRUNE and job.item == PRUNE_ITEM
    assert job.vault == "busy" and job.properties == {"trigger": "schedule"}
    assert dispatcher.sent == [(job_id, 1)]


def test_a_protection_stopped_while_prune_runs_keeps_the_points_prune_had_planned_to_remove(
    tmp_path: Path, catalog: MemoryCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = Vault.create(tmp_path / "vault")
    points = [_point(vault, catalog, "cs/a", at) for at in _days((0, 1), (1, 1), (2, 1))]
    planned = maintenance._plans

    def plan_then_stop(ctx: JobContext, vault: Vault) -> object:
        plans = planned(ctx, vault)
        item = catalog.get_item("v", "cs/a")
        assert item is not None
        catalog.put_item(item.evolve(state=ProtectionState.STOPPED))  # StopProtection, now
        return plans

    monkeypatch.setattr(maintenance, "_plans", plan_then_stop)

    result = run_prune(_context(tmp_path, catalog, Operation.PRUNE, PRUNE_ITEM))

    assert [m.id for m in vault.manifests("cs/a")] == [p.id for p in points]
    assert result["removed"] == 0 and result["kept"] == 3


def test_a_vault_missing_under_recorded_points_fails_maintenance_instead_of_passing_empty(
    tmp_path: Path, catalog: MemoryCatalog
) -> None:
    vault = Vault.create(tmp_path / "vault")
    _point(vault, catalog, "cs/a", T0)
    (tmp_path / "vault").rename(tmp_path / "unmounted")  # its disk is not mounted here

    with pytest.raises(ConfigurationError, match="1 recovery point") as raised:
        run_verify(_context(tmp_path, catalog, Operation.VERIFY, VERIFY_ITEM))
    assert raised.value.message.startswith(f"{tmp_path / 'vault'}: Invalid configuration: no vault")
    with pytest.raises(ConfigurationError, match="Mount the vault's disk"):
        delete_backup_data(_context(tmp_path, catalog, Operation.DELETE_BACKUP_DATA, "cs/a"))
    assert [p.id for p in catalog.recovery_points("v", "cs/a")] != []  # nothing forgotten


def test_a_vault_no_backup_created_yet_has_nothing_to_maintain(
    tmp_path: Path, catalog: MemoryCatalog
) -> None:
    assert run_verify(_context(tmp_path, catalog, Operation.VERIFY, VERIFY_ITEM)) == {
        "points_checked": 0,
        "chunks_checked": 0,
    }


def test_prune_mirrors_again_a_committed_point_the_catalog_lost_and_retains_by_all_of_them(
    tmp_path: Path, catalog: MemoryCatalog
) -> None:
    vault = Vault.create(tmp_path / "vault")
    old, mid, new = (_point(vault, catalog, "cs/a", at) for at in _days((0, 1), (1, 1), (2, 1)))
    catalog.remove_recovery_point("v", "cs/a", new.id)  # committed, its mirror lost
    ctx = _context(tmp_path, catalog, Operation.PRUNE, PRUNE_ITEM)

    result = run_prune(ctx)

    # Two days kept, the newest among them although the catalog had lost it: restorable again.
    assert {p.id for p in catalog.recovery_points("v", "cs/a")} == {new.id, mid.id}
    assert {m.id for m in vault.manifests("cs/a")} == {new.id, mid.id}
    assert result["removed"] == 1 and any(new.id in w for w in ctx.warnings)
    item = catalog.get_item("v", "cs/a")
    assert item is not None and item.recovery_points == 2
    assert old.id not in {p.id for p in catalog.recovery_points("v", "cs/a")}
