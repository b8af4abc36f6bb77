"""Bounded parallel maps: threads for hashing, compression and I/O, with memory kept in check.

At most ``window`` items are in flight, so a 20 GiB image never has more than a handful of
chunks in memory; results come back as they finish. Writes that wait on the disk (fsync) run
on a ``WritePool`` of their own, so the computing threads never wait for them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Generic, TypeVar

T = TypeVar("T")
Progress = Callable[[int, int], None]
FaultHook = Callable[[str], None]


def never() -> bool:
    """The default cancel check: never cancelled."""
    return False


def ignore_progress(done: int, total: int) -> None:
    """The default progress callback."""


def no_fault(step: str) -> None:
    """The default crash hook (tests inject crashes at named steps): nothing happens."""


R = TypeVar("R")


def bounded_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    threads: int,
    window: int | None = None,
    before_each: Callable[[], None] | None = None,
) -> Iterator[tuple[T, R]]:
    """``(item, fn(item))`` as each finishes, by ``threads`` threads, ``window`` at a time.

    The window (default ``2 * threads``) bounds memory; results come back in the order they
    finish, so one slow item never leaves the other threads idle behind it. ``before_each``
    runs before each item is submitted (the cancel check); if it raises, the items in flight
    are finished or cancelled and the exception propagates, as does a worker's.
    """
    limit = window or 2 * threads
    pending: set[Future[R]] = set()
    item_of: dict[Future[R], T] = {}
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vault") as pool:
        try:
            for item in items:
                if before_each is not None:
                    before_each()
                future = pool.submit(fn, item)
                item_of[future] = item
                pending.add(future)
                while len(pending) >= limit:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    yield from ((item_of.pop(f), f.result()) for f in done)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from ((item_of.pop(f), f.result()) for f in done)
        finally:
            for future in pending:
                future.cancel()


class WritePool(Generic[R]):
    """Threads for blocking writes (an fsync each), beside the threads that compute.

    ``submit`` blocks while ``limit`` writes are pending: a disk slower than the CPUs holds
    the computing threads back instead of piling data up in memory. ``finished`` hands the
    results over and raises the first failure. Leaving the ``with`` block waits for the
    writes started and cancels the others.
    """

    def __init__(self, threads: int, limit: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vault-write")
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self._futures: list[Future[R]] = []

    def submit(self, fn: Callable[[], R]) -> None:
        """Run ``fn`` on a write thread once fewer than ``limit`` writes are pending."""
        self._slots.acquire()
        try:
            future = self._pool.submit(fn)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        with self._lock:
            self._futures.append(future)

    def finished(self, wait_all: bool = False) -> list[R]:
        """Results of the writes finished since the last call (of all, if ``wait_all``)."""
        with self._lock:
            futures, self._futures = self._futures, []
        if wait_all:
            wait(futures)
        done: list[Future[R]] = []
        left: list[Future[R]] = []
        for future in futures:  # one look at each: one finishing meanwhile goes to one list
            (done if future.done() else left).append(future)
        with self._lock:
            self._futures.extend(left)
        return [f.result() for f in done]

    def __enter__(self) -> WritePool[R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
