"""Creating a blob file durably, around the page cache where the file system allows it.

A backup writes each blob once and does not read it back: through the page cache, every byte
is copied into freshly allocated cache pages, written back by the fsync, and the pages are
then dropped (``POSIX_FADV_DONTNEED``) — about a tenth of a backup's CPU went to that kernel
work. With ``O_DIRECT`` the disk reads the blob from a page-aligned buffer of the writing
thread instead: one copy in user space (the parts into that buffer), none in the kernel.
Direct I/O needs whole blocks, so the file is written padded to 4 KiB and truncated to the
blob's length before its fsync. A file system that refuses ``O_DIRECT`` (tmpfs; some
network file systems refuse the I/O rather than the open) gets the buffered writes.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading
from collections.abc import Sequence
from pathlib import Path

ALIGNMENT = 4096
_DIRECT = getattr(os, "O_DIRECT", 0)


class DurableFiles:
    """Creates files whose bytes are on the disk (fsynced) when ``create`` returns."""

    def __init__(self) -> None:
        self._direct = bool(_DIRECT)  # until the file system says otherwise
        self._local = threading.local()

    def create(self, path: Path, parts: Sequence[bytes]) -> None:
        """Create ``path`` (it must not exist) holding ``parts``, fsynced."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            if self._direct and self._set_direct(fd) and self._write_direct(fd, parts):
                os.fsync(fd)  # the file's size and blocks: its data is on the disk already
                return
            _write_buffered(fd, parts)
        finally:
            os.close(fd)

    def _set_direct(self, fd: int) -> bool:
        """Turn on ``O_DIRECT`` for ``fd``; False (and buffered from now on) if refused."""
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | _DIRECT)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self._direct = False
        return self._direct

    def _write_direct(self, fd: int, parts: Sequence[bytes]) -> bool:
        """Write ``parts`` padded to whole blocks, then cut the file to their length.

        False (nothing written) if the file system refuses direct I/O after all.
        """
        length = sum(len(part) for part in parts)
        padded = -(-length // ALIGNMENT) * ALIGNMENT
        buffer = self._buffer(max(padded, ALIGNMENT))
        at = 0
        for part in parts:
            buffer[at : at + len(part)] = part
            at += len(part)
        buffer[length:padded] = bytes(padded - length)  # no stale bytes on the disk
        view = memoryview(buffer)[:padded]
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            if exc.errno != errno.EINVAL or len(view) != padded:
                raise
            self._direct = False
            return False
        os.ftruncate(fd, length)
        return True

    def _buffer(self, size: int) -> mmap.mmap:
        buffer: mmap.mmap | None = getattr(self._local, "buffer", None)
        if buffer is None or len(buffer) < size:
            buffer = self._local.buffer = mmap.mmap(-1, size)  # page-aligned
        return buffer


def _write_buffered(fd: int, parts: Sequence[bytes]) -> None:
    """Write through the page cache, fsync, and give the pages back (read rarely, if ever)."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if flags & _DIRECT:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~_DIRECT)
    write_all(fd, parts)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def write_all(fd: int, parts: Sequence[bytes]) -> None:
    """``writev`` until every byte of ``parts`` is written."""
    views = [memoryview(p) for p in parts if len(p)]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
