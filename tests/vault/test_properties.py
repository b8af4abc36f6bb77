"""Property tests: backup → restore is the identity for random sparse images and chunk sizes,
and for random sequences of writes between incremental backups."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backup_jobs.vault import Vault, verify
from tests.vault.conftest import back_up, restored_bytes, write_image

segment = st.tuples(st.sampled_from(["data", "zero", "hole"]), st.integers(1, 40_000))
chunk_sizes = st.sampled_from([512, 4096, 8192, 16384, 65536])
write = st.tuples(st.integers(0, 150_000), st.binary(min_size=1, max_size=9000))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    segments=st.lists(segment, min_size=0, max_size=8),
    chunk_size=chunk_sizes,
    seed=st.integers(0, 99),
)
def test_backup_then_restore_is_the_identity(
    segments: list[tuple[str, int]], chunk_size: int, seed: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        vault = Vault.create(root / "vault", chunk_size=chunk_size)
        image = write_image(root / "img.raw", segments, seed)

        manifest = back_up(vault, image)

        assert restored_bytes(vault, manifest.id, root) == image.read_bytes()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    segments=st.lists(segment, min_size=1, max_size=5),
    chunk_size=chunk_sizes,
    rounds=st.lists(st.lists(write, max_size=4), min_size=1, max_size=4),
)
def test_every_incremental_restores_the_image_as_it_was(
    segments: list[tuple[str, int]], chunk_size: int, rounds: list[list[tuple[int, bytes]]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        vault = Vault.create(root / "vault", chunk_size=chunk_size)
        image = write_image(root / "img.raw", segments)
        expected = {back_up(vault, image).id: image.read_bytes()}
        for writes in rounds:
            with open(image, "r+b") as f:
                for offset, data in writes:
                    f.seek(offset)
                    f.write(data)
            expected[back_up(vault, image).id] = image.read_bytes()

        for rp_id, content in expected.items():
            assert restored_bytes(vault, rp_id, root) == content
        assert verify(vault).ok
        assert os.path.getsize(image) == len(content)
