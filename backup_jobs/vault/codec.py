"""Chunk codec: digest, compress, encrypt and back, checking everything on the way back.

Hashing, zstd and AES-GCM all release the GIL, so one codec is shared by the threads of a
backup or restore; zstd contexts are per thread (they are not thread-safe).
"""

from __future__ import annotations

import hmac
import os
import threading

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from backup_jobs.vault.crypto import Keys, plain_digest
from backup_jobs.vault.format import (
    FLAG_COMPRESSED,
    FLAG_ENCRYPTED,
    BlobHeader,
    FormatError,
    pack_blob,
    unpack_blob,
)

ZSTD_LEVEL = 1
NONCE_SIZE = 12
# Incompressible chunks (compressed or encrypted files, media) are stored raw without a whole
# compression pass: zstd takes ~1 ms per 4 MiB to find that out, ~5 % of a backup's CPU on a
# disk that is one third such data. Probes of 4 KiB spread evenly over the chunk decide; one
# that compresses at all (below 99 %: zstd adds ~0.1 % to random data) sends the whole chunk
# through zstd, so compressible chunks stop at their first probe. Probes cannot see data that
# repeats farther apart than they are long (a compressed file and its copy in one chunk, which
# zstd shrinks by half), so a chunk whose probes all fail is compressed anyway if any of its
# 4 KiB blocks begins like another (file systems place files at 4 KiB boundaries): ~0.13 ms
# per 4 MiB. What is still missed, stored raw: a compressible stretch shorter than the probes'
# spacing (~270 KiB in a 4 MiB chunk) in a chunk otherwise incompressible, and incompressible
# data repeated within a chunk off the 4 KiB grid. Chunks under PROBE_MIN are not probed.
PROBES = 16
PROBE_BYTES = 4 << 10
PROBE_MIN = 256 << 10
PROBE_RATIO = 0.99
BLOCK = 4 << 10  # the grid of the repeat check
BLOCK_HEAD = 16  # bytes of each block compared: random data never matches by chance


class ChunkCodec:
    """Turns chunks into blobs and blobs back into verified chunks."""

    def __init__(self, keys: Keys | None = None) -> None:
        self._keys = keys
        self._aead = AESGCM(keys.encryption_key) if keys else None
        self._local = threading.local()

    @property
    def encrypted(self) -> bool:
        """True if blobs are encrypted and digests keyed."""
        return self._keys is not None

    def digest(self, data: bytes | memoryview) -> bytes:
        """The chunk's name: SHA-256, or HMAC-SHA-256 with the id key when encrypted."""
        if self._keys is None:
            return plain_digest(data)
        return hmac.digest(self._keys.id_key, data, "sha256")

    def encode(self, data: bytes, digest: bytes) -> list[bytes]:
        """The blob for a chunk, in parts: zstd if smaller, then AES-GCM when encrypted.

        A chunk whose every probe is incompressible is stored raw without trying the whole.
        """
        flags, payload = 0, data
        if self._may_compress(data):
            compressed = self._compressor().compress(data)
            if len(compressed) < len(data):
                flags, payload = FLAG_COMPRESSED, compressed
            del compressed
        if self._aead is None:
            return pack_blob(flags, len(data), [payload])
        nonce = os.urandom(NONCE_SIZE)
        sealed = self._aead.encrypt(nonce, payload, digest)
        return pack_blob(flags | FLAG_ENCRYPTED, len(data), [nonce, sealed])

    def _may_compress(self, data: bytes) -> bool:
        """False if every probe of a large chunk is incompressible and no block of it repeats
        (random-looking data)."""
        if len(data) < PROBE_MIN:
            return True
        compress = self._compressor().compress
        view = memoryview(data)
        step = (len(data) - PROBE_BYTES) // (PROBES - 1)
        for n in range(PROBES):
            probe = view[n * step : n * step + PROBE_BYTES]
            if len(compress(probe)) < PROBE_RATIO * PROBE_BYTES:
                return True
        starts = range(0, len(data) - BLOCK + 1, BLOCK)
        return len({data[i : i + BLOCK_HEAD] for i in starts}) < len(starts)

    def decode(
        self, blob: bytes | memoryview, digest: bytes, check_crc: bool = True
    ) -> bytes | memoryview:
        """The verified chunk of a blob (a view into it when stored raw); ``FormatError`` if bad.

        ``check_crc=False`` skips the CRC: the digest, checked always, covers every byte too.
        """
        header, payload = self._open(blob, digest, check_crc)
        data: bytes | memoryview = payload
        if header.flags & FLAG_COMPRESSED:
            try:
                data = self._decompressor().decompress(payload, max_output_size=header.raw_length)
            except zstandard.ZstdError as exc:
                raise FormatError(f"blob does not decompress: {exc}") from exc
        if len(data) != header.raw_length:
            raise FormatError(f"chunk is {len(data)} bytes, its header says {header.raw_length}")
        self._check_digest(data, digest)
        return data

    def decode_into(
        self, blob: bytes | memoryview, digest: bytes, out: memoryview, check_crc: bool = True
    ) -> int:
        """Decode a blob into ``out`` and verify it there; the chunk's length.

        A restore decompresses each chunk straight into the buffer it writes from: no chunk
        sized allocation (fresh pages, faulted in and zeroed by the kernel) and no copy per
        chunk. ``FormatError`` as ``decode``; ``out`` then holds nothing of use.
        """
        header, payload = self._open(blob, digest, check_crc)
        length = header.raw_length
        if length > len(out):
            raise FormatError(f"chunk of {length} bytes is longer than the index's chunk size")
        target = out[:length]
        if header.flags & FLAG_COMPRESSED:
            filled = self._decompress_into(payload, target)
        else:
            filled = len(payload)
            if filled == length:
                target[:] = payload
        if filled != length:
            raise FormatError(f"chunk does not have the {length} bytes its header says")
        self._check_digest(target, digest)
        return length

    def _open(
        self, blob: bytes | memoryview, digest: bytes, check_crc: bool
    ) -> tuple[BlobHeader, memoryview]:
        """The header and the plaintext payload (still compressed if it was) of a blob."""
        header, payload = unpack_blob(blob, check_crc)
        if header.flags & FLAG_ENCRYPTED:
            if self._aead is None:
                raise FormatError("blob is encrypted but the vault was opened without a key")
            try:
                payload = memoryview(
                    self._aead.decrypt(
                        bytes(payload[:NONCE_SIZE]), bytes(payload[NONCE_SIZE:]), digest
                    )
                )
            except InvalidTag as exc:
                raise FormatError("blob does not decrypt (wrong key or altered data)") from exc
        return header, payload

    def _decompress_into(self, payload: memoryview, target: memoryview) -> int:
        """Decompress one zstd frame into ``target``: the bytes it holds (one more if the frame
        is longer than ``target``)."""
        try:
            reader = self._decompressor().stream_reader(payload, read_size=max(len(payload), 1))
            filled = 0
            while filled < len(target):
                got = reader.readinto(target[filled:])
                if not got:
                    return filled
                filled += got
            return filled + reader.readinto(bytearray(1))
        except zstandard.ZstdError as exc:
            raise FormatError(f"blob does not decompress: {exc}") from exc

    def _check_digest(self, data: bytes | memoryview, digest: bytes) -> None:
        if not hmac.compare_digest(self.digest(data), digest):
            raise FormatError("chunk content does not match its digest")

    def _compressor(self) -> zstandard.ZstdCompressor:
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = self._local.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        return compressor

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        decompressor = getattr(self._local, "decompressor", None)
        if decompressor is None:
            decompressor = self._local.decompressor = zstandard.ZstdDecompressor()
        return decompressor
