"""Naming the file in an ``OSError``: ``open`` names it, ``preadv``, ``writev`` and ``fsync`` do
not, so a full disk or a failing read would say "No space left on device" of no file at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """Re-raise an ``OSError`` of the block that names no file as the same error of ``path``."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
