"""Vault keys: an AES-256-GCM key for blobs and an id key that keys the chunk digests.

The key file is JSON (version 1) with both keys in hex, created with mode 0600, and kept
outside the vault; the vault stores only a key check, so a wrong key is told from the right one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from backup_jobs.errors import ConfigurationError

KEY_FILE_VERSION = 1
KEY_CHECK_MESSAGE = b"backup-jobs key check"


@dataclass(frozen=True)
class Keys:
    """The two keys of an encrypted vault."""

    encryption_key: bytes
    id_key: bytes

    @classmethod
    def generate(cls) -> Keys:
        """Fresh random keys."""
        return cls(secrets.token_bytes(32), secrets.token_bytes(32))

    def check_value(self) -> str:
        """What the vault's config records to recognise these keys."""
        return hmac.digest(self.id_key, KEY_CHECK_MESSAGE, "sha256").hex()

    def save(self, path: Path) -> None:
        """Write a new key file readable by its owner only; never overwrites one."""
        data = {
            "version": KEY_FILE_VERSION,
            "encryption_key": self.encryption_key.hex(),
            "id_key": self.id_key.hex(),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(data, out)

    @classmethod
    def load(cls, path: Path) -> Keys:
        """Read a key file; ``ConfigurationError`` names the file and what is wrong."""
        try:
            data = json.loads(path.read_text())
            if data["version"] != KEY_FILE_VERSION:
                raise ValueError(f"version {data['version']} is not supported")
            keys = cls(bytes.fromhex(data["encryption_key"]), bytes.fromhex(data["id_key"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(detail=f"key file {path} cannot be used: {exc}") from exc
        if len(keys.encryption_key) != 32 or len(keys.id_key) != 32:
            raise ConfigurationError(detail=f"key file {path} must hold two 32-byte keys")
        return keys


def plain_digest(data: bytes | memoryview) -> bytes:
    """SHA-256 of a chunk (unencrypted vaults)."""
    return hashlib.sha256(data).digest()
