"""The image writer: direct I/O where it can, buffered for unaligned pieces, same bytes."""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from backup_jobs.vault.imagefile import ALIGNMENT, ImageWriter

CHUNK = 16 * ALIGNMENT


def _write_from_buffer(image: ImageWriter, data: bytes, offset: int) -> None:
    buffer = image.chunk_buffer(CHUNK)
    buffer[: len(data)] = data
    # Two pieces, as a restore writes the runs of a chunk around its zero blocks.
    middle = min(ALIGNMENT, len(data))
    image.write_from_buffer(0, middle, offset)
    image.write_from_buffer(middle, len(data), offset + middle)


@pytest.mark.parametrize("where", ["tmp", "shm"])
def test_chunks_written_from_threads_read_back_exactly_and_holes_stay_holes(
    tmp_path: Path, where: str
) -> None:
    shm = Path("/dev/shm")  # noqa: S108 - tmpfs, where direct I/O may be refused
    if where == "shm" and not shm.is_dir():
        pytest.skip("no /dev/shm here")
    folder = tmp_path if where == "tmp" else Path(tempfile.mkdtemp(dir=shm))
    path = folder / "image.img"
    size = 10 * CHUNK + 1234  # an unaligned tail
    chunks = {i: os.urandom(min(CHUNK, size - i * CHUNK)) for i in (0, 1, 2, 7, 10)}
    try:
        image = ImageWriter(path, size)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: _write_from_buffer(image, chunks[i], i * CHUNK), chunks))
        image.finish()

        data = path.read_bytes()
        assert len(data) == size
        for i in range(11):
            expected = chunks.get(i, bytes(min(CHUNK, size - i * CHUNK)))
            assert data[i * CHUNK : (i + 1) * CHUNK] == expected
        assert path.stat().st_blocks * 512 < 8 * CHUNK
    finally:
        path.unlink(missing_ok=True)
        if where == "shm":
            folder.rmdir()
