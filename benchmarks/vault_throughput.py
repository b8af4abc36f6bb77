"""Vault throughput beside `cp` and the compute floor, on an image like a real VM disk.

The image (benchmarks/vm_image.py) is 40 % OS-like content (system files concatenated), 30 %
random data, 15 % zeros and 15 % holes, in stripes of whole chunks. Each run does every side
once, in this order:

- `cp --reflink=never` of the warm image (bytes through user space, as any backup's go), then
  the same followed by `sync FILE` (an fsync: the vault fsyncs, and plain `cp` only measures
  page-cache writeback);
- a full backup into a new vault, then the same reads and writes alone (benchmarks/io_child.py:
  the image's data read, files of the new blobs' sizes written and fsynced), whose CPU time
  over the cores is what the I/O adds to the compute floor; an unchanged incremental, and one
  after rewriting 1 % of the chunks (with new random data, in the random stripes, so the mix
  stays as stated);
- with the pages of the image and of every vault file dropped (sync, then
  ``POSIX_FADV_DONTNEED``): `cp` + `sync` of the image, and a restore of the last point, which
  is then compared with the image byte for byte (holes read as zeros);
- the compute floor (benchmarks/compute_floor.py), measured on samples of the image.

Every side is timed from outside as a whole process: `cp` and `sync` in one shell, and each
backup or restore in a Python process of its own (interpreter start and imports included; the
report gives their share).

    python -m benchmarks.vault_throughput [--size-gib 2] [--runs 3] [--dir /var/tmp]
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from backup_jobs.vault import Vault
from benchmarks import compute_floor, vm_image
from benchmarks.common import arguments, header, row, spread, workspace

GIB = 1 << 30
CHILD = Path(__file__).with_name("vault_child.py")
IO_CHILD = Path(__file__).with_name("io_child.py")
REPO = CHILD.resolve().parents[1]
SAMPLE_BYTES = 64 << 20  # of each kind, for the compute floor
COMPARE_BYTES = 16 << 20
CP = ["cp", "--sparse=auto", "--reflink=never"]


def main() -> None:
    """Build the image, run every side ``--runs`` times, print the report."""
    parser = arguments(__doc__ or "")
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument(
        "--compare",
        type=Path,
        help="a checkout (e.g. of main) whose backup_jobs also backs up and restores, same runs",
    )
    args = parser.parse_args()
    with workspace(args.dir, "bj-vault-bench-") as work:
        image = work / "image.raw"
        size = vm_image.make_image(image, int(args.size_gib * GIB))
        samples = {
            kind: vm_image.kind_samples(image, size, kind, SAMPLE_BYTES)
            for kind in (vm_image.OS, vm_image.RANDOM, vm_image.ZEROS)
        }
        results = [one_run(work, image, size, samples, n, args.compare) for n in range(args.runs)]
        report(size, results)


def whole_process(command: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Wall seconds of a command from its start to its exit, and what it printed."""
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False, env=env)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{command} failed with exit code {done.returncode}")
    return seconds, done.stdout


def vault_side(
    result: dict[str, float], side: str, operation: str, root: Path, arg: Path, code: Path
) -> None:
    """A backup or restore in its own process, with the ``backup_jobs`` of ``code``.

    Records its whole seconds as ``side``, the time before its work began (interpreter start,
    imports) and, for this checkout's, its peak RSS.
    """
    env = {**os.environ, "PYTHONPATH": str(code)}
    command = [sys.executable, str(CHILD), operation, str(root), str(arg)]
    seconds, out = whole_process(command, env)
    inside, rss = out.split()
    result[side], result[f"{side}_start"] = seconds, seconds - float(inside)
    if code == REPO:
        result["rss"] = max(result.get("rss", 0), int(rss))


def cp_side(image: Path, copy: Path, fsync: bool = True) -> float:
    """`cp` of the image, then (``fsync``) `sync` of the copy, timed as one shell process."""
    script = " ".join(CP) + ' "$1" "$2"' + (' && sync "$2"' if fsync else "")
    seconds, _ = whole_process(["sh", "-c", script, "sh", str(image), str(copy)])
    copy.unlink()
    return seconds


def warm(image: Path) -> None:
    """Start alike: earlier writes flushed, the image in the page cache."""
    os.sync()
    with open(image, "rb") as f:
        while f.read(COMPARE_BYTES):
            pass


def drop_pages(*paths: Path) -> None:
    """Flush everything, then drop the cached pages of every file under ``paths``."""
    os.sync()
    for path in paths:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            fd = os.open(file, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def first_difference(a: Path, b: Path) -> int | None:
    """The offset of the first byte where two files differ (sizes included), or None."""
    offset = 0
    with open(a, "rb") as left, open(b, "rb") as right:
        while True:
            x, y = left.read(COMPARE_BYTES), right.read(COMPARE_BYTES)
            if x != y:
                return offset + next(
                    (i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q),
                    min(len(x), len(y)),
                )
            if not x:
                return None
            offset += len(x)


def rewrite_one_percent(image: Path, size: int, seed: int) -> None:
    """Rewrite 1 % of the chunks, chosen in the random stripes, with new random data."""
    rng = random.Random(seed)
    chunk = vm_image.ALIGN
    candidates = [
        offset
        for kind, start, end in vm_image.stripes(size)
        if kind == vm_image.RANDOM
        for offset in range(start, end, chunk)
    ]
    with open(image, "r+b") as f:
        for offset in rng.sample(candidates, max(1, size // chunk // 100)):
            os.pwrite(f.fileno(), rng.randbytes(chunk), offset)


def one_run(
    work: Path,
    image: Path,
    size: int,
    samples: dict[str, list[bytes]],
    n: int,
    compare: Path | None,
) -> dict[str, float]:
    """Every side once; seconds by side (and the rates of the floor, and peak RSS)."""
    result: dict[str, float] = {}
    copy, ours, target = work / "copy.raw", work / "vault", work / "restore" / "target"
    warm(image)
    result["cp"] = cp_side(image, copy, fsync=False)
    warm(image)
    result["cp_fsync"] = cp_side(image, copy)
    backup_side(ours, image, "full", result, fresh=True)
    result["io_cpu"] = io_side(image, ours, work / "io")
    backup_side(ours, image, "same", result)
    if compare is not None:  # full backup and restore of the image as it is still
        backup_side(work / "other-vault", image, "full_other", result, fresh=True, code=compare)
        verified_restore(work / "other-vault", image, target, n, result, code=compare)
        shutil.rmtree(work / "other-vault")
    rewrite_one_percent(image, size, seed=n)
    backup_side(ours, image, "1pct", result)
    drop_pages(image, ours)
    result["cold_cp_fsync"] = cp_side(image, copy)
    verified_restore(ours, image, target, n, result)
    rates = compute_floor.measure_rates(samples)
    result.update({f"rate {name}": rate for name, rate in rates.items()})
    if shutil.which("restic"):
        warm(image)
        result["restic"] = time_restic(work, image)
    print(
        f"run {n + 1} done; restores identical to the image; floor rates (MB/s, one thread): "
        f"{compute_floor.describe(rates)}",
        flush=True,
    )
    return result


def backup_side(
    vault_root: Path,
    image: Path,
    side: str,
    result: dict[str, float],
    fresh: bool = False,
    code: Path = REPO,
) -> None:
    """A backup from a warm image (into a new vault if ``fresh``), with ``code``'s vault."""
    if fresh:
        shutil.rmtree(vault_root, ignore_errors=True)
        Vault.create(vault_root)
    warm(image)
    vault_side(result, side, "backup", vault_root, image, code)


def io_side(image: Path, vault_root: Path, scratch: Path) -> float:
    """CPU seconds of the full backup's reads and writes alone (``io_child``), image warm."""
    warm(image)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(IO_CHILD), str(image), str(vault_root), str(scratch)]
    try:
        _, out = whole_process(command, env)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return float(out)


def verified_restore(
    vault_root: Path,
    image: Path,
    target: Path,
    n: int,
    result: dict[str, float],
    code: Path = REPO,
) -> None:
    """A restore of the last point with cold pages, then compared with the image."""
    drop_pages(image, vault_root)
    side = "restore" if code == REPO else "restore_other"
    vault_side(result, side, "restore", vault_root, target, code)
    where = first_difference(image, target / "os.img")
    if where is not None:
        raise SystemExit(f"run {n + 1}: the restored image differs from the original at {where}")
    shutil.rmtree(target.parent)


def time_restic(work: Path, image: Path) -> float:
    """Seconds of a ``restic backup`` process of the image into a fresh repository."""
    repo = work / "restic"
    shutil.rmtree(repo, ignore_errors=True)
    env = {**os.environ, "RESTIC_PASSWORD": "bench", "RESTIC_REPOSITORY": str(repo)}
    subprocess.run(["restic", "init", "-q"], env=env, check=True, capture_output=True)
    start = time.perf_counter()
    subprocess.run(["restic", "backup", "-q", str(image)], env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    shutil.rmtree(repo, ignore_errors=True)
    return seconds


def report(size: int, results: list[dict[str, float]]) -> None:
    """Medians (min-max) of every side, with ratios taken within each run."""

    def of(key: str) -> list[float]:
        return [r[key] for r in results]

    def ratio(top: str, bottom: str) -> str:
        return spread([r[top] / r[bottom] for r in results])

    gb = size / 1e9
    rates = [{k[5:]: v for k, v in r.items() if k.startswith("rate ")} for r in results]
    floor = compute_floor.floor(rates, vm_image.SHARES, size)
    cores = os.cpu_count() or 1
    for r in results:
        r["floor_backup"], r["floor_restore"] = floor.backup_seconds, floor.restore_seconds
        r["io_floor"] = r["io_cpu"] / cores
        r["floor_with_io"] = floor.backup_seconds + r["io_floor"]
    header(
        f"image {size / GIB:.2f} GiB ({vm_image.describe()})",
        f"{len(results)} interleaved runs, each side a whole process",
    )
    med = {key: statistics.median(of(key)) for key in ("cp", "same")}
    lines = [
        ("cp (page cache)", "cp", f"{gb / med['cp']:.2f} GB/s"),
        ("cp + fsync", "cp_fsync", "the backup's baseline"),
        ("compute floor, backup", "floor_backup", "SHA-256 + zstd-1, best rates of the runs"),
        ("I/O alone, backup", "io_floor", "its reads and fsynced writes' CPU, over the cores"),
        ("compute + I/O", "floor_with_io", f"x{ratio('floor_with_io', 'floor_backup')} floor"),
        (
            "full backup",
            "full",
            f"x{ratio('full', 'floor_backup')} floor (goal <= 1.1), "
            f"x{ratio('full', 'floor_with_io')} compute + I/O; "
            f"cp+fsync / backup {ratio('cp_fsync', 'full')} (goal >= 1.0)",
        ),
        ("unchanged incremental", "same", f"{gb / med['same']:.2f} GB/s logical (goal >= 1.5)"),
        ("1% changed incremental", "1pct", f"x{ratio('1pct', 'same')} unchanged (goal <= 1.2)"),
        ("cold cp + fsync", "cold_cp_fsync", "the restore's baseline"),
        ("compute floor, restore", "floor_restore", "SHA-256 + unzstd"),
        (
            "restore (verified)",
            "restore",
            f"cold cp+fsync / restore {ratio('cold_cp_fsync', 'restore')} (goal >= 1.0); "
            f"x{ratio('restore', 'floor_restore')} floor",
        ),
    ]
    if "restic" in results[0]:
        lines.append(
            ("restic backup", "restic", f"ours / restic {ratio('full', 'restic')} (goal <= 0.5)")
        )
    if "full_other" in results[0]:
        lines.append(
            ("full backup, --compare", "full_other", f"ours / its {ratio('full', 'full_other')}")
        )
        lines.append(
            (
                "restore, --compare",
                "restore_other",
                f"ours / its {ratio('restore', 'restore_other')}",
            )
        )
    for label, key, note in lines:
        row(label, of(key), note=note)
    print(f"floor rates (MB/s, one thread): {compute_floor.describe(floor.rates)}")
    starts = of("full_start") + of("same_start") + of("1pct_start") + of("restore_start")
    print(
        f"interpreter start, imports and exit: {spread(starts)} s of each vault process; "
        f"peak RSS of a backup or restore process: {max(of('rss')) / 2**20:.0f} MiB"
    )


if __name__ == "__main__":
    main()
