"""One contract suite for every chunk store: memory and filesystem."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backup_jobs.vault.chunkstore import ChunkMissing, ChunkStore
from backup_jobs.vault.chunkstores.filesystem import FilesystemChunkStore
from backup_jobs.vault.chunkstores.memory import MemoryChunkStore

A, B = "ab" * 32, "cd" * 32


@pytest.fixture(params=["memory", "filesystem"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChunkStore]:
    yield MemoryChunkStore() if request.param == "memory" else FilesystemChunkStore(tmp_path)


def test_put_writes_once_and_never_rewrites(store: ChunkStore) -> None:
    assert store.put(A, [b"first"])
    assert not store.put(A, [b"second"])

    assert store.get(A) == b"first"
    assert store.exists(A) and not store.exists(B)
    with pytest.raises(ChunkMissing):
        store.get(B)


def test_chunks_lists_blobs_with_their_times(store: ChunkStore) -> None:
    before = time.time() - 1
    store.put(A, [b"a"])
    store.put(B, [b"b"])

    listed = dict(store.chunks())

    assert set(listed) == {A, B}
    assert all(t >= before for t in listed.values())


def test_usage_counts_stored_blobs_and_their_bytes_not_garbage(store: ChunkStore) -> None:
    assert store.usage() == (0, 0)
    store.put(A, [b"abc", b"de"])
    store.put(B, [b"b"])
    store.condemn(B)

    assert store.usage() == (1, 5)


def test_condemned_blobs_are_still_readable_and_can_be_rescued_or_purged(store: ChunkStore) -> None:
    store.put(A, [b"a"])
    store.put(B, [b"bb", b"b"])
    store.condemn(A)
    store.condemn(B)

    assert not store.exists(A) and store.get(A) == b"a"
    assert {d for d, _ in store.garbage()} == {A, B}
    store.rescue(A)
    assert store.purge(B) == 3 and store.purge(B) == 0  # the bytes it took; then gone

    assert store.exists(A) and list(store.garbage()) == []
    with pytest.raises(ChunkMissing):
        store.get(B)


def test_quarantined_blob_is_gone_so_it_can_be_stored_again(store: ChunkStore) -> None:
    store.put(A, [b"corrupt"])
    store.quarantine(A)

    assert not store.exists(A)
    assert store.put(A, [b"good"])
    assert store.get(A) == b"good"


def test_touch_refreshes_the_time(store: ChunkStore) -> None:
    store.put(A, [b"a"])
    first = dict(store.chunks())[A]
    time.sleep(0.02)
    store.touch(A)

    assert dict(store.chunks())[A] > first


def test_sync_and_temporaries_are_safe_on_an_empty_store(store: ChunkStore) -> None:
    store.sync()

    assert store.remove_temporaries(time.time()) == 0


def test_a_blob_given_in_parts_is_stored_whole(store: ChunkStore) -> None:
    store.put(A, [b"he", b"", b"llo" * 1000])

    assert store.get(A) == b"he" + b"llo" * 1000


def test_get_view_reads_what_get_reads_from_the_store_or_its_garbage(store: ChunkStore) -> None:
    big = os.urandom(3 * 4096 + 5)  # not whole blocks: the direct read asks for more
    store.put(A, [big[:16], big[16:]])
    store.put(B, [b"small"])
    store.condemn(B)

    assert bytes(store.get_view(A)) == big
    assert bytes(store.get_view(B)) == b"small"  # the thread's buffer, reused
    store.purge(B)
    with pytest.raises(ChunkMissing):
        store.get_view(B)
