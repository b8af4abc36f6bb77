"""The vault's formats and codec: every reader refuses what it does not know, and says why."""

from __future__ import annotations

import json
import os
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
import zstandard

from backup_jobs.vault import Vault
from backup_jobs.vault.codec import PROBE_BYTES, PROBES, ZSTD_LEVEL, ChunkCodec
from backup_jobs.vault.crypto import Keys
from backup_jobs.vault.format import (
    BLOB_HEADER,
    ZERO_DIGEST,
    DiskIndex,
    FormatError,
    Manifest,
    ManifestDisk,
    chunk_count,
    new_recovery_point_id,
    unpack_blob,
)

COMPRESSIBLE = b"backup-jobs " * 10_000
RANDOM = os.urandom(50_000)


@pytest.mark.parametrize("keys", [None, Keys.generate()], ids=["plain", "encrypted"])
@pytest.mark.parametrize(
    "data", [COMPRESSIBLE, RANDOM, b"x"], ids=["compressible", "random", "tiny"]
)
def test_codec_round_trips(keys: Keys | None, data: bytes) -> None:
    codec = ChunkCodec(keys)
    digest = codec.digest(data)

    blob = b"".join(codec.encode(data, digest))

    assert bytes(codec.decode(blob, digest)) == data


@pytest.mark.parametrize("keys", [None, Keys.generate()], ids=["plain", "encrypted"])
@pytest.mark.parametrize(
    "data", [COMPRESSIBLE, RANDOM, b"x"], ids=["compressible", "random", "tiny"]
)
def test_codec_decodes_into_a_buffer_and_says_how_long_the_chunk_is(
    keys: Keys | None, data: bytes
) -> None:
    codec = ChunkCodec(keys)
    digest = codec.digest(data)
    out = memoryview(bytearray(len(data) + 100))

    length = codec.decode_into(b"".join(codec.encode(data, digest)), digest, out)

    assert length == len(data)
    assert bytes(out[:length]) == data


def _with_raw_length(blob: bytes, length: int) -> bytes:
    """The blob with its header's plaintext length changed (the CRC covers the payload only)."""
    return blob[:8] + length.to_bytes(4, "little") + blob[12:]


@pytest.mark.parametrize("data", [COMPRESSIBLE, RANDOM], ids=["compressed", "raw"])
@pytest.mark.parametrize("lie", [-1, +1], ids=["header-too-short", "header-too-long"])
def test_decode_into_refuses_a_chunk_whose_length_is_not_what_its_header_says(
    data: bytes, lie: int
) -> None:
    codec = ChunkCodec()
    digest = codec.digest(data)
    blob = _with_raw_length(b"".join(codec.encode(data, digest)), len(data) + lie)

    with pytest.raises(FormatError, match="bytes its header says"):
        codec.decode_into(blob, digest, memoryview(bytearray(len(data) + 10)))


def test_decode_into_refuses_a_chunk_longer_than_the_buffer() -> None:
    codec = ChunkCodec()
    digest = codec.digest(COMPRESSIBLE)
    blob = b"".join(codec.encode(COMPRESSIBLE, digest))

    with pytest.raises(FormatError, match="longer than the index's chunk size"):
        codec.decode_into(blob, digest, memoryview(bytearray(len(COMPRESSIBLE) - 1)))


def test_decode_into_refuses_a_damaged_frame_or_the_wrong_digest() -> None:
    codec = ChunkCodec()
    digest = codec.digest(COMPRESSIBLE)
    blob = b"".join(codec.encode(COMPRESSIBLE, digest))
    out = memoryview(bytearray(len(COMPRESSIBLE)))

    with pytest.raises(FormatError, match=r"decompress|bytes its header says"):
        codec.decode_into(blob[:-20], digest, out, check_crc=False)
    with pytest.raises(FormatError, match="does not match its digest"):
        codec.decode_into(blob, codec.digest(b"something else"), out)


def test_compression_is_used_only_when_it_shrinks_the_chunk() -> None:
    codec = ChunkCodec()

    compressed = b"".join(codec.encode(COMPRESSIBLE, codec.digest(COMPRESSIBLE)))
    raw = b"".join(codec.encode(RANDOM, codec.digest(RANDOM)))

    assert len(compressed) < len(COMPRESSIBLE) / 10
    assert len(raw) == len(RANDOM) + 16
    assert unpack_blob(compressed)[0].flags == 1 and unpack_blob(raw)[0].flags == 0


class CountingCompressor:
    """A zstd compressor that records the length of everything it is asked to compress."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.lengths: list[int] = []

    def compress(self, data: bytes | memoryview) -> bytes:
        self.lengths.append(len(data))
        return self._inner.compress(data)  # type: ignore[attr-defined, no-any-return]


def _counting(codec: ChunkCodec) -> CountingCompressor:
    counting = CountingCompressor(codec._compressor())
    codec._local.compressor = counting
    return counting


def test_a_large_incompressible_chunk_is_stored_raw_without_a_whole_compression_pass() -> None:
    codec = ChunkCodec()
    counting = _counting(codec)
    chunk = os.urandom(4 << 20)

    blob = b"".join(codec.encode(chunk, codec.digest(chunk)))

    assert (
        unpack_blob(blob)[0].flags == 0 and bytes(codec.decode(blob, codec.digest(chunk))) == chunk
    )
    assert counting.lengths and max(counting.lengths) <= PROBE_BYTES  # only the probes
    assert sum(counting.lengths) <= PROBES * PROBE_BYTES


def test_a_compressible_stretch_as_long_as_the_probes_spacing_is_found_wherever_it_lies() -> None:
    # Text among random data (a file's worth in a chunk of media): wherever it lies, a probe
    # meets it, and the whole chunk is compressed, and comes out smaller.
    size = 4 << 20
    part = (size - PROBE_BYTES) // (PROBES - 1) + PROBE_BYTES
    noise = os.urandom(size)
    text = (b"backup-jobs " * (part // 12 + 1))[:part]
    codec = ChunkCodec()
    counting = _counting(codec)
    for start in [*range(0, size - part, 37 << 10), size - part]:
        chunk = noise[:start] + text + noise[start + part :]
        counting.lengths.clear()

        blob = b"".join(codec.encode(chunk, codec.digest(chunk)))

        assert unpack_blob(blob)[0].flags == 1, start
        assert size in counting.lengths and len(blob) < size - part // 2


@pytest.mark.parametrize("period", [4 << 10, 64 << 10, 256 << 10, 1 << 20])
def test_incompressible_data_repeated_within_a_chunk_is_stored_as_small_as_zstd_makes_it(
    period: int,
) -> None:
    # A compressed file and its copies side by side in one chunk: every probe looks random,
    # but zstd, which sees the whole chunk, shrinks it to one copy's worth (if its window
    # reaches back that far).
    size = 4 << 20
    chunk = os.urandom(period) * (size // period)
    whole = len(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(chunk))
    codec = ChunkCodec()

    blob = b"".join(codec.encode(chunk, codec.digest(chunk)))

    assert len(blob) - BLOB_HEADER.size == min(whole, size)
    assert bytes(codec.decode(blob, codec.digest(chunk))) == chunk
    if period <= 64 << 10:
        assert len(blob) < size // 2


def test_encrypted_digests_are_keyed_and_blobs_hide_the_content() -> None:
    plain, keyed = ChunkCodec(), ChunkCodec(Keys.generate())

    blob = b"".join(keyed.encode(COMPRESSIBLE, keyed.digest(COMPRESSIBLE)))

    assert plain.digest(COMPRESSIBLE) != keyed.digest(COMPRESSIBLE)
    assert b"backup-jobs" not in blob


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda b: b[:10], "shorter than its header"),
        (lambda b: b"XXXX" + b[4:], "magic"),
        (lambda b: b[:4] + b"\x09" + b[5:], "version 9"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "CRC32"),
    ],
)
def test_damaged_blobs_are_refused_with_the_reason(mangle, reason: str) -> None:  # type: ignore[no-untyped-def]
    codec = ChunkCodec()
    digest = codec.digest(RANDOM)
    blob = b"".join(codec.encode(RANDOM, digest))

    with pytest.raises(FormatError, match=reason):
        codec.decode(mangle(blob), digest)


@pytest.mark.parametrize("data", [COMPRESSIBLE, RANDOM], ids=["compressed", "raw"])
def test_the_blob_crc_is_zlibs_crc32_of_the_payload_so_older_blobs_still_check(
    data: bytes,
) -> None:
    codec = ChunkCodec()
    header, *payload = codec.encode(data, codec.digest(data))

    assert int.from_bytes(header[12:16], "little") == zlib.crc32(b"".join(payload))


def test_a_damaged_blob_without_its_crc_checked_is_still_refused_by_its_digest() -> None:
    codec = ChunkCodec()
    digest = codec.digest(RANDOM)
    blob = b"".join(codec.encode(RANDOM, digest))

    with pytest.raises(FormatError, match="does not match its digest"):
        codec.decode(blob[:-1] + bytes([blob[-1] ^ 1]), digest, check_crc=False)


def test_a_blob_under_the_wrong_name_is_refused() -> None:
    codec = ChunkCodec()
    blob = b"".join(codec.encode(RANDOM, codec.digest(RANDOM)))

    with pytest.raises(FormatError, match="does not match its digest"):
        codec.decode(blob, codec.digest(b"something else"))


def test_an_encrypted_blob_needs_the_key_and_the_right_one() -> None:
    keyed = ChunkCodec(Keys.generate())
    digest = keyed.digest(RANDOM)
    blob = b"".join(keyed.encode(RANDOM, digest))

    with pytest.raises(FormatError, match="without a key"):
        ChunkCodec().decode(blob, digest)
    with pytest.raises(FormatError, match="does not decrypt"):
        ChunkCodec(Keys.generate()).decode(blob, digest)


def test_index_round_trips_and_refuses_damage() -> None:
    index = DiskIndex(10_000, 4096, (b"\x01" * 32, ZERO_DIGEST, b"\x02" * 32))
    data = index.encode()

    assert DiskIndex.decode(data) == index
    with pytest.raises(FormatError, match="truncated"):
        DiskIndex.decode(data[:-1])
    with pytest.raises(FormatError, match="checksum"):
        DiskIndex.decode(data[:30] + bytes([data[30] ^ 1]) + data[31:])
    with pytest.raises(FormatError, match="magic"):
        DiskIndex.decode(b"NOPE" + data[4:])
    with pytest.raises(FormatError, match="too short"):
        DiskIndex.decode(b"")


def test_index_whose_count_disagrees_with_its_sizes_is_refused() -> None:
    bad = DiskIndex(10_000, 4096, (ZERO_DIGEST,))  # 10,000 B need 3 chunks of 4 KiB

    with pytest.raises(FormatError, match="chunk count"):
        DiskIndex.decode(bad.encode())


def test_chunk_count_rounds_up() -> None:
    assert [chunk_count(n, 4) for n in (0, 1, 4, 5, 8)] == [0, 1, 1, 2, 2]


def test_manifest_round_trips_and_refuses_unknown_versions() -> None:
    manifest = Manifest(
        id=new_recovery_point_id(datetime(2026, 5, 1, 12, tzinfo=UTC)),
        vm="cs/vm",
        created_at=datetime(2026, 5, 1, 12, tzinfo=UTC),
        consistency="FileSystemConsistent",
        disks=(ManifestDisk("os", "indexes/x/os.idx", "ab", 10, 4, 3, 2, 9),),
        job_id="j",
    )
    raw = manifest.encode()
    future = json.loads(raw)
    future["version"] = 2

    assert Manifest.decode(raw) == manifest
    assert manifest.id.startswith("20260501T120000Z-")
    assert json.loads(raw)["size_bytes"] == 10
    with pytest.raises(FormatError, match="version 2"):
        Manifest.decode(json.dumps(future).encode())
    with pytest.raises(FormatError, match="does not parse"):
        Manifest.decode(b"{}")


def test_recovery_point_ids_sort_by_time_and_are_unique() -> None:
    early = new_recovery_point_id(datetime(2026, 1, 1, tzinfo=UTC))
    late = new_recovery_point_id(datetime(2026, 1, 2, tzinfo=UTC))

    assert early < late
    assert len({new_recovery_point_id() for _ in range(100)}) == 100


def test_a_vm_s_points_list_by_creation_time_also_within_one_second(tmp_path: Path) -> None:
    vault = Vault.create(tmp_path / "vault")
    second = datetime(2026, 1, 1, 12, tzinfo=UTC)
    # Made in one second: their ids share it, and the random part sorts the newer one first.
    older = Manifest("20260101T120000Z-ffffff", "cs/vm", second.replace(microsecond=1), "C", ())
    newer = Manifest("20260101T120000Z-000000", "cs/vm", second.replace(microsecond=2), "C", ())
    other = Manifest("20260101T115959Z-aaaaaa", "cs/other", second, "C", ())
    for manifest in (newer, other, older):
        vault.commit(manifest)

    assert [m.id for m in vault.manifests("cs/vm")] == [older.id, newer.id]
    assert [m.id for m in vault.manifests()] == [other.id, older.id, newer.id]
