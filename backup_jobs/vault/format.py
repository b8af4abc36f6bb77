"""The vault's on-disk formats (docs/design.md §3): blob header, disk index, manifest, ids.

Pure functions over bytes and JSON; the readers refuse unknown versions and name what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from zlib_ng.zlib_ng import crc32

DIGEST_SIZE = 32
ZERO_DIGEST = bytes(DIGEST_SIZE)
DEFAULT_CHUNK_SIZE = 4 << 20

BLOB_MAGIC = b"BJCK"
BLOB_VERSION = 1
BLOB_HEADER = struct.Struct("<4sBBHII")  # magic, version, flags, reserved, raw length, crc32
FLAG_COMPRESSED = 0x01
FLAG_ENCRYPTED = 0x02

INDEX_MAGIC = b"BJIX"
INDEX_VERSION = 1
INDEX_HEADER = struct.Struct("<4sB3xIQI")  # magic, version, chunk size, image size, count

MANIFEST_VERSION = 1
CONFIG_VERSION = 1


class FormatError(ValueError):
    """Raised when stored bytes do not parse as the format they claim (the message says why)."""


@dataclass(frozen=True)
class BlobHeader:
    """The 16-byte header of a stored chunk."""

    flags: int
    raw_length: int
    crc32: int

    def pack(self) -> bytes:
        """The header as stored."""
        return BLOB_HEADER.pack(
            BLOB_MAGIC, BLOB_VERSION, self.flags, 0, self.raw_length, self.crc32
        )


def pack_blob(flags: int, raw_length: int, payload: Sequence[bytes]) -> list[bytes]:
    """Header and payload parts, with the CRC32 of the payload (kept in parts: no copies)."""
    crc = 0
    for part in payload:
        crc = crc32(part, crc)
    return [BlobHeader(flags, raw_length, crc).pack(), *payload]


def unpack_blob(blob: bytes | memoryview, check_crc: bool = True) -> tuple[BlobHeader, memoryview]:
    """The header and payload of a blob; ``FormatError`` if the header or CRC is wrong."""
    if len(blob) < BLOB_HEADER.size:
        raise FormatError(f"blob is {len(blob)} bytes, shorter than its header")
    magic, version, flags, _, raw_length, crc = BLOB_HEADER.unpack_from(blob)
    if magic != BLOB_MAGIC:
        raise FormatError("blob magic is wrong")
    if version != BLOB_VERSION:
        raise FormatError(f"blob version {version} is not supported")
    payload = memoryview(blob)[BLOB_HEADER.size :]
    if check_crc and crc32(payload) != crc:
        raise FormatError("blob CRC32 does not match its payload")
    return BlobHeader(flags, raw_length, crc), payload


@dataclass(frozen=True)
class DiskIndex:
    """One image of one recovery point: its size, chunk size and chunk digests."""

    image_size: int
    chunk_size: int
    digests: tuple[bytes, ...]

    def encode(self) -> bytes:
        """The binary index with its trailing checksum."""
        body = INDEX_HEADER.pack(
            INDEX_MAGIC, INDEX_VERSION, self.chunk_size, self.image_size, len(self.digests)
        ) + b"".join(self.digests)
        return body + hashlib.sha256(body).digest()

    @classmethod
    def decode(cls, data: bytes) -> DiskIndex:
        """Parse and check an index; ``FormatError`` names what is wrong."""
        if len(data) < INDEX_HEADER.size + DIGEST_SIZE:
            raise FormatError(f"index is {len(data)} bytes, too short")
        magic, version, chunk_size, image_size, count = INDEX_HEADER.unpack_from(data)
        if magic != INDEX_MAGIC:
            raise FormatError("index magic is wrong")
        if version != INDEX_VERSION:
            raise FormatError(f"index version {version} is not supported")
        expected = INDEX_HEADER.size + DIGEST_SIZE * count + DIGEST_SIZE
        if len(data) != expected:
            raise FormatError(f"index is {len(data)} bytes, expected {expected} (truncated?)")
        body, checksum = data[:-DIGEST_SIZE], data[-DIGEST_SIZE:]
        if hashlib.sha256(body).digest() != checksum:
            raise FormatError("index checksum does not match")
        start = INDEX_HEADER.size
        digests = tuple(
            body[start + i * DIGEST_SIZE : start + (i + 1) * DIGEST_SIZE] for i in range(count)
        )
        if chunk_size <= 0 or count != chunk_count(image_size, chunk_size):
            raise FormatError("index chunk count does not match its image and chunk size")
        return cls(image_size, chunk_size, digests)


def chunk_count(image_size: int, chunk_size: int) -> int:
    """How many chunks cover an image."""
    return -(-image_size // chunk_size)


@dataclass(frozen=True)
class ManifestDisk:
    """One disk of a recovery point."""

    name: str
    index: str
    index_sha256: str
    size_bytes: int
    chunk_size: int
    chunks: int
    stored_chunks: int
    new_bytes: int
    # Chunks this backup read from the disk (None in manifests written before it was kept):
    # fewer than the chunks with data when changed-block tracking spared the rest.
    read_chunks: int | None = None


@dataclass(frozen=True)
class Manifest:
    """A committed recovery point (the commit point of a backup)."""

    id: str
    vm: str
    created_at: datetime
    consistency: str
    disks: tuple[ManifestDisk, ...]
    job_id: str = ""
    policy: str = ""
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        """Logical size of every disk."""
        return sum(d.size_bytes for d in self.disks)

    @property
    def new_bytes(self) -> int:
        """Bytes this backup stored that were not in the vault before."""
        return sum(d.new_bytes for d in self.disks)

    def encode(self) -> bytes:
        """The manifest as stored (JSON)."""
        data = {
            "version": MANIFEST_VERSION,
            "id": self.id,
            "vm": self.vm,
            "created_at": self.created_at.isoformat(),
            "consistency": self.consistency,
            "job_id": self.job_id,
            "policy": self.policy,
            "disks": [asdict(d) for d in self.disks],
            "size_bytes": self.size_bytes,
            "new_bytes": self.new_bytes,
            "properties": self.properties,
        }
        return json.dumps(data, indent=2, sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Manifest:
        """Parse a manifest; ``FormatError`` names what is wrong."""
        try:
            data = json.loads(raw)
            if data["version"] != MANIFEST_VERSION:
                raise FormatError(f"manifest version {data['version']} is not supported")
            return cls(
                id=data["id"],
                vm=data["vm"],
                created_at=datetime.fromisoformat(data["created_at"]),
                consistency=data["consistency"],
                disks=tuple(ManifestDisk(**d) for d in data["disks"]),
                job_id=data["job_id"],
                policy=data["policy"],
                properties=data.get("properties", {}),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise FormatError(f"manifest does not parse: {exc}") from exc


def new_recovery_point_id(now: datetime | None = None) -> str:
    """``YYYYmmddTHHMMSSZ-xxxxxx``: sorts by time, unique across writers."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
