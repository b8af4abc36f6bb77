"""The chunk store port: blobs by digest, written once, with GC's garbage and verify's quarantine.

Implementations: ``chunkstores.filesystem`` (a local or shared file system) and
``chunkstores.memory`` (tests). Digests are 64-hex strings here.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator, Sequence
from typing import Protocol

# Errors of reading a blob that say the blob is damaged, not the reading process: something
# else where it should be (a directory; a file where its fan-out directory should be), or the
# disk failing to read it. Too many open files, no memory and the like are not: no verify may
# quarantine a good blob for them, nor a restore call its point damaged.
DAMAGED_BLOB_ERRNOS = frozenset({errno.EISDIR, errno.ENOTDIR, errno.EIO})


class ChunkMissing(LookupError):
    """Raised when a blob is neither in the store nor in its garbage."""


def damaged_blob(exc: OSError) -> bool:
    """Whether an error of reading a blob means that the blob is damaged."""
    return exc.errno in DAMAGED_BLOB_ERRNOS


class ChunkStore(Protocol):
    """Stores blobs by digest; a blob once written is never modified."""

    def exists(self, digest: str) -> bool:
        """True if the blob is in the store (garbage not counted)."""
        ...

    def put(self, digest: str, blob: Sequence[bytes]) -> bool:
        """Store a blob (given in parts) durably unless it exists; True if this call wrote it."""
        ...

    def get(self, digest: str) -> bytes:
        """A blob, from the store or else from garbage; ``ChunkMissing`` if neither has it."""
        ...

    def get_view(self, digest: str) -> memoryview:
        """As ``get``, but a view that stays valid only until the calling thread's next
        ``get_view``: a restore reads each blob once, and no buffer is allocated per blob."""
        ...

    def touch(self, digest: str) -> None:
        """Mark a blob as just used (its mtime), so GC's cutoff keeps it."""
        ...

    def chunks(self) -> Iterator[tuple[str, float]]:
        """Every stored blob with its mtime (seconds since the epoch)."""
        ...

    def usage(self) -> tuple[int, int]:
        """How many blobs the store holds and their bytes (garbage not counted)."""
        ...

    def condemn(self, digest: str) -> None:
        """Move a blob to garbage, stamped with the time of condemnation."""
        ...

    def garbage(self) -> Iterator[tuple[str, float]]:
        """Every condemned blob with the time it was condemned."""
        ...

    def rescue(self, digest: str) -> None:
        """Move a condemned blob back into the store."""
        ...

    def purge(self, digest: str) -> int:
        """Delete a condemned blob for good; the bytes it took (0 if it was gone already)."""
        ...

    def quarantine(self, digest: str) -> None:
        """Move a corrupt blob out of the store, keeping it for inspection."""
        ...

    def remove_temporaries(self, older_than: float) -> int:
        """Delete leftovers of interrupted writes older than ``older_than``; how many."""
        ...

    def sync(self) -> None:
        """Make every completed ``put`` durable (directory entries included)."""
        ...
