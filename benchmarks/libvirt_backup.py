"""Full and 1 %-changed incremental backups of a running libvirt guest's disk, beside local.

One set of data in both providers: a local-fleet VM's sparse disk (default 4 GiB,
``--fill-percent`` of it written with random data) and a copy of it as the qcow2 disk of a
running QEMU domain (no OS inside: the data path is QEMU's, the guest does not matter to it) on
the libvirt host the tests use (``tests/libvirt/host.py``: daemons started if need be,
everything removed after).
Each provider's disk is backed up full into its own vault; then each run writes the same
``--percent`` of the disk into both (4 MiB runs of one byte value: into the local image through
its tracked writes, into the domain through QEMU's qemu-io) and backs both up incrementally
with their changed-block tracking (the fleet's log; QEMU's dirty bitmap over NBD). Time and
bytes read (counted between the provider's reader and the vault), medians and ranges.

    python -m benchmarks.libvirt_backup [--size-gib 4] [--fill-percent 25] [--runs 3]

Needs root and what ``tests/setup-libvirt.sh`` installs.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import threading
import time
from pathlib import Path

from backup_jobs.provider import CommitGuard, Provider, Snapshot
from backup_jobs.providers.libvirt import LibvirtProvider
from backup_jobs.providers.local import LocalFleet, LocalProvider
from backup_jobs.providers.local_disks import DiskStore
from backup_jobs.vault import Vault
from backup_jobs.vault.source import ImageReader
from benchmarks.common import header, row, workspace
from benchmarks.incremental import REGION, VM, back_up, change_arguments, make_vm
from benchmarks.vault_throughput import GIB
from tests.libvirt.host import URI, Host, libvirt_host

MIB = 1 << 20
# Each change is a run of this many bytes at a 64 KiB-aligned random place, as a guest's
# writes of a few files would be; the local fleet's writes use the same size.
CHANGE_RUN_BYTES = 4 * MIB
ALIGN_BYTES = 64 << 10
SNAPSHOT_TIMEOUT_SECONDS = 60


class CountingReader:
    """An ``ImageReader`` that counts the bytes the vault reads through it."""

    def __init__(self, reader: ImageReader) -> None:
        self._reader = reader
        self._lock = threading.Lock()
        self.bytes_read = 0

    @property
    def size(self) -> int:
        """The image's size."""
        return self._reader.size

    def data_extents(self) -> list[tuple[int, int]]:
        """The wrapped reader's."""
        return self._reader.data_extents()

    def pread(self, length: int, offset: int) -> bytes:
        """Read through, counting."""
        data = self._reader.pread(length, offset)
        with self._lock:
            self.bytes_read += len(data)
        return data

    def close(self) -> None:
        """Close the wrapped reader."""
        self._reader.close()


class Side:
    """One provider's VM and vault, and what its last backup cost."""

    def __init__(self, provider: Provider, vm_id: str, disk: str, vault: Vault) -> None:
        self.provider, self.vm_id, self.disk, self.vault = provider, vm_id, disk, vault
        self.tracking: str | None = None

    def backup(self) -> tuple[float, int, int]:
        """A backup (incremental from the previous one if any): seconds, bytes read, chunks."""
        readers: list[CountingReader] = []

        def count(reader: ImageReader) -> ImageReader:
            readers.append(CountingReader(reader))
            return readers[-1]

        start = time.perf_counter()
        snapshot = self._snapshot()
        try:
            manifest = back_up(self.vault, self.provider, snapshot, self.tracking, self.disk, count)
        finally:
            self.provider.release_snapshot(snapshot)
        seconds = time.perf_counter() - start
        self.tracking = snapshot.disks[0].tracking
        return seconds, readers[0].bytes_read, manifest.disks[0].read_chunks or 0

    def _snapshot(self) -> Snapshot:
        return self.provider.take_snapshot(
            self.vm_id, SNAPSHOT_TIMEOUT_SECONDS, _nothing, CommitGuard(1, _nothing, "bench")
        )


def changes(size: int, percent: float, seed: int) -> list[tuple[int, int]]:
    """``(offset, byte value)`` of the runs that rewrite ``percent`` of a disk of ``size``."""
    rng = random.Random(seed)
    count = max(1, round(size * percent / 100 / CHANGE_RUN_BYTES))
    slots = (size - CHANGE_RUN_BYTES) // ALIGN_BYTES
    return [(rng.randrange(slots) * ALIGN_BYTES, rng.randrange(1, 256)) for _ in range(count)]


def run(args: argparse.Namespace, work: Path, host: Host) -> dict[str, list[float]]:
    """Both VMs on the same data, a full backup of each, then ``args.runs`` incrementals."""
    size = int(args.size_gib * GIB) // MIB * MIB
    fleet = LocalFleet(work / "fleet")
    make_vm(fleet, size, int(size * args.fill_percent / 100))
    image = fleet.vm_dir(VM) / fleet.read(VM)["disks"][0]["file"]
    qcow2 = host.folder / "bench.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(image), str(qcow2)], check=True)
    domain = host.domain("bench", [qcow2])
    sides = {
        "local": Side(LocalProvider(fleet), VM, "os", Vault.create(work / "local")),
        "libvirt": Side(
            LibvirtProvider(URI, REGION, work / "images"),
            f"{host.prefix}/{domain}",
            "vda",
            Vault.create(work / "libvirt"),
        ),
    }
    m: dict[str, list[float]] = {}
    for name, side in sides.items():
        seconds, read, _ = side.backup()
        m[f"{name} full"], m[f"{name} full read"] = [seconds], [read]
        print(f"full {name}: {seconds:.2f}s, {read / MIB:.0f} MiB read", flush=True)
    store = DiskStore(fleet.vm_dir(VM))
    for n in range(args.runs):
        runs = changes(size, args.percent, seed=n)
        store.write_many(image.name, [(at, bytes([v]) * CHANGE_RUN_BYTES) for at, v in runs])
        for at, value in runs:
            host.write(domain, value, at, CHANGE_RUN_BYTES)
        for name in sorted(sides, reverse=n % 2 == 1):
            seconds, read, chunks = sides[name].backup()
            m.setdefault(f"{name} incr", []).append(seconds)
            m.setdefault(f"{name} incr read", []).append(read)
            m.setdefault(f"{name} incr chunks", []).append(chunks)
        print(
            f"run {n + 1}/{args.runs}: incremental local {m['local incr'][-1]:.2f}s, "
            f"libvirt {m['libvirt incr'][-1]:.2f}s",
            flush=True,
        )
    return m


def report(args: argparse.Namespace, m: dict[str, list[float]]) -> None:
    """Full and incremental rows for both providers, with the bytes each read."""
    header(
        f"disk {args.size_gib:g} GiB, {args.fill_percent:g} % written",
        f"{args.percent:g} % rewritten per run",
        f"{args.runs} runs",
    )
    for name in ("local", "libvirt"):
        read = statistics.median(m[f"{name} full read"]) / MIB
        row(f"full, {name}", m[f"{name} full"], "s", f"{read:.0f} MiB read")
    for name in ("local", "libvirt"):
        read = statistics.median(m[f"{name} incr read"]) / MIB
        chunks = statistics.median(m[f"{name} incr chunks"])
        note = f"{read:.0f} MiB read, {chunks:.0f} chunks"
        row(f"incremental, {name}", m[f"{name} incr"], "s", note)


def main() -> None:
    args = change_arguments(__doc__, size_gib=4.0, fill_percent=25.0)
    with workspace(args.dir, "bj-libvirt-bench-") as work, libvirt_host() as host:
        m = run(args, work, host)
    report(args, m)


def _nothing() -> None:
    """No heartbeat or lease to check outside a job."""


if __name__ == "__main__":
    main()
