"""The libvirt provider with a real QEMU guest agent: a small Linux guest (tests/libvirt/guest.py).

The guest mounts an ext4 disk (``vda``) and runs qemu-ga with an fsfreeze hook that logs each
freeze and thaw; tests write into the file system with ``guest-exec``. One guest serves the
session: each test leaves it running, thawed, with the hook willing.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from backup_jobs import errors
from backup_jobs.backups import run_backup
from backup_jobs.inventory import register
from backup_jobs.models import JobStatus, Operation
from tests.libvirt.guest import BLANK_DISK_MIB, DATA_DISK_MIB, Guest
from tests.libvirt.host import virsh
from tests.libvirt.usecases import content, context, libvirt_provider, restored_file

MiB = 1 << 20
CHUNK = 4 * MiB
# ext4's primary superblock: the freeze writes it clean (no journal recovery needed), the thaw
# marks it in use again, so the disk after a backup differs from the point in these bytes only.
SUPERBLOCK = slice(1024, 2048)
LIBVIRT = {"provider": "libvirt"}


def _vm_id(guest: Guest) -> str:
    return f"{guest.domain.split('.')[0]}/{guest.domain}"


def _hook_log(guest: Guest) -> list[str]:
    return guest.run("cat /run/fsfreeze.log 2>/dev/null; true").split()


def _file_in(image: Path, path: str) -> bytes | None:
    """A file of the ext4 file system in a raw image (debugfs, nothing mounted); None if absent."""
    found = subprocess.run(
        ["debugfs", "-R", f"cat {path}", str(image)], capture_output=True, check=True, timeout=60
    )
    return found.stdout if b"File not found" not in found.stderr else None


def test_register_of_a_domain_with_a_responding_agent_records_the_agents_version(
    agent_guest: Guest, tmp_path: Path
) -> None:
    vm_id = _vm_id(agent_guest)
    version = agent_guest.agent("guest-info")
    assert isinstance(version, dict)

    done = register(context(tmp_path, vm_id, Operation.REGISTER, LIBVIRT))

    vm = libvirt_provider(tmp_path).get_vm(vm_id)
    assert done["registration"] == "Registered"
    assert vm is not None and vm.extension_installed
    assert vm.agent_version == version["version"] and str(vm.agent_version).startswith("7.")
    assert f'agent-version="{version["version"]}"' in virsh(
        "metadata", agent_guest.domain, "https://backup-jobs.dev/libvirt/1"
    )


def test_register_refuses_an_agent_older_than_the_configured_minimum(
    agent_guest: Guest, tmp_path: Path
) -> None:
    ctx = context(
        tmp_path,
        _vm_id(agent_guest),
        Operation.REGISTER,
        {**LIBVIRT, "libvirt_min_agent_version": "99.0"},
    )

    with pytest.raises(errors.GuestAgentCertificateNotFound) as raised:
        register(ctx)

    assert "is older than 99.0" in raised.value.message


def test_a_backup_of_the_agent_guest_freezes_around_the_snapshot_and_is_fs_consistent(
    agent_guest: Guest, tmp_path: Path
) -> None:
    before = _hook_log(agent_guest)
    ctx = context(tmp_path, _vm_id(agent_guest), settings=LIBVIRT)

    done = run_backup(ctx)

    assert done["consistency"] == "FileSystemConsistent"
    assert 0 < done["freeze_seconds"] < 30 and ctx.warnings == []
    assert _hook_log(agent_guest)[len(before) :] == ["freeze", "thaw"]
    assert agent_guest.agent("guest-fsfreeze-status") == "thawed"
    assert virsh("domstate", agent_guest.domain).strip() == "running"


def test_a_failing_freeze_falls_back_to_crash_consistent_with_a_warning(
    agent_guest: Guest, tmp_path: Path
) -> None:
    agent_guest.run("touch /run/fail-freeze")
    ctx = context(tmp_path, _vm_id(agent_guest), settings=LIBVIRT)
    try:
        done = run_backup(ctx)
    finally:
        agent_guest.run("rm -f /run/fail-freeze")

    item = ctx.catalog.get_item("v", _vm_id(agent_guest))
    assert done["consistency"] == "CrashConsistent" and "freeze_seconds" not in done
    assert len(ctx.warnings) == 1 and "fsfreeze hook" in ctx.warnings[0]
    assert item is not None and item.last_backup is not None
    assert item.last_backup.status == JobStatus.COMPLETED_WITH_WARNINGS
    assert agent_guest.agent("guest-fsfreeze-status") == "thawed"


def test_writes_in_the_guest_then_an_incremental_reads_only_changed_chunks_and_points_restore(
    agent_guest: Guest, tmp_path: Path
) -> None:
    vm_id = _vm_id(agent_guest)
    agent_guest.run("rm -f /mnt/data && sync")
    first = run_backup(context(tmp_path, vm_id, settings=LIBVIRT))
    at_first = content(agent_guest.image)
    md5 = agent_guest.run(
        "dd if=/dev/urandom of=/mnt/data bs=1M count=2 2>/dev/null && sync && md5sum /mnt/data"
    ).split()[0]
    second = run_backup(context(tmp_path, vm_id, settings=LIBVIRT))
    at_second = content(agent_guest.image)

    chunks = (DATA_DISK_MIB + BLANK_DISK_MIB) * MiB // CHUNK
    # 2 MiB of file data, its inode and bitmaps, the journal: a few chunks, not the disks' 20.
    assert 1 <= second["chunks_read"] <= 5 < chunks == second["chunks"]
    assert second["consistency"] == first["consistency"] == "FileSystemConsistent"
    images = [restored_file(tmp_path, p["recovery_point_id"]) for p in (first, second)]
    for image, now in zip(images, (at_first, at_second), strict=True):
        data = image.read_bytes()
        assert len(data) == len(now) == DATA_DISK_MIB * MiB
        assert data[: SUPERBLOCK.start] == now[: SUPERBLOCK.start]
        assert data[SUPERBLOCK.stop :] == now[SUPERBLOCK.stop :]
    assert _file_in(images[0], "/data") is None
    written = _file_in(images[1], "/data")
    assert written is not None and hashlib.md5(written).hexdigest() == md5  # noqa: S324
