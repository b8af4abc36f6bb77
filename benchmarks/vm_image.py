"""A raw image shaped like a real VM disk, for the vault benchmarks.

Stripes of four kinds in stated proportions: operating-system content (the files of
``/usr/bin``, ``/usr/lib`` and ``/usr/share`` concatenated, each behind a tar-like header: as
compressible as an installed system), random data (compressed databases, media, encrypted
files: incompressible), zeros written out (a zeroed or trimmed region that still reads) and
holes (never written). Stripes are whole chunks, so each chunk is of one kind.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

OS, RANDOM, ZEROS, HOLE = "os", "random", "zeros", "hole"
# One cycle of 20 stripes: 8 OS (40 %), 6 random (30 %), 3 zeros (15 %), 3 holes (15 %),
# spread out so that every part of the disk is mixed.
PATTERN = (
    OS, RANDOM, OS, ZEROS, OS, RANDOM, HOLE, OS, RANDOM, OS,
    ZEROS, OS, RANDOM, HOLE, OS, RANDOM, ZEROS, OS, RANDOM, HOLE,
)  # fmt: skip
SHARES = {kind: n / len(PATTERN) for kind, n in Counter(PATTERN).items()}
OS_TREES = (Path("/usr/bin"), Path("/usr/lib"), Path("/usr/share"))
ALIGN = 4 << 20  # the vault's default chunk size: stripes are whole chunks
PIECE = 4 << 20  # bytes written at a time


def describe() -> str:
    """The proportions, for the report."""
    return ", ".join(f"{SHARES[k]:.0%} {k}" for k in (OS, RANDOM, ZEROS, HOLE))


def stripe_size(size: int) -> int:
    """The stripe length for an image of about ``size`` bytes: one cycle, whole chunks."""
    return max(ALIGN, size // len(PATTERN) // ALIGN * ALIGN)


def stripes(size: int) -> list[tuple[str, int, int]]:
    """``(kind, start, end)`` of every stripe of an image of ``size`` bytes."""
    length = stripe_size(size)
    count = size // (length * len(PATTERN)) * len(PATTERN)  # whole cycles: exact shares
    if not count:
        raise SystemExit(f"an image needs at least {len(PATTERN) * ALIGN >> 20} MiB")
    return [(PATTERN[n % len(PATTERN)], n * length, (n + 1) * length) for n in range(count)]


def make_image(path: Path, size: int, seed: int = 42) -> int:
    """Write the image (``size`` rounded down to whole cycles of stripes); its size."""
    rng = random.Random(seed)
    corpus = os_content()
    layout = stripes(size)
    with open(path, "wb") as image:
        for kind, start, end in layout:
            if kind == HOLE:
                image.seek(end)
                continue
            for offset in range(start, end, PIECE):
                n = min(PIECE, end - offset)
                image.write(_piece(kind, n, rng, corpus))
        image.truncate(layout[-1][2])
    return layout[-1][2]


def _piece(kind: str, n: int, rng: random.Random, corpus: Iterator[bytes]) -> bytes:
    if kind == RANDOM:
        return rng.randbytes(n)
    if kind == ZEROS:
        return bytes(n)
    out = bytearray()
    while len(out) < n:
        out += next(corpus)
    return bytes(out[:n])  # the rest of that file is lost: fine for a corpus


def os_content() -> Iterator[bytes]:
    """Endless OS-like bytes: system files one after another, from the three trees in turn.

    Each file comes behind a 512-byte header naming it and the pass, so a second pass over
    the files (a big image) is new data, not a copy the vault would deduplicate.
    """
    files = [sorted(_regular_files(tree)) for tree in OS_TREES]
    order = [f for group in _interleave(files) for f in group]
    if not order:
        raise SystemExit("no readable files under /usr to build OS-like content from")
    for n in range(1 << 30):
        for path in order:
            try:
                data = path.read_bytes()
            except OSError:
                continue
            yield f"{path}\0pass {n}\0{len(data)}\0".encode().ljust(512, b"\0") + data


def _regular_files(tree: Path) -> Iterator[Path]:
    for folder, _, names in os.walk(tree):
        for name in names:
            path = Path(folder, name)
            if path.is_file() and not path.is_symlink():
                yield path


def _interleave(groups: list[list[Path]], batch: int = 64) -> Iterator[list[Path]]:
    """Batches of ``batch`` files taken from each group in turn (binaries, libraries, text)."""
    for start in range(0, max(len(g) for g in groups), batch):
        for group in groups:
            yield group[start : start + batch]


def kind_samples(path: Path, size: int, kind: str, limit: int) -> list[bytes]:
    """Up to ``limit`` bytes of ``kind`` read back from the image, in ``ALIGN`` pieces."""
    samples: list[bytes] = []
    with open(path, "rb") as image:
        for found, start, end in stripes(size):
            for offset in range(start, end, ALIGN) if found == kind else ():
                if len(samples) * ALIGN >= limit:
                    return samples
                samples.append(os.pread(image.fileno(), ALIGN, offset))
    return samples
