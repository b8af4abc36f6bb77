"""The local provider's part in a backup: freeze hooks, snapshots, disk readers, tracking.

Consistency follows the seed's table. A stopped VM gives a crash-consistent point. A running
VM with freeze hooks (``freeze_command``/``thaw_command`` in its vm.json, run around the
snapshot), or a Windows VM (whose backup extension freezes through VSS), gives an
application-consistent one; if the freeze fails (the hook exits non-zero, or the
``freeze-failure`` fault fires), the point falls back to file-system consistency and the
warning says why. A running Linux VM without hooks gives a file-system-consistent point.

Faults: ``snapshot-timeout`` (the snapshot hangs past its deadline), ``backup-internal-error``
(reading the snapshot fails), ``transfer-timeout`` (every read of the snapshot takes
``seconds``, 1 by default, so that the transfer runs into its deadline), ``freeze-failure``.
"""

from __future__ import annotations

import json
import secrets
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backup_jobs.models import Consistency, PowerState
from backup_jobs.provider import (
    CommitGuard,
    ProviderError,
    ProviderTimeout,
    Snapshot,
    SnapshotDisk,
)
from backup_jobs.providers.local_disks import SNAPSHOTS, DiskState, DiskStore
from backup_jobs.providers.local_faults import FaultStore
from backup_jobs.vault.source import ImageReader

# A snapshot older than this was left by a backup that died (of any vault); released.
STALE_SNAPSHOT_SECONDS = 24 * 3600
# How long a transfer-timeout fault makes each read take, unless the fault says.
SLOW_READ_SECONDS = 1.0

Thaw = Callable[[], None]


class LocalSnapshots:
    """Snapshots of the VMs of one fleet directory."""

    def __init__(
        self,
        vm_dir: Callable[[str], Path],
        read: Callable[[str], dict[str, Any]],
        faults: FaultStore,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._vm_dir = vm_dir
        self._read = read
        self._faults = faults
        self._sleep = sleep

    def take(
        self, vm_id: str, timeout_seconds: float, heartbeat: Callable[[], None], guard: CommitGuard
    ) -> Snapshot:
        """Freeze, snapshot, thaw; the consistency reached and why it is not better."""
        deadline = time.monotonic() + timeout_seconds
        data = self._read(vm_id)
        if self._faults.consume("snapshot-timeout", vm_id) is not None:
            self._hang(deadline, heartbeat, f"snapshot of {vm_id}")
        consistency, warnings, thaw = self._freeze(vm_id, data, deadline)
        try:
            guard.check()
            store = DiskStore(self._vm_dir(vm_id))
            # The guard's scope holds the VM's lease: its snapshots left here are a dead
            # attempt's, and would make every write save old data for nothing.
            for stale in store.stale_snapshots(time.time() - STALE_SNAPSHOT_SECONDS, guard.scope):
                store.release(stale)
            snap_id = f"snap-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
            disks = [(d["name"], d["file"]) for d in data["disks"]]
            meta = {"vm": vm_id, "consistency": consistency, "scope": guard.scope}
            states = store.snapshot(snap_id, disks, meta)
        finally:
            thaw()
        return Snapshot(
            snap_id,
            vm_id,
            consistency,
            tuple(SnapshotDisk(s.name, s.size, s.token) for s in states),
            tuple(warnings),
        )

    def open_disk(self, snapshot: Snapshot, disk: str) -> ImageReader:
        """A reader of one disk as the snapshot saw it (slowed by a transfer-timeout fault)."""
        if self._faults.consume("backup-internal-error", snapshot.vm_id) is not None:
            raise ProviderError(f"injected fault backup-internal-error reading {snapshot.vm_id}")
        store = DiskStore(self._vm_dir(snapshot.vm_id))
        reader: ImageReader = store.reader(snapshot.id, self._disk_state(snapshot, disk))
        slow = self._faults.consume("transfer-timeout", snapshot.vm_id)
        if slow is not None:
            reader = SlowReader(reader, slow.seconds or SLOW_READ_SECONDS, self._sleep)
        return reader

    def changed(self, snapshot: Snapshot, disk: str, since: str) -> list[tuple[int, int]] | None:
        """Ranges changed between the snapshot with token ``since`` and this one."""
        state = self._disk_state(snapshot, disk)
        return DiskStore(self._vm_dir(snapshot.vm_id)).changed(state.file, since, state.token)

    def release(self, snapshot: Snapshot) -> None:
        """Drop the snapshot (nothing happens if it, or its VM, is gone)."""
        folder = self._vm_dir(snapshot.vm_id)
        if folder.is_dir():
            DiskStore(folder).release(snapshot.id)

    def _disk_state(self, snapshot: Snapshot, disk: str) -> DiskState:
        meta_path = self._vm_dir(snapshot.vm_id) / SNAPSHOTS / snapshot.id / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise ProviderError(f"snapshot {snapshot.id} of {snapshot.vm_id} is gone") from exc
        for entry in meta["disks"]:
            if entry["name"] == disk:
                extents = tuple((int(a), int(b)) for a, b in entry["extents"])
                return DiskState(
                    entry["name"], entry["file"], entry["size"], extents, entry["token"]
                )
        raise ProviderError(f"snapshot {snapshot.id} of {snapshot.vm_id} has no disk {disk}")

    def _freeze(
        self, vm_id: str, data: dict[str, Any], deadline: float
    ) -> tuple[str, list[str], Thaw]:
        """The consistency this snapshot will have, warnings, and how to thaw afterwards."""
        if data["power_state"] != PowerState.RUNNING.value:
            return Consistency.CRASH.value, [], _nothing
        freeze, thaw = data.get("freeze_command"), data.get("thaw_command")
        if not freeze and data["os_type"] != "Windows":
            return Consistency.FILE_SYSTEM.value, [], _nothing
        failed = self._faults.consume("freeze-failure", vm_id)
        why = "the freeze-failure fault fired" if failed else None
        if why is None and freeze:
            why = _run_hook(freeze, self._vm_dir(vm_id), deadline)
        if why is not None:
            warning = (
                f"The application freeze failed on {vm_id} ({why}); the recovery point is "
                "file-system consistent."
            )
            return Consistency.FILE_SYSTEM.value, [warning], _nothing
        folder = self._vm_dir(vm_id)
        return Consistency.APPLICATION.value, [], (lambda: _thaw(thaw, folder, deadline))

    def _hang(self, deadline: float, heartbeat: Callable[[], None], what: str) -> None:
        while time.monotonic() < deadline:
            heartbeat()
            self._sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        raise ProviderTimeout(what)


class SlowReader:
    """An ``ImageReader`` whose every read takes ``seconds`` longer (a slow transfer)."""

    def __init__(self, inner: ImageReader, seconds: float, sleep: Callable[[float], None]) -> None:
        self._inner = inner
        self._seconds = seconds
        self._sleep = sleep

    @property
    def size(self) -> int:
        """The inner reader's size."""
        return self._inner.size

    def data_extents(self) -> list[tuple[int, int]]:
        """The inner reader's extents."""
        return self._inner.data_extents()

    def pread(self, length: int, offset: int) -> bytes:
        """A slow read."""
        self._sleep(self._seconds)
        return self._inner.pread(length, offset)

    def close(self) -> None:
        """Close the inner reader."""
        self._inner.close()


def _run_hook(command: str, cwd: Path, deadline: float) -> str | None:
    """Run a freeze hook; why it failed, or None."""
    try:
        result = subprocess.run(
            shlex.split(command),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=max(1.0, deadline - time.monotonic()),
            check=False,
        )
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        return f"{command!r} could not run: {exc}"
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
        return f"{command!r} exited {result.returncode}: {last[0]}".rstrip(": ")
    return None


def _thaw(command: str | None, cwd: Path, deadline: float) -> None:
    """Run the thaw hook, if there is one; a failing thaw does not spoil the snapshot."""
    if command:
        _run_hook(command, cwd, deadline + 60)


def _nothing() -> None:
    """No thaw to do."""
