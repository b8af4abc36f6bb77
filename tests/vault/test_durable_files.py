"""Blob files: the same bytes whether written around the page cache or through it."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from backup_jobs.vault.chunkstores import durable
from backup_jobs.vault.chunkstores.durable import ALIGNMENT, DurableFiles

SIZES = [0, 1, ALIGNMENT - 1, ALIGNMENT, ALIGNMENT + 1, 3 * ALIGNMENT + 17]


@pytest.fixture(params=["tmp", "shm"])
def folder(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    if request.param == "tmp":
        yield tmp_path
        return
    shm = Path("/dev/shm")  # noqa: S108 - tmpfs, where direct I/O may be refused
    if not shm.is_dir():
        pytest.skip("no /dev/shm here")
    made = Path(tempfile.mkdtemp(dir=shm))
    yield made
    for path in made.iterdir():
        path.unlink()
    made.rmdir()


@pytest.mark.parametrize("size", SIZES)
def test_a_file_holds_exactly_its_parts(folder: Path, size: int) -> None:
    data = os.urandom(size)
    files = DurableFiles()

    files.create(folder / "blob", [data[:16], data[16:]])
    files.create(folder / "again", [data])  # the thread's buffer, reused

    assert (folder / "blob").read_bytes() == data
    assert (folder / "again").read_bytes() == data


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "blob").write_bytes(b"first")

    with pytest.raises(FileExistsError):
        DurableFiles().create(tmp_path / "blob", [b"second"])

    assert (tmp_path / "blob").read_bytes() == b"first"


def test_a_file_system_that_refuses_direct_io_gets_buffered_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = durable.fcntl.fcntl

    def refuse_direct(fd: int, command: int, arg: int = 0) -> int:
        if command == durable.fcntl.F_SETFL and arg & durable._DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, command, arg)

    monkeypatch.setattr(durable.fcntl, "fcntl", refuse_direct)
    files = DurableFiles()
    data = os.urandom(ALIGNMENT + 5)

    files.create(tmp_path / "blob", [data])

    assert (tmp_path / "blob").read_bytes() == data
    assert not files._direct


def test_direct_io_refused_at_the_first_write_falls_back_to_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write

    def refuse(fd: int, data: memoryview) -> int:
        if durable.fcntl.fcntl(fd, durable.fcntl.F_GETFL) & durable._DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(durable.os, "write", refuse)
    files = DurableFiles()
    data = os.urandom(2 * ALIGNMENT + 3)

    files.create(tmp_path / "blob", [data[:1], data[1:]])

    assert (tmp_path / "blob").read_bytes() == data
    assert not files._direct
