"""A 1 %-changed incremental of a 20 GiB disk with changed-block tracking, beside one without.

A local-fleet VM's sparse disk (default 20 GiB, ``--fill-percent`` of it written first) is
backed up full into two vaults. Each run then writes 1 % of the disk (``write_disks``: random
4 MiB runs, which the fleet tracks), takes a snapshot as a Backup job does, and backs the
snapshot up with the vault library into both vaults: with the extents the fleet's tracking
says changed since the previous snapshot (only those chunks are read), and without (every
data extent is read, as when tracking is lost). Medians and ranges; goal < 1 s with tracking.

    python -m benchmarks.incremental [--size-gib 20] [--fill-percent 10] [--runs 3] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from backup_jobs.provider import CommitGuard, Provider, Snapshot
from backup_jobs.providers.local import LocalFleet, LocalProvider
from backup_jobs.vault import BackupRequest, DiskSource, Manifest, Vault, backup
from backup_jobs.vault.source import ImageReader
from benchmarks.common import arguments, header, row, workspace
from benchmarks.vault_throughput import GIB

REGION = "local-1"
VM = "bench/vm01"
# The fill is written in steps of this many bytes, so that it never sits in memory at once.
FILL_STEP = 512 << 20
SNAPSHOT_TIMEOUT_SECONDS = 60


def make_vm(fleet: LocalFleet, size: int, fill: int) -> None:
    """The VM, its sparse disk with ``fill`` bytes of random data written at random places."""
    cloud_service, name = VM.split("/")
    fleet.create_vm(cloud_service, name, REGION, os_disk_bytes=size)
    for step, offset in enumerate(range(0, fill, FILL_STEP)):
        fleet.write_disks(VM, nbytes=min(FILL_STEP, fill - offset), seed=1000 + step)


def take_snapshot(provider: LocalProvider) -> Snapshot:
    """A snapshot of the VM, taken as a Backup job takes it (nobody else holds its lease)."""
    return provider.take_snapshot(
        VM, SNAPSHOT_TIMEOUT_SECONDS, _nothing, CommitGuard(1, _nothing, "bench")
    )


def back_up(
    vault: Vault,
    provider: Provider,
    snapshot: Snapshot,
    since: str | None,
    disk: str = "os",
    wrap: Callable[[ImageReader], ImageReader] = lambda reader: reader,
) -> Manifest:
    """Back up the snapshot's ``disk``; with the extents changed since tracking token ``since``.

    ``wrap`` stands between the provider's reader and the vault (to count what is read).
    """
    changed = provider.changed_extents(snapshot, disk, since) if since else None
    history = vault.manifests(snapshot.vm_id)
    source = DiskSource(
        disk,
        reader=wrap(provider.open_disk(snapshot, disk)),
        changed=tuple(changed) if changed is not None else None,
        changed_since=history[-1].id if history else None,
    )
    return backup(vault, BackupRequest(snapshot.vm_id, [source]))


def run(args: argparse.Namespace, work: Path) -> dict[str, list[float]]:
    """The VM and two full backups, then every measurement ``args.runs`` times."""
    size = int(args.size_gib * GIB) // (1 << 20) << 20
    fleet = LocalFleet(work / "fleet")
    make_vm(fleet, size, int(size * args.fill_percent / 100))
    provider = LocalProvider(fleet)
    vaults = {"tracked": Vault.create(work / "tracked"), "full read": Vault.create(work / "full")}
    snapshot = take_snapshot(provider)
    for vault in vaults.values():
        back_up(vault, provider, snapshot, None)
    m: dict[str, list[float]] = {k: [] for k in ("write", "snapshot", *vaults, "new")}
    for n in range(args.runs):
        token = snapshot.disks[0].tracking
        provider.release_snapshot(snapshot)
        start = time.perf_counter()
        fleet.write_disks(VM, percent=args.percent, seed=n)
        m["write"].append(time.perf_counter() - start)
        os.sync()
        start = time.perf_counter()
        snapshot = take_snapshot(provider)
        m["snapshot"].append(time.perf_counter() - start)
        for name in sorted(vaults, reverse=n % 2 == 1):
            start = time.perf_counter()
            manifest = back_up(
                vaults[name], provider, snapshot, token if name == "tracked" else None
            )
            m[name].append(time.perf_counter() - start)
            m[f"{name} chunks"] = [manifest.disks[0].read_chunks or 0]
            if name == "tracked":
                m["new"].append(manifest.new_bytes)
        print(
            f"run {n + 1}/{args.runs}: tracked {m['tracked'][-1]:.2f}s, "
            f"full read {m['full read'][-1]:.2f}s",
            flush=True,
        )
    provider.release_snapshot(snapshot)
    m["chunk size"] = [vaults["tracked"].chunk_size]
    return m


def report(args: argparse.Namespace, m: dict[str, list[float]]) -> None:
    """Medians, ranges, and the tracked incremental against the goal."""
    tracked, full = statistics.median(m["tracked"]), statistics.median(m["full read"])
    header(
        f"disk {args.size_gib:g} GiB sparse, {args.fill_percent:g} % written",
        f"{args.percent:g} % rewritten per run",
        f"{args.runs} runs",
    )
    row("write the change (fleet)", m["write"])
    row("snapshot", m["snapshot"], "ms")
    row("incremental, tracked", m["tracked"], "s", f"{m['tracked chunks'][0]:.0f} chunks read")
    note = f"{m['full read chunks'][0]:.0f} chunks read; tracked x{tracked / full:.2f} this"
    row("incremental, full read", m["full read"], "s", note)
    print(
        f"goal < 1 s with tracking; chunks of {m['chunk size'][0] / 2**20:g} MiB; new bytes "
        f"stored per incremental {statistics.median(m['new']) / 2**20:.0f} MiB"
    )


def change_arguments(doc: str, size_gib: float, fill_percent: float) -> argparse.Namespace:
    """``--size-gib``, ``--fill-percent`` and ``--percent`` (rewritten per run), with ``--runs``
    and ``--dir``: what a benchmark of incrementals after a change takes."""
    parser = arguments(doc)
    parser.add_argument("--size-gib", type=float, default=size_gib)
    parser.add_argument("--fill-percent", type=float, default=fill_percent)
    parser.add_argument("--percent", type=float, default=1.0, help="rewritten per run")
    return parser.parse_args()


def main() -> None:
    args = change_arguments(__doc__, size_gib=20.0, fill_percent=10.0)
    with workspace(args.dir, "bj-incr-bench-") as work:
        m = run(args, work)
    report(args, m)


def _nothing() -> None:
    """No heartbeat or lease to check outside a job."""


if __name__ == "__main__":
    main()
