"""The image writer: direct I/O where it can, buffered for unaligned pieces, same bytes."""

from __future__ import annotations

import errno
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


def test_a_direct_write_refused_midway_goes_buffered_and_close_frees_both_descriptors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = ImageWriter(tmp_path / "disk.img", CHUNK)
    direct = image._direct  # the descriptor whose release is the point
    if direct is None:
        pytest.skip("this file system refuses O_DIRECT at open")
    real_pwrite = os.pwrite

    def refuse_direct(fd: int, data: memoryview, offset: int) -> int:
        if fd == direct:
            raise OSError(errno.EINVAL, "direct I/O refused")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", refuse_direct)
    data = os.urandom(CHUNK)
    _write_from_buffer(image, data, 0)
    image.finish()

    assert (tmp_path / "disk.img").read_bytes() == data
    with pytest.raises(OSError) as closed:
        os.fstat(direct)
    assert closed.value.errno == errno.EBADF
