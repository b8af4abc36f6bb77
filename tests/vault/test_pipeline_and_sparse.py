"""Bounded parallel maps and hole detection."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from backup_jobs.vault.pipeline import WritePool, bounded_map
from backup_jobs.vault.sparse import ExtentMap, data_extents, nonzero_runs


def test_bounded_map_maps_every_item_and_never_has_more_than_the_window_in_flight() -> None:
    in_flight, peak = [0], [0]
    lock = threading.Lock()

    def work(n: int) -> int:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.002 * (n % 3))
        with lock:
            in_flight[0] -= 1
        return n * n

    results = list(bounded_map(work, range(50), threads=4, window=5))

    assert sorted(results) == [(n, n * n) for n in range(50)]
    assert peak[0] <= 5


def test_bounded_map_yields_as_items_finish_so_a_slow_one_holds_nobody_back() -> None:
    release = threading.Event()

    def work(n: int) -> int:
        if n == 0:
            release.wait(5)
        return n

    seen = []
    for n, _ in bounded_map(work, range(30), threads=2, window=4):
        seen.append(n)
        if len(seen) == 29:
            release.set()

    assert seen[-1] == 0 and sorted(seen) == list(range(30))


def test_write_pool_blocks_submitters_beyond_its_limit_and_hands_over_every_result() -> None:
    gate = threading.Event()
    with WritePool[int](threads=1, limit=2) as pool:
        for n in range(2):
            pool.submit(lambda n=n: (gate.wait(5), n)[1])
        third = threading.Thread(target=lambda: pool.submit(lambda: 2))
        third.start()
        third.join(0.2)
        blocked = third.is_alive()
        early = pool.finished()
        gate.set()
        third.join(5)
        results = pool.finished(wait_all=True)

    assert blocked and early == [] and sorted(results) == [0, 1, 2]
    assert pool.finished() == []


def test_write_pool_raises_a_failed_write_from_finished() -> None:
    def fail() -> int:
        raise OSError(28, "No space left on device")

    with WritePool[int](threads=2, limit=4) as pool:
        pool.submit(lambda: 1)
        pool.submit(fail)
        with pytest.raises(OSError, match="No space"):
            pool.finished(wait_all=True)


def test_write_pool_cancels_the_writes_not_started_when_its_block_is_left() -> None:
    gate = threading.Event()
    ran: list[str] = []

    def slow_write() -> None:
        gate.wait(5)
        ran.append("running")

    with pytest.raises(KeyboardInterrupt), WritePool[None](threads=1, limit=4) as pool:
        pool.submit(slow_write)
        pool.submit(lambda: ran.append("queued"))
        threading.Timer(0.1, gate.set).start()
        raise KeyboardInterrupt

    assert ran == ["running"]


def test_bounded_map_stops_submitting_when_the_check_raises() -> None:
    submitted: list[int] = []

    def check() -> None:
        if len(submitted) >= 3:
            raise KeyboardInterrupt

    def work(n: int) -> int:
        submitted.append(n)
        return n

    with pytest.raises(KeyboardInterrupt):
        list(bounded_map(work, range(100), threads=1, window=2, before_each=check))

    assert len(submitted) < 10


def test_bounded_map_propagates_a_worker_exception() -> None:
    def work(n: int) -> int:
        if n == 7:
            raise ValueError("seven")
        return n

    with pytest.raises(ValueError, match="seven"):
        list(bounded_map(work, range(20), threads=3))


def test_data_extents_skip_holes(tmp_path: Path) -> None:
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.write(b"a" * 4096)
        f.seek(10 << 20)
        f.write(b"b" * 4096)
        f.truncate(20 << 20)
    fd = os.open(path, os.O_RDONLY)
    try:
        extents = data_extents(fd, 20 << 20)
    finally:
        os.close(fd)

    assert extents[0][0] == 0
    assert any(start <= (10 << 20) < end for start, end in extents)
    assert sum(end - start for start, end in extents) < 2 << 20
    assert extents[-1][1] <= 20 << 20


def test_extent_map_answers_overlaps() -> None:
    extents = ExtentMap([(0, 10), (100, 200), (500, 501)])

    assert extents.has_data(5, 20)
    assert not extents.has_data(10, 100)
    assert extents.has_data(99, 101)
    assert extents.has_data(150, 160)
    assert not extents.has_data(200, 500)
    assert extents.has_data(0, 1000)
    assert not ExtentMap([]).has_data(0, 10)


def test_nonzero_runs_skip_whole_zero_blocks_and_merge_neighbours() -> None:
    data = b"x" + bytes(15) + bytes(32) + b"yy" + bytes(14) + b"z"

    assert nonzero_runs(data, block=16) == [(0, 16), (48, 65)]
    assert nonzero_runs(bytes(64), block=16) == []
    assert nonzero_runs(b"", block=16) == []


def test_a_block_with_zeros_at_both_ends_and_data_inside_is_a_run() -> None:
    data = bytes(16) + bytes(7) + b"q" + bytes(8) + bytes(16)

    assert nonzero_runs(data, block=16) == [(16, 32)]
    assert nonzero_runs(memoryview(bytearray(data)), block=16) == [(16, 32)]
