"""What a backup reads: an image file, or any point-in-time view of a disk a provider offers.

A provider's snapshot need not be a file (the local fleet's is a copy-on-write view over the
live image), so the backup reads through ``ImageReader``: the size, where data may be (holes
are never read) and positional reads from several threads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from backup_jobs.vault.sparse import data_extents


class ImageReader(Protocol):
    """A disk image as of one moment, read by offset; thread-safe ``pread``."""

    @property
    def size(self) -> int:
        """The image's size in bytes."""
        ...

    def data_extents(self) -> list[tuple[int, int]]:
        """``(start, end)`` ranges that may hold data; everything else reads as zeros."""
        ...

    def pread(self, length: int, offset: int) -> bytes:
        """``length`` bytes at ``offset`` (short only past the end)."""
        ...

    def close(self) -> None:
        """Let go of what the reader holds."""
        ...


class FileImage:
    """An image file read as it is now (the caller keeps it from changing meanwhile)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        self._size = os.fstat(self._fd).st_size

    @property
    def size(self) -> int:
        """The file's size when it was opened."""
        return self._size

    def data_extents(self) -> list[tuple[int, int]]:
        """The file's data extents (``SEEK_DATA``/``SEEK_HOLE``)."""
        return data_extents(self._fd, self._size)

    def pread(self, length: int, offset: int) -> bytes:
        """A positional read."""
        return os.pread(self._fd, length, offset)

    def close(self) -> None:
        """Close the file."""
        os.close(self._fd)
