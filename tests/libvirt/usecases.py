"""Use-cases on the libvirt provider for the tests: a job context, a disk's content, a restore.

The use-cases (register, backup) run with a memory catalog, a frozen clock and a real vault in
the test's folder, as tests/unit/test_backups.py runs them on the local provider.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backup_jobs import jobs
from backup_jobs.context import JobContext
from backup_jobs.items import ProtectedItem, ProtectionState
from backup_jobs.models import Operation, VaultConfig
from backup_jobs.providers.libvirt import LibvirtProvider
from backup_jobs.settings import Settings, Timeouts
from backup_jobs.testing import FrozenClock, MemoryCatalog
from backup_jobs.vault import RestoreRequest, Vault, restore
from tests.libvirt.host import URI

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def libvirt_provider(tmp_path: Path) -> LibvirtProvider:
    """A provider over the session's libvirt host, restoring new VMs under ``tmp_path``."""
    return LibvirtProvider(URI, "r1", tmp_path / "images")


def context(
    tmp_path: Path,
    vm: str,
    operation: Operation = Operation.BACKUP,
    settings: dict[str, Any] | None = None,
    **timeouts: int,
) -> JobContext:
    """A running attempt of a job on ``vm`` with the vault in ``tmp_path/vault``."""
    catalog, clock = MemoryCatalog(), FrozenClock(T0)
    catalog.put_item(ProtectedItem("v", vm, "nightly", ProtectionState.PENDING))
    job = jobs.new_job("v", operation, vm, vm, 3, clock)
    catalog.create_job(job, T0)
    started = jobs.begin_attempt(catalog, job.id, 1, "t", 60, 900, clock)
    assert started is not None
    changes = settings or {}
    config = Settings(vault_dir=tmp_path / "vault", timeouts=Timeouts(**timeouts), **changes)
    vault = VaultConfig("v", "r1", "libvirt", URI, str(tmp_path / "vault"))
    return JobContext(
        started.job,
        started.fence,
        vault,
        catalog,
        libvirt_provider(tmp_path),
        config,
        lambda: None,
        clock=clock,
    )


def content(image: Path) -> bytes:
    """A disk's content now, read beside the running domain (-U: no lock taken)."""
    raw = image.with_suffix(".now")
    subprocess.run(
        ["qemu-img", "convert", "-U", "-O", "raw", str(image), str(raw)], check=True, timeout=60
    )
    try:
        return raw.read_bytes()
    finally:
        raw.unlink()


def restored_file(tmp_path: Path, point: str, disk: str = "vda") -> Path:
    """Restore ``point`` of the vault in ``tmp_path``; the path of ``disk``'s raw image."""
    out = tmp_path / "out" / point
    restore(Vault.open(tmp_path / "vault"), RestoreRequest(point, out, tmp_path))
    return out / f"{disk}.img"


def restored(tmp_path: Path, point: str, disk: str = "vda") -> bytes:
    """Restore ``point``; ``disk``'s content."""
    return restored_file(tmp_path, point, disk).read_bytes()
