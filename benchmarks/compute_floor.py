"""The compute floor of a backup and a restore: what hashing and zstd alone cost on this machine.

Measured in the same run as the backups, on samples of each kind of region of the image: the
rate of one thread for SHA-256, zstd at the vault's level (compress, and decompress), and the
zero check, each the best of a few passes (the machine is shared: the floor is what it can
do, not what it did meanwhile). Combined over the image's mix and divided by the cores.

Assumed per kind: a hole costs nothing (never read, never written); zeros cost the zero check
(a backup's compare; a restore writes nothing); every other chunk costs a hash and a
compression (backup) or a decompression, when stored compressed, and a hash (restore).
Not counted: reads and writes, the blob CRC32, the Python around it all: a floor, not a model.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import zstandard

from backup_jobs.vault.codec import ZSTD_LEVEL
from benchmarks.vm_image import HOLE, ZEROS

PASSES = 3


@dataclass(frozen=True)
class Floor:
    """Seconds of pure computation for the whole image, spread over every core."""

    backup_seconds: float
    restore_seconds: float
    rates: dict[str, float]  # bytes per second of one thread, by operation and kind


def measure_rates(samples: dict[str, list[bytes]]) -> dict[str, float]:
    """One thread's rates (bytes per second) by operation and kind: ``"sha256 os"``, ..."""
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    decompressor = zstandard.ZstdDecompressor()
    rates: dict[str, float] = {}
    for kind, data in samples.items():
        if kind == ZEROS:
            rates["zero check"] = _rate(data, _zero_check(max(map(len, data))))
            continue
        rates[f"sha256 {kind}"] = _rate(data, lambda d: hashlib.sha256(d).digest())
        rates[f"zstd-{ZSTD_LEVEL} {kind}"] = _rate(data, compressor.compress)
        blobs = [compressor.compress(d) for d in data]
        if sum(map(len, blobs)) < sum(map(len, data)):  # the vault stores it compressed
            seconds = _best_seconds(blobs, decompressor.decompress)  # sizes are in the frames
            rates[f"unzstd {kind}"] = sum(map(len, data)) / seconds
    return rates


def floor(runs: list[dict[str, float]], shares: dict[str, float], size: int) -> Floor:
    """The floor of an image of ``size`` bytes whose kinds take ``shares`` of it.

    Each rate is the best that any run measured: what the machine can do when it is not
    shared, so that the floor is not raised by a neighbour's load.
    """
    rates = {name: max(run[name] for run in runs) for name in runs[0]}
    backup_cost = restore_cost = 0.0  # seconds per byte of the image, one thread
    for kind, share in shares.items():
        if kind == HOLE:
            continue
        if kind == ZEROS:
            backup_cost += share / rates["zero check"]
            continue
        sha = rates[f"sha256 {kind}"]
        backup_cost += share * (1 / sha + 1 / rates[f"zstd-{ZSTD_LEVEL} {kind}"])
        restore_cost += share * (1 / sha + 1 / rates.get(f"unzstd {kind}", float("inf")))
    cores = os.cpu_count() or 1
    return Floor(size * backup_cost / cores, size * restore_cost / cores, rates)


def _zero_check(size: int) -> Callable[[bytes], bool]:
    """The vault's zero check: a compare with zeros."""
    zero = bytes(size)
    return lambda data: data == zero[: len(data)]


def describe(rates: dict[str, float]) -> str:
    """The rates, in MB/s, for the report."""
    return ", ".join(f"{name} {rate / 1e6:,.0f}" for name, rate in rates.items())


def _rate(data: list[bytes], work: Callable[[bytes], object]) -> float:
    """Bytes of ``data`` per second of ``work``."""
    return sum(map(len, data)) / _best_seconds(data, work)


def _best_seconds(data: list[bytes], work: Callable[[bytes], object]) -> float:
    """Seconds of ``work`` over ``data``: the best of ``PASSES`` passes."""
    best = float("inf")
    for _ in range(PASSES):
        start = time.perf_counter()
        for piece in data:
            work(piece)
        best = min(best, time.perf_counter() - start)
    return best
