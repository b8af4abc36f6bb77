"""The blob reader: whole files into a thread's buffer, around the page cache or not."""

from __future__ import annotations

import errno
import os
import tempfile
import threading
from pathlib import Path

import pytest

from backup_jobs.vault.chunkstores import blobreader
from backup_jobs.vault.chunkstores.blobreader import ALIGNMENT, BlobReader

SIZES = [0, 1, ALIGNMENT - 1, ALIGNMENT, ALIGNMENT + 1, 5 * ALIGNMENT + 3]


@pytest.mark.parametrize("where", ["tmp", "shm"])
def test_files_read_back_exactly_whatever_their_size(tmp_path: Path, where: str) -> None:
    shm = Path("/dev/shm")  # noqa: S108 - tmpfs, where direct I/O may be refused
    if where == "shm" and not shm.is_dir():
        pytest.skip("no /dev/shm here")
    folder = tmp_path if where == "tmp" else Path(tempfile.mkdtemp(dir=shm))
    reader = BlobReader()
    try:
        for size in [*SIZES, *reversed(SIZES)]:  # the buffer grows, then is reused
            data = os.urandom(size)
            (folder / "blob").write_bytes(data)
            assert bytes(reader.read(str(folder / "blob"))) == data
    finally:
        (folder / "blob").unlink(missing_ok=True)
        if where == "shm":
            folder.rmdir()


def test_each_thread_reads_into_a_buffer_of_its_own(tmp_path: Path) -> None:
    reader = BlobReader()
    for name in "ab":
        (tmp_path / name).write_bytes(name.encode() * ALIGNMENT)
    first = reader.read(str(tmp_path / "a"))
    seen: list[bytes] = []
    thread = threading.Thread(target=lambda: seen.append(bytes(reader.read(str(tmp_path / "b")))))
    thread.start()
    thread.join()

    assert bytes(first) == b"a" * ALIGNMENT
    assert seen == [b"b" * ALIGNMENT]


def test_a_file_system_that_refuses_direct_io_is_read_the_ordinary_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def refuse_direct(path: str, flags: int, *args: int) -> int:
        if flags & blobreader._DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(blobreader.os, "open", refuse_direct)
    reader = BlobReader()
    (tmp_path / "blob").write_bytes(b"blob" * 3000)

    assert bytes(reader.read(str(tmp_path / "blob"))) == b"blob" * 3000
    assert not reader._direct


def test_a_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        BlobReader().read(str(tmp_path / "nothing"))


def test_a_read_that_fails_names_the_file(tmp_path: Path) -> None:
    # open() names its file but preadv does not: a directory (or an I/O error) in the middle
    # of a restore must not read as an error of whatever file the caller names instead.
    (tmp_path / "blob").mkdir()

    with pytest.raises(IsADirectoryError) as raised:
        BlobReader().read(str(tmp_path / "blob"))

    assert raised.value.filename == str(tmp_path / "blob")
