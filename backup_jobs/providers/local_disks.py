"""The local fleet's disks: writes, copy-on-write snapshots and changed-block tracking.

A VM's disks are raw image files that only the fleet's tools write (``fleet write``,
``DiskStore.write``). That lets the local fleet do what a hypervisor does:

- **Snapshots** are copy-on-write views: taking one records each disk's size and data extents
  and costs nothing; afterwards, before a write changes a 64 KiB granule for the first time,
  the old contents are saved into the snapshot (``<disk>.cow`` at the same offset, the granule
  number appended to ``<disk>.saved``). A snapshot reader reads saved granules from there and
  the rest from the live image, under a shared lock that writers take exclusively: what it
  returns is the disk as it was when the snapshot was taken, whatever is written meanwhile.
- **Changed-block tracking**: every write appends the granules it touched to
  ``tracking/<disk>.log``. A snapshot records each disk's position in that log (its token);
  the granules logged between two tokens are what changed between the two snapshots. A disk
  whose image changed behind the tracking's back (its mtime differs from the one the last
  tracked write left) gets a new epoch: older tokens are refused, so the next backup reads
  everything rather than miss a change.

Layout under the VM's folder: ``.disks.lock``, ``snapshots/<id>/{meta.json, <disk>.cow,
<disk>.saved}``, ``tracking/<disk>.{log,json}``.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import secrets
import shutil
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from backup_jobs.vault.sparse import data_extents

GRANULE = 64 << 10
# ``fleet write`` writes runs of this size, aligned to it (the vault's default chunk size).
WRITE_RUN = 4 << 20
_ENTRY = struct.Struct("<I")  # one granule number in a .saved or tracking log
LOCK_FILE = ".disks.lock"
SNAPSHOTS = "snapshots"
TRACKING = "tracking"


@dataclass(frozen=True)
class DiskState:
    """One disk as a snapshot saw it: size, data extents, and its tracking token."""

    name: str
    file: str
    size: int
    extents: tuple[tuple[int, int], ...]
    token: str


class DiskStore:
    """The disks of one VM folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @contextmanager
    def locked(self, exclusive: bool) -> Iterator[None]:
        """The VM's disk lock, across processes: writers exclusive, snapshot reads shared."""
        with open(self.folder / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield

    # --- writes ------------------------------------------------------------------------------

    def write(self, file: str, offset: int, data: bytes) -> None:
        """Write ``data`` into a disk image, saving old contents into every live snapshot."""
        self.write_many(file, [(offset, data)])

    def write_many(self, file: str, writes: list[tuple[int, bytes]]) -> None:
        """Several writes to one disk under one lock and one fsync."""
        granules = sorted({g for offset, data in writes for g in _granules(offset, len(data))})
        path = self.folder / file
        with self.locked(exclusive=True):
            fd = os.open(path, os.O_RDWR)
            try:
                for snapshot in self._snapshot_dirs():
                    _preserve(fd, snapshot, file, granules)
                for offset, data in writes:
                    os.pwrite(fd, data, offset)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._track(file, granules, os.stat(path).st_mtime_ns)

    def _track(self, file: str, granules: list[int], mtime_ns: int) -> None:
        state = self._tracking_state(file)
        log = self._tracking_dir() / f"{file}.log"
        with open(log, "ab") as out:
            out.write(b"".join(_ENTRY.pack(g) for g in granules))
        state["last_mtime_ns"] = mtime_ns
        _write_json(self._tracking_dir() / f"{file}.json", state)

    # --- snapshots ---------------------------------------------------------------------------

    def snapshot(
        self, snap_id: str, disks: list[tuple[str, str]], meta: dict[str, Any]
    ) -> list[DiskState]:
        """Take a copy-on-write snapshot of ``(name, file)`` disks; their state as of now."""
        folder = self.folder / SNAPSHOTS / snap_id
        with self.locked(exclusive=True):
            folder.mkdir(parents=True)
            states = [self._disk_state(name, file) for name, file in disks]
            record = {
                **meta,
                "version": 1,
                "id": snap_id,
                "taken_at": time.time(),
                "disks": [asdict(state) for state in states],
            }
            _write_json(folder / "meta.json", record)
        return states

    def release(self, snap_id: str) -> None:
        """Forget a snapshot: writes no longer save anything for it."""
        with self.locked(exclusive=True):
            shutil.rmtree(self.folder / SNAPSHOTS / snap_id, ignore_errors=True)

    def stale_snapshots(self, older_than: float, scope: str) -> list[str]:
        """Snapshots left by a dead backup: taken before ``older_than`` (epoch seconds), or
        taken for ``scope`` (whose lease on the VM the caller holds: no live backup of that
        scope can own one)."""
        stale = []
        for folder in self._snapshot_dirs():
            try:
                meta = json.loads((folder / "meta.json").read_text())
                taken, owner = float(meta["taken_at"]), meta.get("scope")
            except (OSError, ValueError, KeyError, TypeError):
                taken, owner = 0.0, None
            if taken < older_than or owner == scope:
                stale.append(folder.name)
        return stale

    def reader(self, snap_id: str, disk: DiskState) -> SnapshotImage:
        """Read a disk as the snapshot saw it."""
        return SnapshotImage(self, self.folder / SNAPSHOTS / snap_id, disk)

    def _snapshot_dirs(self) -> list[Path]:
        root = self.folder / SNAPSHOTS
        return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []

    def _disk_state(self, name: str, file: str) -> DiskState:
        path = self.folder / file
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            extents = tuple(data_extents(fd, size))
        finally:
            os.close(fd)
        return DiskState(name, file, size, extents, self._token(file, os.stat(path).st_mtime_ns))

    # --- changed-block tracking --------------------------------------------------------------

    def changed(self, file: str, since: str, until: str) -> list[tuple[int, int]] | None:
        """Byte ranges changed between two tokens of one disk; None if tracking cannot tell."""
        try:
            epoch_a, start = since.split(":")
            epoch_b, end = until.split(":")
            first, last = int(start), int(end)
        except ValueError:
            return None
        if epoch_a != epoch_b or first > last:
            return None
        with open(self._tracking_dir() / f"{file}.log", "rb") as log:
            log.seek(first * _ENTRY.size)
            raw = log.read((last - first) * _ENTRY.size)
        granules = sorted({g for (g,) in _ENTRY.iter_unpack(raw)})
        return _merge(granules)

    def _token(self, file: str, mtime_ns: int) -> str:
        """This disk's position in its tracking log, starting a new epoch if it was bypassed."""
        state = self._tracking_state(file)
        log = self._tracking_dir() / f"{file}.log"
        if state.get("last_mtime_ns") != mtime_ns:
            state = {"epoch": secrets.token_hex(4), "last_mtime_ns": mtime_ns}
            log.write_bytes(b"")
            _write_json(self._tracking_dir() / f"{file}.json", state)
        length = log.stat().st_size // _ENTRY.size if log.exists() else 0
        return f"{state['epoch']}:{length}"

    def _tracking_dir(self) -> Path:
        folder = self.folder / TRACKING
        folder.mkdir(exist_ok=True)
        return folder

    def _tracking_state(self, file: str) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads((self._tracking_dir() / f"{file}.json").read_text())
            return state
        except (OSError, ValueError):
            return {"epoch": secrets.token_hex(4), "last_mtime_ns": None}


class SnapshotImage:
    """A disk as a snapshot saw it (an ``ImageReader``): saved granules, else the live image."""

    def __init__(self, store: DiskStore, folder: Path, disk: DiskState) -> None:
        self._store = store
        self._disk = disk
        self._live = os.open(store.folder / disk.file, os.O_RDONLY)
        self._cow_path = folder / f"{disk.file}.cow"
        self._saved_path = folder / f"{disk.file}.saved"
        self._saved: set[int] = set()
        self._saved_read = 0
        self._mutex = threading.Lock()

    @property
    def size(self) -> int:
        """The disk's size when the snapshot was taken."""
        return self._disk.size

    def data_extents(self) -> list[tuple[int, int]]:
        """Where the disk had data when the snapshot was taken."""
        return list(self._disk.extents)

    def pread(self, length: int, offset: int) -> bytes:
        """The snapshot's bytes at ``offset``; writes since the snapshot do not show."""
        length = max(0, min(length, self.size - offset))
        with self._store.locked(exclusive=False):
            saved = self._saved_granules()
            live = os.pread(self._live, length, offset)
            if not any(g in saved for g in _granules(offset, length)):
                return live
            return self._merge_saved(live, offset, saved)

    def close(self) -> None:
        """Close the live image."""
        os.close(self._live)

    def _merge_saved(self, live: bytes, offset: int, saved: set[int]) -> bytes:
        out = bytearray(live)
        with open(self._cow_path, "rb") as cow:
            for g in _granules(offset, len(live)):
                if g not in saved:
                    continue
                start = max(g * GRANULE, offset)
                end = min((g + 1) * GRANULE, offset + len(live))
                cow.seek(start)
                old = cow.read(end - start)
                out[start - offset : end - offset] = old.ljust(end - start, b"\0")
        return bytes(out)

    def _saved_granules(self) -> set[int]:
        """The granules saved so far (re-read as writers append; called under the lock)."""
        with self._mutex:
            try:
                with open(self._saved_path, "rb") as log:
                    log.seek(self._saved_read)
                    raw = log.read()
            except FileNotFoundError:
                raw = b""
            usable = len(raw) - len(raw) % _ENTRY.size
            self._saved.update(g for (g,) in _ENTRY.iter_unpack(raw[:usable]))
            self._saved_read += usable
            return set(self._saved)


def _preserve(fd: int, snapshot: Path, file: str, granules: list[int]) -> None:
    """Save the current contents of granules a snapshot has not saved yet (under the lock)."""
    saved_path = snapshot / f"{file}.saved"
    try:
        raw = saved_path.read_bytes()
    except FileNotFoundError:
        raw = b""
    saved = {g for (g,) in _ENTRY.iter_unpack(raw[: len(raw) - len(raw) % _ENTRY.size])}
    todo = [g for g in granules if g not in saved]
    if not todo:
        return
    cow = os.open(snapshot / f"{file}.cow", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for g in todo:
            old = os.pread(fd, GRANULE, g * GRANULE)
            if old.strip(b"\0"):
                os.pwrite(cow, old, g * GRANULE)
        os.fsync(cow)
    finally:
        os.close(cow)
    with open(saved_path, "ab") as out:  # only once the old data is durable
        out.write(b"".join(_ENTRY.pack(g) for g in todo))
        out.flush()
        os.fsync(out.fileno())


def _granules(offset: int, length: int) -> range:
    if length <= 0:
        return range(0)
    return range(offset // GRANULE, (offset + length - 1) // GRANULE + 1)


def _merge(granules: list[int]) -> list[tuple[int, int]]:
    """Sorted granule numbers as byte ranges, neighbours joined."""
    ranges: list[tuple[int, int]] = []
    for g in granules:
        start, end = g * GRANULE, (g + 1) * GRANULE
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((start, end))
    return ranges


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def scribble(
    store: DiskStore, file: str, size: int, nbytes: int, rng: random.Random
) -> list[tuple[int, int]]:
    """Write ``nbytes`` (rounded up to runs) of random data at random places of a disk.

    What ``fleet write`` does to make incrementals realistic, or to write during a backup.
    Like a real VM's, the writes come in runs (4 MiB, aligned), not scattered single blocks:
    writing 1 % of a disk changes about 1 % of it. Returns the byte ranges written.
    """
    run = min(WRITE_RUN, max(GRANULE, size // GRANULE * GRANULE))
    slots = max(1, size // run)
    count = min(slots, max(1, -(-nbytes // run)))
    offsets = sorted(slot * run for slot in rng.sample(range(slots), count))
    store.write_many(file, [(offset, rng.randbytes(min(run, size - offset))) for offset in offsets])
    return [(offset, min(offset + run, size)) for offset in offsets]
