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
    FormatError,
    pack_blob,
    unpack_blob,
)

ZSTD_LEVEL = 1
NONCE_SIZE = 12


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
        """The blob for a chunk, in parts: zstd if smaller, then AES-GCM when encrypted."""
        compressed = self._compressor().compress(data)
        flags, payload = (FLAG_COMPRESSED, compressed) if len(compressed) < len(data) else (0, data)
        del compressed
        if self._aead is None:
            return pack_blob(flags, len(data), [payload])
        nonce = os.urandom(NONCE_SIZE)
        sealed = self._aead.encrypt(nonce, payload, digest)
        return pack_blob(flags | FLAG_ENCRYPTED, len(data), [nonce, sealed])

    def decode(self, blob: bytes, digest: bytes, check_crc: bool = True) -> bytes | memoryview:
        """The verified chunk of a blob (a view into it when stored raw); ``FormatError`` if bad.

        ``check_crc=False`` skips the CRC: the digest, checked always, covers every byte too.
        """
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
        data: bytes | memoryview = payload
        if header.flags & FLAG_COMPRESSED:
            try:
                data = self._decompressor().decompress(payload, max_output_size=header.raw_length)
            except zstandard.ZstdError as exc:
                raise FormatError(f"blob does not decompress: {exc}") from exc
        if len(data) != header.raw_length:
            raise FormatError(f"chunk is {len(data)} bytes, its header says {header.raw_length}")
        if not hmac.compare_digest(self.digest(data), digest):
            raise FormatError("chunk content does not match its digest")
        return data

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
