"""Vault throughput against `cp` (and `restic` when installed), same disk, same run.

A generated raw image (default 2 GiB: half random, a quarter zeros, a quarter hole, in 64 MiB
stripes) is backed up full, unchanged, and after rewriting 1% of its chunks, then restored;
each operation runs in its own process (so its peak RSS is measured) and is timed several
times; medians and ratios are printed.

    python -m benchmarks.vault_throughput [--size-gib 2] [--runs 3] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from backup_jobs.vault import BackupRequest, DiskSource, RestoreRequest, Vault, backup, restore

STRIPE = 64 << 20
GIB = 1 << 30


def make_image(path: Path, size: int) -> None:
    """Stripes of random data (half), zeros (a quarter) and holes (a quarter)."""
    rng = random.Random(42)
    pattern = ["data", "zero", "data", "hole"]
    with open(path, "wb") as image:
        for n in range(size // STRIPE):
            kind = pattern[n % 4]
            if kind == "data":
                image.write(rng.randbytes(STRIPE))
            elif kind == "zero":
                image.write(bytes(STRIPE))
            else:
                image.seek(STRIPE, os.SEEK_CUR)
        image.truncate(size)


def child(argv: list[str]) -> None:
    """Run one vault operation in this (child) process and print its seconds."""
    operation, root, arg = argv
    start = time.perf_counter()
    vault = Vault.open(Path(root))
    if operation == "backup":
        backup(vault, BackupRequest("bench/vm", [DiskSource("os", Path(arg))]))
    else:
        [manifest] = vault.manifests()[-1:]
        target = Path(arg)
        restore(vault, RestoreRequest(manifest.id, target, target.parent, overwrite=True))
    print(time.perf_counter() - start, peak_rss_bytes())


def peak_rss_bytes() -> int:
    """This process's peak RSS since exec (VmHWM; ru_maxrss would include the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def timed_child(*args: str) -> tuple[float, int]:
    """Seconds and peak RSS (bytes) of one child operation."""
    command = [sys.executable, "-m", "benchmarks.vault_throughput", "--child", *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"child {args} failed")
    seconds, rss = out.strip().splitlines()[-1].split()
    return float(seconds), int(rss)


def timed(command: Callable[[], object]) -> float:
    start = time.perf_counter()
    command()
    return time.perf_counter() - start


def rewrite_one_percent(image: Path, chunk_size: int, size: int, seed: int) -> None:
    """Overwrite 1% of the chunks with new random data."""
    rng = random.Random(seed)
    chunks = size // chunk_size
    with open(image, "r+b") as f:
        for index in rng.sample(range(chunks), max(1, chunks // 100)):
            f.seek(index * chunk_size)
            f.write(rng.randbytes(chunk_size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="work directory (one disk)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    work = Path(tempfile.mkdtemp(prefix="bj-vault-bench-", dir=args.dir))
    size = int(args.size_gib * GIB) // STRIPE * STRIPE
    image = work / "image.raw"
    try:
        make_image(image, size)
        run(work, image, size, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, image: Path, size: int, runs: int) -> None:
    """Every measurement, ``runs`` times, each from a warm page cache, then the report."""
    keys = ("cp", "cp_user", "cp_fsync", "full", "same", "1pct", "restore")
    times: dict[str, list[float]] = {k: [] for k in keys}
    restic: list[float] = []
    peak_rss = 0
    for n in range(runs):
        warm(image)
        times["cp"].append(copy_time(image, work / "copy.raw"))
        warm(image)
        times["cp_user"].append(copy_time(image, work / "copy.raw", "--reflink=never"))
        warm(image)
        times["cp_fsync"].append(copy_time(image, work / "copy.raw", "--reflink=never", sync=True))
        vault_root = work / "vault"
        shutil.rmtree(vault_root, ignore_errors=True)
        chunk_size = Vault.create(vault_root).chunk_size
        for key in ("full", "same"):
            warm(image)
            seconds, rss = timed_child("backup", str(vault_root), str(image))
            times[key].append(seconds)
            peak_rss = max(peak_rss, rss)
        rewrite_one_percent(image, chunk_size, size, seed=n)
        warm(image)
        times["1pct"].append(timed_child("backup", str(vault_root), str(image))[0])
        warm(image)
        seconds, rss = timed_child("restore", str(vault_root), str(work / "restore" / "target"))
        times["restore"].append(seconds)
        peak_rss = max(peak_rss, rss)
        shutil.rmtree(work / "restore")
        if shutil.which("restic"):
            warm(image)
            restic.append(time_restic(work, image))
        print(f"run {n + 1}/{runs} done", flush=True)
    for key, values in times.items():
        print(f"  {key:<9} " + " ".join(f"{v:6.2f}s" for v in values))
    report(size, {k: statistics.median(v) for k, v in times.items()}, restic, peak_rss)


def warm(image: Path) -> None:
    """Start every timed operation alike: earlier writes flushed, the image in the page cache."""
    os.sync()
    with open(image, "rb") as f:
        while f.read(16 << 20):
            pass


def copy_time(image: Path, copy: Path, *flags: str, sync: bool = False) -> float:
    """Seconds for ``cp`` of the image.

    GNU cp 9 copies with copy_file_range, inside the kernel; ``--reflink=never`` makes it move
    the bytes through user space, as any backup must; ``sync`` waits until the copy is on
    disk, as the vault's fsyncs do.
    """
    start = time.perf_counter()
    subprocess.run(["cp", "--sparse=auto", *flags, str(image), str(copy)], check=True)
    if sync:
        fd = os.open(copy, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    seconds = time.perf_counter() - start
    copy.unlink()
    return seconds


def time_restic(work: Path, image: Path) -> float:
    """Seconds for ``restic backup`` of the image into a fresh repository."""
    repo = work / "restic"
    shutil.rmtree(repo, ignore_errors=True)
    env = {**os.environ, "RESTIC_PASSWORD": "bench", "RESTIC_REPOSITORY": str(repo)}
    subprocess.run(["restic", "init", "-q"], env=env, check=True, capture_output=True)
    start = time.perf_counter()
    subprocess.run(["restic", "backup", "-q", str(image)], env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    shutil.rmtree(repo, ignore_errors=True)
    return seconds


def _vs_cp(m: dict[str, float], key: str) -> str:
    return (
        f"throughput / cp {m['cp'] / m[key]:.2f}, / cp+fsync {m['cp_fsync'] / m[key]:.2f}"
        " (goal >= 0.8)"
    )


def report(size: int, m: dict[str, float], restic: list[float], peak_rss: int) -> None:
    """Medians, throughputs and ratios against the goals."""
    gb = size / 1e9
    print(
        f"\nmachine: {os.cpu_count()} cpus; image {size / GIB:.1f} GiB "
        "(1/2 random, 1/4 zeros, 1/4 hole); medians"
    )
    rows = [
        ("cp", m["cp"], "in-kernel copy_file_range"),
        ("cp --reflink=never", m["cp_user"], "bytes through user space"),
        ("cp --reflink=never+fsync", m["cp_fsync"], "and on disk, like the vault"),
        ("full backup", m["full"], _vs_cp(m, "full")),
        ("unchanged incremental", m["same"], f"{gb / m['same']:.2f} GB/s logical (goal >= 1.5)"),
        ("1% changed incremental", m["1pct"], f"{m['1pct'] / m['same']:.2f} x unchanged (<= 1.2)"),
        ("restore", m["restore"], _vs_cp(m, "restore")),
    ]
    if restic:
        r = statistics.median(restic)
        rows.append(("restic backup", r, f"ours / restic time {m['full'] / r:.2f} (goal <= 0.5)"))
    for name, seconds, note in rows:
        print(f"{name:<24}{seconds:7.2f}s {gb / seconds:6.2f} GB/s  {note}")
    if not restic:
        print("restic: not installed (apt-get install restic); skipped")
    print(f"peak RSS of a backup or restore process: {peak_rss / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
