"""Writing a restored image: ``O_DIRECT`` where the file system allows it, buffered otherwise.

A restore writes gigabytes once and never reads them back; going around the page cache keeps
it from evicting everything else on the machine and from paying for page-cache allocation,
and lets several threads keep the disk's queue full. Direct I/O needs aligned buffers, offsets
and lengths: each thread builds its chunk in a page-aligned buffer of its own
(``chunk_buffer``) and writes from there; an unaligned tail goes through the ordinary
descriptor.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from backup_jobs.vault.buffers import ALIGNMENT, ThreadBuffers


class ImageWriter:
    """A sparse image of a given size, written chunk by chunk from several threads."""

    def __init__(self, path: Path, size: int) -> None:
        # A new file, never one found there (nor a symlink's target): O_EXCL | O_NOFOLLOW.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        self._fd = os.open(path, flags, 0o600)
        os.ftruncate(self._fd, size)
        self._direct = _open_direct(path)
        # False once the file system refused a direct write; the descriptor stays open until
        # ``close``: other threads may be writing through it right now.
        self._use_direct = self._direct is not None
        self._buffers = ThreadBuffers()

    def chunk_buffer(self, length: int) -> memoryview:
        """This thread's page-aligned buffer of ``length`` bytes, to build a chunk in.

        ``write_from_buffer`` writes slices of it with no copy: a restore decompresses each
        chunk straight into it, then writes from it.
        """
        return memoryview(self._buffers.get(length))[:length]

    def write_from_buffer(self, start: int, end: int, offset: int) -> None:
        """Write bytes ``[start, end)`` of this thread's ``chunk_buffer`` at ``offset``."""
        view = memoryview(self._buffers.get(end))[start:end]
        if self._use_direct and self._direct is not None and _aligned(start, end - start, offset):
            try:
                _pwrite_all(self._direct, view, offset)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._use_direct = False  # the file system refused after all: stay buffered
        _pwrite_all(self._fd, view, offset)

    def finish(self) -> None:
        """Make everything durable and close."""
        try:
            os.fsync(self._fd)
        finally:
            self.close()

    def close(self) -> None:
        """Close without syncing (after a failure)."""
        if self._direct is not None:
            os.close(self._direct)
            self._direct = None
        os.close(self._fd)


def _aligned(*numbers: int) -> bool:
    return all(n % ALIGNMENT == 0 for n in numbers)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """``pwrite`` until every byte is written (a short write is rare, not impossible)."""
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _open_direct(path: Path) -> int | None:
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    with contextlib.suppress(OSError):
        return os.open(path, os.O_WRONLY | flag | getattr(os, "O_NOFOLLOW", 0))
    return None
