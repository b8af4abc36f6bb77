"""Fixtures of the unit tests: every catalog implementation, for the contract suites."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from backup_jobs.catalog import Catalog
from backup_jobs.catalogs.memory import MemoryCatalog
from backup_jobs.catalogs.redis import RedisCatalog


@pytest.fixture(params=["memory", "redis"])
def catalog(request: pytest.FixtureRequest) -> Iterator[Catalog]:
    """Each implementation of the catalog port in turn: memory, then a real Redis server."""
    if request.param == "memory":
        yield MemoryCatalog()
    else:
        yield RedisCatalog.from_url(request.getfixturevalue("scratch_url"))
