"""Restoring as a new VM into a local fleet: disks staged in the fleet, then a VM made of them.

The restore writes the disks into ``<fleet>/.restores/<job id>/`` (same file system as the
VMs, so moving them is a rename). Creating the VM renames that folder to the VM's and writes
its ``vm.json`` last: discovery sees the VM only once it is whole.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Any

from backup_jobs.models import VM, PowerState
from backup_jobs.provider import ProviderConflict, ProviderStorageError

STAGING_DIR = ".restores"
IMAGE_SUFFIX = ".img"


def staging_dir(root: Path, key: str) -> Path:
    """The staging folder of restore ``key`` under the fleet ``root``."""
    if not key or "/" in key or key in (".", ".."):
        raise ValueError(f"a staging key is one path component, not {key!r}")
    return root / STAGING_DIR / key


def fresh_staging(root: Path, key: str) -> Path:
    """An empty staging folder (what an earlier attempt left is removed)."""
    folder = staging_dir(root, key)
    try:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    except OSError as exc:
        raise ProviderStorageError(f"{exc.filename or folder}: {exc.strerror}") from exc
    return folder


def vm_record(vm_id: str, template: VM, disks: list[str], origin: dict[str, str]) -> dict[str, Any]:
    """The ``vm.json`` of a VM restored from ``template``'s point: running, no extension yet."""
    cloud_service, name = vm_id.split("/")
    os_disk = template.os_disk.name if template.os_disk.name in disks else disks[0]
    ordered = [os_disk, *(d for d in disks if d != os_disk)]
    return {
        "version": 1,
        "name": name,
        "cloud_service": cloud_service,
        "region": template.region,
        "power_state": PowerState.RUNNING.value,
        "os_type": template.os_type,
        "agent_version": template.agent_version,
        "nics": template.nics,
        "load_balancer": template.load_balancer,
        "storage_tier": template.storage_tier,
        "disks": [
            {"name": d, "file": d + IMAGE_SUFFIX, "kind": "os" if d == os_disk else "data"}
            for d in ordered
        ],
        "extension": {"installed": False, "version": None},
        "freeze_command": None,
        "thaw_command": None,
        "restored_from": dict(origin),
    }


def move_into_place(staging: Path, folder: Path) -> list[str]:
    """Rename the staged disks' folder to the VM's; the disk names it holds.

    ``ProviderConflict`` if the VM's folder exists (a VM made meanwhile keeps its files).
    """
    disks = sorted(p.name.removesuffix(IMAGE_SUFFIX) for p in staging.glob("*" + IMAGE_SUFFIX))
    if not disks:
        raise ProviderStorageError(f"{staging}: the restore staged no disk image")
    if folder.exists():
        raise ProviderConflict(f"the fleet has a VM folder {folder} already")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging, folder)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise ProviderConflict(f"the fleet has a VM folder {folder} already") from exc
        raise ProviderStorageError(f"{exc.filename or folder}: {exc.strerror}") from exc
    return disks


def undo_move(folder: Path) -> None:
    """Remove a VM folder whose ``vm.json`` could not be written (nothing else uses it)."""
    with contextlib.suppress(OSError):
        shutil.rmtree(folder)
