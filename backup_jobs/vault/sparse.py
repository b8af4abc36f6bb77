"""Where an image has data: ``SEEK_DATA``/``SEEK_HOLE``, so holes are never read."""

from __future__ import annotations

import bisect
import errno
import os


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """``(start, end)`` byte ranges that may hold data; the whole file if holes are unknown."""
    if not hasattr(os, "SEEK_DATA"):
        return [(0, size)] if size else []
    extents: list[tuple[int, int]] = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after offset
                break
            return [(0, size)]
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        extents.append((start, end))
        offset = end
    return extents


class ExtentMap:
    """Answers "does this byte range touch data?" in O(log n)."""

    def __init__(self, extents: list[tuple[int, int]]) -> None:
        self._starts = [s for s, _ in extents]
        self._extents = extents

    def has_data(self, start: int, end: int) -> bool:
        """True if ``[start, end)`` overlaps any data extent."""
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        return any(s < end and start < e for s, e in self._extents[i : i + 2])
