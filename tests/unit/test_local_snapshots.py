"""The local fleet's snapshots: stable views under writes, consistency, changed-block tracking."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from backup_jobs.models import Consistency
from backup_jobs.provider import CommitGuard, ProviderError, ProviderTimeout, Snapshot
from backup_jobs.providers.local import LocalFleet, LocalProvider
from backup_jobs.providers.local_backup import SlowReader
from backup_jobs.providers.local_disks import GRANULE, WRITE_RUN
from backup_jobs.providers.local_faults import Fault
from backup_jobs.vault import BackupRequest, DiskSource, Vault, backup
from tests.vault.conftest import restored_bytes

GUARD = CommitGuard(1, lambda: None, "v")
HOOKS = {"freeze_command": "true", "thaw_command": "true"}
FAILING_HOOK = "sh -c 'echo busy >&2; exit 3'"
DISK_BYTES = 4 << 20


@pytest.fixture
def fleet(tmp_path: Path) -> LocalFleet:
    fleet = LocalFleet(tmp_path / "fleet")
    fleet.root.mkdir()
    fleet.create_vm("cs", "linux", "r1", os_disk_bytes=DISK_BYTES)
    fleet.create_vm("cs", "win", "r1", os_type="Windows", os_disk_bytes=DISK_BYTES)
    fleet.write_disks("cs/linux", nbytes=DISK_BYTES // 2, seed=1)
    return fleet


def _snapshot(provider: LocalProvider, vm: str = "cs/linux") -> Snapshot:
    return provider.take_snapshot(vm, 10, lambda: None, GUARD)


def _read_all(provider: LocalProvider, snapshot: Snapshot, disk: str = "os") -> bytes:
    reader = provider.open_disk(snapshot, disk)
    try:
        return reader.pread(reader.size, 0)
    finally:
        reader.close()


def test_a_snapshot_keeps_what_the_disk_held_whatever_is_written_after(
    fleet: LocalFleet,
) -> None:
    provider = LocalProvider(fleet)
    image = fleet.vm_dir("cs/linux") / "os.img"
    before = image.read_bytes()

    snapshot = _snapshot(provider)
    fleet.write_disks("cs/linux", nbytes=DISK_BYTES // 4, seed=2)
    seen = _read_all(provider, snapshot)
    provider.release_snapshot(snapshot)
    fleet.write_disks("cs/linux", nbytes=GRANULE, seed=3)

    assert image.read_bytes() != before
    assert seen == before
    assert not (fleet.vm_dir("cs/linux") / "snapshots" / snapshot.id).exists()


def test_changed_extents_between_two_snapshots_are_what_was_written(fleet: LocalFleet) -> None:
    fleet.create_vm("cs", "big", "r1", os_disk_bytes=64 * WRITE_RUN)
    provider = LocalProvider(fleet)
    first = _snapshot(provider, "cs/big")
    written = fleet.write_disks("cs/big", nbytes=2 * WRITE_RUN + 1, seed=4)  # three runs

    second = _snapshot(provider, "cs/big")
    changed = provider.changed_extents(second, "os", first.disks[0].tracking or "")

    assert written == {"os": 3 * WRITE_RUN}
    assert changed is not None and sum(end - start for start, end in changed) == 3 * WRITE_RUN
    assert all(start % WRITE_RUN == 0 for start, _ in changed)
    assert provider.changed_extents(second, "os", second.disks[0].tracking or "") == []


def test_a_write_behind_the_tracking_s_back_makes_it_say_it_cannot_tell(fleet: LocalFleet) -> None:
    provider = LocalProvider(fleet)
    first = _snapshot(provider)
    with open(fleet.vm_dir("cs/linux") / "os.img", "r+b") as image:  # not through the fleet
        image.write(b"sneaky")
    os.utime(fleet.vm_dir("cs/linux") / "os.img", ns=(1, 1))

    second = _snapshot(provider)

    assert provider.changed_extents(second, "os", first.disks[0].tracking or "") is None


@pytest.mark.parametrize(
    ("vm", "changes", "consistency", "warned"),
    [
        ("cs/linux", {"power_state": "Stopped"}, Consistency.CRASH, False),
        ("cs/linux", {}, Consistency.FILE_SYSTEM, False),
        ("cs/win", {}, Consistency.APPLICATION, False),
        (
            "cs/linux",
            {"freeze_command": "true", "thaw_command": "true"},
            Consistency.APPLICATION,
            False,
        ),
        (
            "cs/linux",
            {"freeze_command": "sh -c 'echo busy >&2; exit 3'"},
            Consistency.FILE_SYSTEM,
            True,
        ),
    ],
    ids=["stopped", "linux-no-hooks", "windows", "linux-hooks", "failing-hook"],
)
def test_consistency_follows_the_seed_s_table(
    fleet: LocalFleet, vm: str, changes: dict[str, str], consistency: Consistency, warned: bool
) -> None:
    fleet.update(vm, **changes)

    snapshot = _snapshot(LocalProvider(fleet), vm)

    assert snapshot.consistency == consistency.value
    assert bool(snapshot.warnings) == warned
    if warned:
        assert (
            "exited 3: busy" in snapshot.warnings[0]
            and "file-system consistent" in snapshot.warnings[0]
        )


def test_a_failed_freeze_falls_back_to_file_system_consistency_naming_why(
    fleet: LocalFleet,
) -> None:
    fleet.faults.add(Fault("freeze-failure", vm="cs/win"))

    snapshot = _snapshot(LocalProvider(fleet), "cs/win")

    assert snapshot.consistency == Consistency.FILE_SYSTEM.value
    assert "freeze-failure" in snapshot.warnings[0]


def test_backup_faults_hang_the_snapshot_fail_the_read_or_slow_it(fleet: LocalFleet) -> None:
    provider = LocalProvider(fleet, sleep=lambda _: None)
    fleet.faults.add(Fault("snapshot-timeout", vm="cs/linux"))
    with pytest.raises(ProviderTimeout):
        provider.take_snapshot("cs/linux", 0.01, lambda: None, GUARD)
    snapshot = _snapshot(provider)
    fleet.faults.add(Fault("backup-internal-error", vm="cs/linux"))
    with pytest.raises(ProviderError, match="backup-internal-error"):
        provider.open_disk(snapshot, "os")
    fleet.faults.add(Fault("transfer-timeout", vm="cs/linux", seconds=0.5))

    assert isinstance(provider.open_disk(snapshot, "os"), SlowReader)


def test_a_backup_of_a_snapshot_taken_while_the_vm_writes_restores_the_snapshot_time_disk(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    provider = LocalProvider(fleet)
    image = fleet.vm_dir("cs/linux") / "os.img"
    before = image.read_bytes()
    snapshot = _snapshot(provider)
    stop = threading.Event()

    def keep_writing() -> None:
        seed = 10
        while not stop.is_set():
            fleet.write_disks("cs/linux", nbytes=GRANULE, seed=seed)
            seed += 1

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        vault = Vault.create(tmp_path / "vault", chunk_size=256 << 10)
        disk = DiskSource("os", reader=provider.open_disk(snapshot, "os"))
        point = backup(vault, BackupRequest("cs/linux", [disk], threads=4))
    finally:
        stop.set()
        writer.join()

    assert image.read_bytes() != before
    assert restored_bytes(vault, point.id, tmp_path) == before
