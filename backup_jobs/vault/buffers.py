"""Page-aligned buffers, one per thread, kept and reused: direct I/O needs aligned memory, and
a buffer allocated per chunk costs fresh pages (faulted in and zeroed by the kernel) each time.

Used by the blob reader (restore, verify) and the image writer (restore).
"""

from __future__ import annotations

import mmap
import threading

# Direct I/O's alignment of buffers, offsets and lengths (a page; the block size divides it).
ALIGNMENT = 4096


class ThreadBuffers:
    """A page-aligned buffer for each calling thread, grown when asked for more."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, size: int) -> mmap.mmap:
        """This thread's buffer, at least ``size`` bytes (a new one, empty, if it had to grow)."""
        buffer: mmap.mmap | None = getattr(self._local, "buffer", None)
        if buffer is None or len(buffer) < size:
            buffer = self._local.buffer = mmap.mmap(-1, max(size, ALIGNMENT))  # page-aligned
        return buffer
