"""Bounded parallel maps: threads for I/O, hashing and compression, with memory kept in check.

At most ``window`` items are in flight, so a 20 GiB image never has more than a handful of
chunks in memory; results come back in input order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

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
    """``(item, fn(item))`` in order, by ``threads`` threads, ``window`` (threads + 2) at a time.

    ``before_each`` runs before each item is submitted (the cancel check); if it raises, the
    items in flight are finished or cancelled and the exception propagates.
    """
    limit = window or threads + 2
    pending: deque[tuple[T, Future[R]]] = deque()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vault") as pool:
        try:
            for item in items:
                if before_each is not None:
                    before_each()
                pending.append((item, pool.submit(fn, item)))
                while len(pending) >= limit:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        finally:
            for _, future in pending:
                future.cancel()
