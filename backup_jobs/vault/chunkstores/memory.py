"""An in-memory chunk store with the filesystem store's semantics; times from a clock function."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence

from backup_jobs.vault.chunkstore import ChunkMissing


class MemoryChunkStore:
    """Blobs in dictionaries."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._mutex = threading.Lock()
        self.blobs: dict[str, tuple[bytes, float]] = {}
        self.condemned: dict[str, tuple[bytes, float]] = {}
        self.quarantined: dict[str, bytes] = {}

    def exists(self, digest: str) -> bool:
        """True if the blob is stored."""
        return digest in self.blobs

    def put(self, digest: str, blob: Sequence[bytes]) -> bool:
        """Store unless present."""
        with self._mutex:
            if digest in self.blobs:
                return False
            self.blobs[digest] = (b"".join(blob), self._clock())
            return True

    def get(self, digest: str) -> bytes:
        """From the store, else from garbage."""
        found = self.blobs.get(digest) or self.condemned.get(digest)
        if found is None:
            raise ChunkMissing(digest)
        return found[0]

    def get_view(self, digest: str) -> memoryview:
        """As ``get``: a view of the stored bytes."""
        return memoryview(self.get(digest))

    def touch(self, digest: str) -> None:
        """Refresh the blob's time."""
        with self._mutex:
            if digest in self.blobs:
                self.blobs[digest] = (self.blobs[digest][0], self._clock())

    def chunks(self) -> Iterator[tuple[str, float]]:
        """Stored blobs and their times."""
        with self._mutex:
            items = [(d, t) for d, (_, t) in self.blobs.items()]
        yield from items

    def usage(self) -> tuple[int, int]:
        """Blobs and bytes stored."""
        with self._mutex:
            return len(self.blobs), sum(len(blob) for blob, _ in self.blobs.values())

    def condemn(self, digest: str) -> None:
        """Move to garbage."""
        with self._mutex:
            if digest not in self.blobs:
                return  # quarantined meanwhile, as the file system store allows
            blob, _ = self.blobs.pop(digest)
            self.condemned[digest] = (blob, self._clock())

    def garbage(self) -> Iterator[tuple[str, float]]:
        """Condemned blobs and when."""
        with self._mutex:
            items = [(d, t) for d, (_, t) in self.condemned.items()]
        yield from items

    def rescue(self, digest: str) -> None:
        """Back from garbage."""
        with self._mutex:
            blob, _ = self.condemned.pop(digest)
            self.blobs.setdefault(digest, (blob, self._clock()))

    def purge(self, digest: str) -> int:
        """Delete a condemned blob; the bytes it took."""
        with self._mutex:
            blob, _ = self.condemned.pop(digest, (b"", 0.0))
            return len(blob)

    def quarantine(self, digest: str) -> None:
        """Move a corrupt blob aside."""
        with self._mutex:
            blob, _ = self.blobs.pop(digest)
            self.quarantined[digest] = blob

    def remove_temporaries(self, older_than: float) -> int:
        """Nothing is ever half-written in memory."""
        return 0

    def sync(self) -> None:
        """Always durable (for as long as the process lives)."""
