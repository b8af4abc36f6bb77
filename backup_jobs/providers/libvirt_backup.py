"""The libvirt provider's part in a backup: freeze, pull-mode backup jobs, checkpoints, readers.

**Running domain.** The guest agent freezes the guest's file systems
(``guest-fsfreeze-freeze``) when it answers; then one pull-mode backup job starts
(``virDomainBackupBegin``), which fixes the point in time of every disk and exports it over
NBD on a Unix socket, and creates a checkpoint (a dirty bitmap per qcow2 disk); then the guest
thaws at once: the freeze lasts only as long as starting the job, and is reported with its
duration. The backup reads the exports while the guest runs on (QEMU copies old blocks to a
scratch file before the guest overwrites them).

Consistency: frozen → ``FileSystemConsistent``; no agent channel → ``CrashConsistent``; an
agent that does not answer or whose freeze fails → ``CrashConsistent`` with a warning saying
why (the job ends ``CompletedWithWarnings``).

**Incremental.** The job is incremental from the domain's newest checkpoint of ours (named
``bj-<time>``), so QEMU exports the dirty bitmap since then; ``changed`` answers only when the
vault's base point is that checkpoint, otherwise (a failed backup in between, another vault,
the checkpoint deleted) it answers None and the whole disk is read. A domain whose checkpoint
chain libvirt refuses gets a full backup job instead. The newest ``KEEP_CHECKPOINTS`` are kept.

**Stopped domain.** Its image files are read directly: raw as they are, other formats through
``qemu-img convert`` into a raw scratch copy (while the copy exists, qemu-img's shared lock
keeps the domain from starting and writing under it). Always a full, crash-consistent read.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from backup_jobs.models import Consistency
from backup_jobs.provider import CommitGuard, ProviderError, Snapshot, SnapshotDisk
from backup_jobs.providers.libvirt_api import AgentNoAnswer, AgentNotConfigured, Libvirt
from backup_jobs.providers.libvirt_domains import (
    DomainDisk,
    backup_xml,
    checkpoint_xml,
    dirty_bitmap,
    parse_domain,
)
from backup_jobs.providers.nbd import NbdError, NbdImage
from backup_jobs.vault.source import FileImage, ImageReader

CHECKPOINT_PREFIX = "bj-"
# Checkpoints kept per domain: each is a dirty bitmap QEMU updates on every write; a few cover
# a failed backup or two without letting the bitmaps pile up.
KEEP_CHECKPOINTS = 4
# How long the guest agent may take to freeze the guest's file systems before we give up.
FREEZE_TIMEOUT_SECONDS = 60
# Our NBD sockets live in a fresh directory of the system temp dir (QEMU runs as another user
# and must create the socket there): writable, not listable, with an unguessable name.
SOCKET_DIR_PREFIX = "backup-jobs-nbd-"
SOCKET_DIR_MODE = 0o733
# qemu-img convert of a stopped domain's disk: generous, it copies the whole disk.
CONVERT_TIMEOUT_SECONDS = 6 * 3600


@dataclass(frozen=True)
class _Running:
    """A backup job this process started: where its exports are, what it is incremental from."""

    domain: str
    folder: Path
    socket: str
    base: str | None
    backup: str
    checkpoint: str
    tracked: frozenset[str]


@dataclass(frozen=True)
class _Offline:
    """A stopped domain's disks, as image files (originals or raw scratch copies)."""

    folder: Path
    files: dict[str, Path]


class LibvirtBackups:
    """Snapshots of the domains of one libvirt connection (this process's running jobs)."""

    def __init__(self, api: Libvirt, domain_of: Callable[[str], str]) -> None:
        self._api = api
        self._domain_of = domain_of
        self._live: dict[str, _Running | _Offline] = {}

    def take(self, vm_id: str, guard: CommitGuard) -> Snapshot:
        """Freeze if the agent answers, start the backup job (or copy a stopped domain), thaw."""
        domain = self._domain_of(vm_id)
        view = parse_domain(self._api.xml(domain))
        snap_id = f"snap-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
        guard.check()
        if not self._api.is_running(domain):
            return self._take_offline(snap_id, vm_id, list(view.disks))
        consistency, warnings, thaw = self._freeze(domain, view.agent_channel)
        try:
            running = self._begin(domain, list(view.disks))
        finally:
            freeze_seconds = thaw()
        self._live[snap_id] = running
        disks = tuple(
            SnapshotDisk(
                d.target,
                self._api.capacity(domain, d.target),
                running.checkpoint if d.target in running.tracked else None,
            )
            for d in view.disks
        )
        return Snapshot(snap_id, vm_id, consistency, disks, tuple(warnings), freeze_seconds)

    def open_disk(self, snapshot: Snapshot, disk: str) -> ImageReader:
        """A reader of one disk as the snapshot saw it."""
        state = self._state(snapshot)
        try:
            if isinstance(state, _Offline):
                return FileImage(state.files[disk])
            return NbdImage(state.socket, disk, dirty_bitmap(state.backup, disk))
        except (OSError, KeyError, NbdError) as exc:
            raise ProviderError(f"reading disk {disk} of {snapshot.vm_id}: {exc}") from exc

    def changed(self, snapshot: Snapshot, disk: str, since: str) -> list[tuple[int, int]] | None:
        """The dirty ranges of ``disk`` when the job is incremental from ``since``, else None."""
        state = self._state(snapshot)
        if not isinstance(state, _Running) or state.base != since:
            return None
        bitmap = dirty_bitmap(state.backup, disk)
        if bitmap is None:
            return None
        try:
            image = NbdImage(state.socket, disk, bitmap)
            try:
                return image.dirty_extents()
            finally:
                image.close()
        except NbdError as exc:
            raise ProviderError(f"dirty blocks of {disk} of {snapshot.vm_id}: {exc}") from exc

    def release(self, snapshot: Snapshot) -> None:
        """End the backup job (or drop the scratch copies); idempotent."""
        state = self._live.pop(snapshot.id, None)
        if state is None:
            return
        if isinstance(state, _Running):
            with contextlib.suppress(ProviderError):
                if self._api.backup_xml(state.domain) is not None:
                    self._api.abort_job(state.domain)
        shutil.rmtree(state.folder, ignore_errors=True)

    def _state(self, snapshot: Snapshot) -> _Running | _Offline:
        state = self._live.get(snapshot.id)
        if state is None:
            raise ProviderError(f"snapshot {snapshot.id} of {snapshot.vm_id} is gone")
        return state

    def _freeze(
        self, domain: str, channel: bool
    ) -> tuple[str, list[str], Callable[[], float | None]]:
        """Freeze through the agent: the consistency, warnings, and the thaw (freeze seconds)."""
        if not channel:
            return Consistency.CRASH.value, [], lambda: None
        try:
            started = time.monotonic()
            self._api.agent(domain, "guest-fsfreeze-freeze", FREEZE_TIMEOUT_SECONDS)
        except (AgentNoAnswer, AgentNotConfigured, ProviderError) as exc:
            self._thaw(domain)  # a freeze that failed half way leaves nothing frozen
            warning = (
                f"The file-system freeze failed on {domain} ({exc}); the recovery point is "
                "crash consistent."
            )
            return Consistency.CRASH.value, [warning], lambda: None

        def thaw() -> float:
            self._thaw(domain)
            return time.monotonic() - started

        return Consistency.FILE_SYSTEM.value, [], thaw

    def _thaw(self, domain: str) -> None:
        with contextlib.suppress(ProviderError):
            self._api.agent(domain, "guest-fsfreeze-thaw", FREEZE_TIMEOUT_SECONDS)

    def _begin(self, domain: str, disks: list[DomainDisk]) -> _Running:
        """Start a pull backup job with a new checkpoint, incremental from the newest one."""
        self._end_stale_job(domain)
        folder = Path(tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX))
        os.chmod(folder, SOCKET_DIR_MODE)
        socket = str(folder / "nbd.sock")
        ours = sorted(c for c in self._api.checkpoints(domain) if c.startswith(CHECKPOINT_PREFIX))
        checkpoint = f"{CHECKPOINT_PREFIX}{time.time_ns()}-{secrets.token_hex(2)}"
        trackable = [d for d in disks if d.format == "qcow2"]
        new_checkpoint = checkpoint_xml(checkpoint, trackable) if trackable else None
        base = ours[-1] if ours and trackable else None
        try:
            try:
                self._api.backup_begin(
                    domain, backup_xml(socket, str(folder), disks, base), new_checkpoint
                )
            except ProviderError:
                if base is None:
                    raise
                base = None  # the checkpoint chain is broken: read everything this time
                self._api.backup_begin(
                    domain, backup_xml(socket, str(folder), disks, None), new_checkpoint
                )
            backup = self._api.backup_xml(domain) or ""
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        for old in ours[: max(0, len(ours) + 1 - KEEP_CHECKPOINTS)]:
            with contextlib.suppress(ProviderError):
                self._api.delete_checkpoint(domain, old)
        tracked = frozenset(d.target for d in trackable)
        return _Running(domain, folder, socket, base, backup, checkpoint, tracked)

    def _end_stale_job(self, domain: str) -> None:
        """Abort a backup job a dead worker left on the domain (its socket is one of ours)."""
        backup = self._api.backup_xml(domain)
        if backup is not None and SOCKET_DIR_PREFIX in backup:
            with contextlib.suppress(ProviderError):
                self._api.abort_job(domain)

    def _take_offline(self, snap_id: str, vm_id: str, disks: list[DomainDisk]) -> Snapshot:
        folder = Path(tempfile.mkdtemp(prefix="backup-jobs-offline-"))
        files: dict[str, Path] = {}
        try:
            for disk in disks:
                files[disk.target] = _raw_view(disk, folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._live[snap_id] = _Offline(folder, files)
        sizes = {name: path.stat().st_size for name, path in files.items()}
        return Snapshot(
            snap_id,
            vm_id,
            Consistency.CRASH.value,
            tuple(SnapshotDisk(d.target, sizes[d.target]) for d in disks),
        )


def _raw_view(disk: DomainDisk, folder: Path) -> Path:
    """The disk as a raw file: itself when raw, else a sparse raw copy made by qemu-img."""
    if disk.format == "raw":
        return Path(disk.path)
    target = folder / f"{disk.target}.raw"
    convert(Path(disk.path), disk.format, target, "raw")
    return target


def convert(source: Path, source_format: str, target: Path, target_format: str) -> None:
    """``qemu-img convert`` one image into another format; ``ProviderError`` saying why not."""
    try:
        command = ["qemu-img", "convert", "-f", source_format, "-O", target_format]
        subprocess.run(
            [*command, str(source), str(target)],
            check=True,
            capture_output=True,
            text=True,
            timeout=CONVERT_TIMEOUT_SECONDS,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise ProviderError(f"qemu-img convert {source} to {target}: {detail.strip()}") from exc
