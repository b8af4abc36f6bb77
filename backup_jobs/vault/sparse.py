"""Where an image has data: ``SEEK_DATA``/``SEEK_HOLE``, so holes are never read; and where a
chunk has data, so a restore leaves holes where the original had zeros inside a chunk too."""

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


# A restore leaves a hole for every run of zeros this long (and aligned) inside a chunk: the
# file systems' usual allocation unit times 16, cheap to compare and to skip.
ZERO_BLOCK = 64 << 10
_ZEROS = bytes(ZERO_BLOCK)


def nonzero_runs(data: bytes | memoryview, block: int = ZERO_BLOCK) -> list[tuple[int, int]]:
    """``(start, end)`` ranges of ``data`` that are not whole ``block``s of zeros, merged."""
    zeros = _ZEROS if block == ZERO_BLOCK else bytes(block)
    view = memoryview(data)
    runs: list[tuple[int, int]] = []
    for start in range(0, len(view), block):
        end = min(start + block, len(view))
        # A memoryview compares with bytes element by element (~0.4 ms per 64 KiB of
        # zeros); its first and last byte settle most blocks, a copy and memcmp the rest.
        if not (view[start] or view[end - 1]) and view[start:end].tobytes() == zeros[: end - start]:
            continue
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
    return runs
