"""The ``local`` provider: a fleet of VMs described on disk, with real (sparse) disk images.

Layout: ``<fleet>/<cloud_service>/<name>/vm.json`` plus the VM's disk image files, and
``<fleet>/faults.json`` for injected faults. ``LocalFleet`` is the admin side (create, start,
stop, delete, agents, disks); ``LocalProvider`` is the provider port over it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from backup_jobs.errors import ConfigurationError, VMNotFoundInInventory
from backup_jobs.inventory import VMIndex
from backup_jobs.models import VM, Disk, PowerState
from backup_jobs.provider import (
    CommitGuard,
    Inventory,
    ProviderError,
    ProviderFenced,
    ProviderStorageError,
    ProviderTimeout,
    Snapshot,
    Unreadable,
)
from backup_jobs.providers.local_backup import LocalSnapshots
from backup_jobs.providers.local_disks import DiskStore, scribble
from backup_jobs.providers.local_faults import Fault, FaultStore
from backup_jobs.providers.local_restore import (
    fresh_staging,
    move_into_place,
    staging_dir,
    undo_move,
    vm_record,
)
from backup_jobs.vault.source import ImageReader

VM_FILE = "vm.json"
VM_FILE_VERSION = 1
# The largest disk image the fleet creates: 4 TiB, beyond the seed's largest VM disk; a larger
# size is a typo, and file systems refuse files near 16 TiB anyway.
MAX_DISK_BYTES = 4 << 40
# A VM agent version is 2 to 4 dot-separated integers, like the seed's 2.6.1198.718.
# Each part at most 9 digits, as in Windows file versions (16 bits a part) and then some.
AGENT_VERSION = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9}){1,3}")
AGENT_VERSION_FORM = "2 to 4 dot-separated integers of up to 9 digits, e.g. 2.7.1198.800"
# Fleet administration reads the fleet directory, not the vault: discovery would not help.
FLEET_LIST_ACTION = "List the fleet's VMs with `backup-jobs fleet list`."
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "cloud_service": str,
    "region": str,
    "power_state": str,
    "os_type": str,
    "agent_version": (str, type(None)),
    "nics": int,
    "load_balancer": bool,
    "storage_tier": str,
    "disks": list,
}


def agent_version(text: str) -> str:
    """``text`` if it is a VM agent version; a ``ConfigurationError`` naming the form if not."""
    if not AGENT_VERSION.fullmatch(text):
        raise ConfigurationError(
            detail=f"VM agent version {text!r} is not valid; accepted: {AGENT_VERSION_FORM}"
        )
    return text


class LocalFleet:
    """A fleet directory: read and change its VMs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.faults = FaultStore(root)

    def exists(self) -> bool:
        """True if the fleet directory exists."""
        return self.root.is_dir()

    def require(self) -> None:
        """Raise a ``ConfigurationError`` saying what to do if the fleet directory is missing."""
        if not self.exists():
            raise ConfigurationError(
                detail=(
                    f"the fleet directory {self.root} does not exist; create one with "
                    "`backup-jobs fleet create-demo` or set BACKUP_JOBS_FLEET_DIR"
                )
            )

    def vm_files(self) -> list[Path]:
        """Every ``vm.json`` of the fleet, sorted."""
        self.require()
        return sorted(self.root.glob(f"*/*/{VM_FILE}"))

    def load(self, path: Path) -> dict[str, Any]:
        """Read and check one ``vm.json``; errors name the file and the field."""
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(detail=f"{path} cannot be read as JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigurationError(detail=f"{path} must hold a JSON object")
        for name, kind in _REQUIRED.items():
            if name not in data:
                raise ConfigurationError(detail=f"{path}: field {name!r} is missing")
            if not isinstance(data[name], kind):
                raise ConfigurationError(detail=f"{path}: field {name!r} has the wrong type")
        if data["power_state"] not in {p.value for p in PowerState}:
            raise ConfigurationError(
                detail=f"{path}: field 'power_state' must be Running or Stopped"
            )
        for disk in data["disks"]:
            if not isinstance(disk, dict) or not {"name", "file", "kind"} <= disk.keys():
                raise ConfigurationError(
                    detail=f"{path}: field 'disks' entries need name, file and kind"
                )
        version = data["agent_version"]
        if version is not None and not AGENT_VERSION.fullmatch(version):
            raise ConfigurationError(
                detail=f"{path}: field 'agent_version' is {version!r}; it must be "
                f"{AGENT_VERSION_FORM}, or null for no agent"
            )
        return data

    def resolve(self, name: str) -> str:
        """The id of the fleet VM called ``name``: ``cloud_service/name``, or a unique bare name."""
        vms = [VM(path.parent.name, path.parent.parent.name, "") for path in self.vm_files()]
        try:
            return VMIndex(vms, f"the fleet {self.root}").resolve(name).id
        except VMNotFoundInInventory as exc:
            raise VMNotFoundInInventory(name, exc.detail, FLEET_LIST_ACTION) from None

    def vm_dir(self, vm_id: str) -> Path:
        """The folder of a VM given as ``cloud_service/name``."""
        parts = vm_id.split("/")
        if len(parts) != 2 or any(part in ("", ".", "..") for part in parts):
            raise VMNotFoundInInventory(vm_id, ": name fleet VMs as cloud_service/name.")
        return self.root / vm_id

    def read(self, vm_id: str) -> dict[str, Any]:
        """The ``vm.json`` of one VM."""
        path = self.vm_dir(vm_id) / VM_FILE
        if not path.exists():
            self.require()
            raise VMNotFoundInInventory(vm_id, f" to the fleet {self.root}.", FLEET_LIST_ACTION)
        return self.load(path)

    def write(self, data: dict[str, Any]) -> None:
        """Write one ``vm.json`` atomically; ``ProviderStorageError`` naming the path if refused."""
        folder = self.root / data["cloud_service"] / data["name"]
        tmp = folder / (VM_FILE + ".tmp")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=2) + "\n")
            os.replace(tmp, folder / VM_FILE)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise ProviderStorageError(f"{exc.filename or folder}: {exc.strerror}") from exc

    def commit_extension(self, vm_id: str, token: int, scope: str) -> None:
        """Record the installed extension, unless a job with a newer fencing token already did.

        The newest token of each scope (vault) is kept in ``vm.json`` (the fleet's own
        fencing): a worker that was frozen past its lease and resumes cannot overwrite what a
        newer attempt wrote. Tokens of different vaults are never compared: each vault counts
        its own, so registering a VM in a second vault is not fenced by the first.
        """
        with self._vm_locked(vm_id):
            data = self.read(vm_id)
            tokens = _fencing_tokens(data.get("extension"))
            seen = tokens.get(scope, 0)
            if seen > token:
                raise ProviderFenced(
                    f"{vm_id}: token {token} of vault {scope} is older than {seen}"
                )
            data["extension"] = {
                "installed": True,
                "version": "1.0.0",
                "installed_at": time.time(),
                "fencing_tokens": {**tokens, scope: token},
            }
            self.write(data)

    @contextmanager
    def _vm_locked(self, vm_id: str) -> Iterator[None]:
        """An exclusive lock on one VM's folder, across processes."""
        try:
            handle = os.open(self.vm_dir(vm_id), os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError as exc:
            raise VMNotFoundInInventory(vm_id, f" to the fleet {self.root}.") from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            os.close(handle)

    def update(self, name: str, **changes: Any) -> dict[str, Any]:
        """Change fields of one VM (``cloud_service/name`` or a unique name); write it back."""
        data = self.read(self.resolve(name))
        data.update(changes)
        self.write(data)
        return data

    def create_vm(
        self,
        cloud_service: str,
        name: str,
        region: str,
        *,
        os_type: str = "Linux",
        agent_version: str | None = "2.7.1198.800",
        os_disk_bytes: int = 64 << 20,
        data_disks: int = 0,
        **properties: Any,
    ) -> dict[str, Any]:
        """Create a VM folder with its ``vm.json`` and sparse disk images."""
        data: dict[str, Any] = {
            "version": VM_FILE_VERSION,
            "name": name,
            "cloud_service": cloud_service,
            "region": region,
            "power_state": PowerState.RUNNING.value,
            "os_type": os_type,
            "agent_version": agent_version,
            "nics": 1,
            "load_balancer": False,
            "storage_tier": "Standard",
            "disks": [],
            "extension": {"installed": False, "version": None},
            "freeze_command": None,
            "thaw_command": None,
        }
        data.update(properties)
        self.write(data)
        self._add_disk(data, "os", "os", os_disk_bytes)
        for _ in range(data_disks):
            self._add_disk(data, f"data{len(data['disks'])}", "data", 16 << 20)
        self.write(data)
        return data

    def add_data_disks(self, name: str, count: int, size_bytes: int = 16 << 20) -> dict[str, Any]:
        """Attach ``count`` new sparse data disks: all of them, or none if one cannot be made."""
        if not 1 <= size_bytes <= MAX_DISK_BYTES:
            raise ConfigurationError(
                detail=f"a disk of {size_bytes} bytes is out of range; accepted: 1 to "
                f"{MAX_DISK_BYTES} bytes (4 TiB)"
            )
        data = self.read(self.resolve(name))
        first = len(data["disks"])
        try:
            for _ in range(count):
                self._add_disk(data, f"data{len(data['disks'])}", "data", size_bytes)
        except ConfigurationError:
            folder = self.root / data["cloud_service"] / data["name"]
            for disk in data["disks"][first:]:
                (folder / disk["file"]).unlink(missing_ok=True)
            raise
        self.write(data)
        return data

    def write_disks(
        self,
        name: str,
        disk: str | None = None,
        *,
        nbytes: int | None = None,
        percent: float | None = None,
        seed: int | None = None,
    ) -> dict[str, int]:
        """Write random data at random places of a VM's disks (one, or all): bytes per disk.

        As a running VM would; snapshots taken before keep what they saw, and the disk's
        changed-block tracking records the ranges.
        """
        vm_id = self.resolve(name)
        data = self.read(vm_id)
        disks = [d for d in data["disks"] if disk in (None, d["name"])]
        if not disks:
            names = ", ".join(d["name"] for d in data["disks"])
            raise ConfigurationError(
                detail=f"{vm_id} has no disk {disk!r}; its disks: {names}",
                action="Name one of its disks, or leave --disk out to write to every disk.",
            )
        store, rng = DiskStore(self.vm_dir(vm_id)), random.Random(seed)
        written = {}
        for entry in disks:
            size = (self.vm_dir(vm_id) / entry["file"]).stat().st_size
            wanted = nbytes if nbytes is not None else int(size * (percent or 0) / 100)
            ranges = scribble(store, entry["file"], size, wanted, rng)
            written[entry["name"]] = sum(end - start for start, end in ranges)
        return written

    def delete_vm(self, name: str) -> str:
        """Delete a VM and its disks from the fleet; returns its id."""
        vm_id = self.resolve(name)
        shutil.rmtree(self.vm_dir(vm_id))
        return vm_id

    def arm(self, fault: Fault) -> Fault:
        """Arm a fault in this (existing) fleet, for one of its VMs (by id) or for any VM."""
        self.require()
        if fault.vm is not None:
            fault = replace(fault, vm=self.resolve(fault.vm))
        self.faults.add(fault)
        return fault

    def _add_disk(self, data: dict[str, Any], name: str, kind: str, size_bytes: int) -> None:
        """Create one sparse image and list it in ``data``; a failed image leaves no file."""
        file = f"{name}.img"
        path = self.root / data["cloud_service"] / data["name"] / file
        try:
            with open(path, "wb") as image:
                # A recognisable first sector, then a hole: a real, sparse raw image.
                sector = f"{data['cloud_service']}/{data['name']}:{name}".encode()
                image.write(sector.ljust(512, b"\0"))
                image.truncate(size_bytes)
        except OSError as exc:
            path.unlink(missing_ok=True)
            if exc.errno != errno.EFBIG:  # full, read-only, no permission: the storage refused
                raise ProviderStorageError(f"{path}: {exc.strerror or exc}") from exc
            raise ConfigurationError(
                detail=f"cannot create the disk image {path}: {exc.strerror or exc}",
                action="Check the free space and the file-size limit of the fleet directory's "
                "file system, or ask for smaller disks.",
            ) from exc
        data["disks"].append({"name": name, "file": file, "kind": kind})


class LocalProvider:
    """The provider port over a ``LocalFleet``."""

    def __init__(self, fleet: LocalFleet, sleep: Callable[[float], None] = time.sleep) -> None:
        self.fleet = fleet
        self._sleep = sleep
        self._snapshots = LocalSnapshots(fleet.vm_dir, fleet.read, fleet.faults, sleep)

    def take_snapshot(
        self,
        vm_id: str,
        timeout_seconds: float,
        heartbeat: Callable[[], None],
        guard: CommitGuard,
    ) -> Snapshot:
        """Freeze if the VM can, snapshot its disks copy-on-write, thaw."""
        return self._snapshots.take(vm_id, timeout_seconds, heartbeat, guard)

    def open_disk(self, snapshot: Snapshot, disk: str) -> ImageReader:
        """A reader of one disk as the snapshot saw it."""
        return self._snapshots.open_disk(snapshot, disk)

    def changed_extents(
        self, snapshot: Snapshot, disk: str, since: str
    ) -> list[tuple[int, int]] | None:
        """Ranges of ``disk`` changed since the snapshot whose token was ``since``."""
        return self._snapshots.changed(snapshot, disk, since)

    def release_snapshot(self, snapshot: Snapshot) -> None:
        """Drop a snapshot."""
        self._snapshots.release(snapshot)

    def list_vms(self) -> Inventory:
        """Every VM of the fleet; a VM whose description cannot be read is named, not fatal."""
        fault = self.fleet.faults.consume("discovery-internal-error")
        if fault is not None:
            raise ProviderError("injected fault discovery-internal-error")
        slow = self.fleet.faults.consume("discovery-slow")
        if slow is not None:
            self._sleep(slow.seconds)
        inventory = Inventory([])
        for path in self.fleet.vm_files():
            try:
                inventory.vms.append(self._to_vm(path.parent, self.fleet.load(path)))
            except (ConfigurationError, ProviderError) as exc:
                vm_id = "/".join(path.parent.parts[-2:])
                reason = exc.detail if isinstance(exc, ConfigurationError) else str(exc)
                inventory.unreadable.append(Unreadable(vm_id, str(path), reason))
        return inventory

    def get_vm(self, vm_id: str) -> VM | None:
        """One VM, or None if it is gone."""
        path = self.fleet.vm_dir(vm_id) / VM_FILE
        if not path.exists():
            return None
        return self._to_vm(path.parent, self.fleet.load(path))

    def install_extension(
        self,
        vm_id: str,
        timeout_seconds: float,
        heartbeat: Callable[[], None],
        guard: CommitGuard,
    ) -> None:
        """Install the extension; an injected hang or slowness runs into the deadline."""
        hang = self.fleet.faults.consume("install-agent-timeout", vm_id)
        slow = self.fleet.faults.consume("install-slow", vm_id) if hang is None else None
        duration = float("inf") if hang else (slow.seconds if slow else 0.0)
        deadline = time.monotonic() + timeout_seconds
        finish = time.monotonic() + duration
        while time.monotonic() < finish:
            heartbeat()
            if time.monotonic() >= deadline:
                raise ProviderTimeout(f"install of the backup extension on {vm_id}")
            self._sleep(min(0.2, max(0.0, min(finish, deadline) - time.monotonic())))
        guard.check()
        self.fleet.commit_extension(vm_id, guard.token, guard.scope)

    def restore_staging(self, key: str) -> Path:
        """An empty folder in the fleet for the disks of a VM a restore creates."""
        self.fleet.require()
        return fresh_staging(self.fleet.root, key)

    def discard_staging(self, key: str) -> None:
        """Remove a staging folder (idempotent)."""
        shutil.rmtree(staging_dir(self.fleet.root, key), ignore_errors=True)

    def create_restored_vm(
        self, vm_id: str, template: VM, staging: Path, guard: CommitGuard, origin: dict[str, str]
    ) -> VM:
        """Move the staged disks into a new VM folder, then write its ``vm.json`` (last)."""
        folder = self.fleet.vm_dir(vm_id)
        guard.check()
        disks = move_into_place(staging, folder)
        try:
            data = vm_record(vm_id, template, disks, origin)
            self.fleet.write(data)
        except BaseException:
            undo_move(folder)
            raise
        return self._to_vm(folder, data)

    @staticmethod
    def _to_vm(folder: Path, data: dict[str, Any]) -> VM:
        disks = [
            Disk(d["name"], _size(folder / d["file"]), str(folder / d["file"]))
            for d in data["disks"]
        ]
        os_disks = [d for d, raw in zip(disks, data["disks"], strict=True) if raw["kind"] == "os"]
        data_disks = [d for d, raw in zip(disks, data["disks"], strict=True) if raw["kind"] != "os"]
        return VM(
            name=data["name"],
            cloud_service=data["cloud_service"],
            region=data["region"],
            power_state=PowerState(data["power_state"]),
            os_type=data["os_type"],
            agent_version=data["agent_version"],
            nics=data["nics"],
            load_balancer=data["load_balancer"],
            storage_tier=data["storage_tier"],
            os_disk=os_disks[0] if os_disks else Disk("os", 0),
            data_disks=tuple(data_disks),
            extension_installed=bool(data.get("extension", {}).get("installed")),
        )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise ProviderError(f"disk image {path} is missing") from exc


def _fencing_tokens(extension: object) -> dict[str, int]:
    """The newest fencing token per vault recorded with an extension (unreadable ones: none)."""
    tokens = extension.get("fencing_tokens") if isinstance(extension, dict) else None
    if not isinstance(tokens, dict):
        return {}
    return {
        str(scope): token
        for scope, token in tokens.items()
        if isinstance(token, int) and not isinstance(token, bool)
    }
