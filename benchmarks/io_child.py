"""The I/O of a full backup alone, in a process of its own: what reading and writing cost the CPUs.

Run as ``python benchmarks/io_child.py IMAGE VAULT WORK`` after a full backup of IMAGE into
VAULT, the image's pages warm as the backup's were. It reads the image's data as the backup
does (every chunk that holds data, by ``pread``) and writes files of the sizes of the vault's
blobs under WORK as the vault does (a new file each in fan-out folders, written, fsynced), then
fsyncs the folders. Prints the CPU seconds (user + system) that took: no hashing, no
compression, no Python to speak of. The compute floor leaves this out; a backup cannot.
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

from backup_jobs.vault.sparse import ExtentMap, data_extents

CHUNK = 4 << 20


def run(image: str, vault: str, work: str) -> None:
    """Read the image's data, write the vault's blob sizes; print the CPU seconds spent."""
    sizes = [entry.stat().st_size for entry in Path(vault, "chunks").glob("*/*")]
    payload = os.urandom(max(sizes, default=0))
    start = _cpu()
    fd = os.open(image, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        extents = ExtentMap(data_extents(fd, size))
        for offset in range(0, size, CHUNK):
            if extents.has_data(offset, min(offset + CHUNK, size)):
                os.pread(fd, CHUNK, offset)
    finally:
        os.close(fd)
    folders = set()
    for n, length in enumerate(sizes):
        folder = Path(work, f"{n % 4096:03x}")
        if folder not in folders:
            folder.mkdir(parents=True, exist_ok=True)
            folders.add(folder)
        out = os.open(folder / f"blob{n}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(out, memoryview(payload)[:length])
            os.fsync(out)
        finally:
            os.close(out)
    for folder in folders:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(dir_fd)
        os.close(dir_fd)
    print(_cpu() - start)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    run(*sys.argv[1:4])
