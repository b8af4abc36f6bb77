"""Shared fixtures: one real server for the session, one cluster (worker + beat) on it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from backup_jobs.runtime import embedded
from tests.harness import Cluster, flush, with_db

# The session cluster runs with short delays so that retries, leases and ticks fit in a test.
SESSION_ENV = {
    "BACKUP_JOBS_RETRY_DELAY_SECONDS": "2",
    "BACKUP_JOBS_LEASE_TTL_SECONDS": "3",
    "BACKUP_JOBS_TICK_SECONDS": "0.5",
    "BACKUP_JOBS_INSTALL_AGENT_TIMEOUT_SECONDS": "3",
    "BACKUP_JOBS_SNAPSHOT_TIMEOUT_SECONDS": "2",
    "BACKUP_JOBS_TRANSFER_TIMEOUT_SECONDS": "5",
    "BACKUP_JOBS_WORKER_CONCURRENCY": "4",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def redis_base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``BACKUP_JOBS_REDIS_URL`` if the run names one, else a fresh embedded server.

    The embedded server is locked like any other: the URL carries its password, so show it
    only through ``redact_url``.
    """
    given = os.environ.get("BACKUP_JOBS_REDIS_URL")
    if given:
        yield given
        return
    data_dir = tmp_path_factory.mktemp("server")
    server, process = embedded.start(data_dir)
    try:
        yield server.url
    finally:
        embedded.stop(server, process, data_dir)


@pytest.fixture(scope="session")
def cluster(redis_base_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Database 1 with a worker, a tick consumer and beat for the whole session."""
    url = with_db(redis_base_url, 1)
    flush(url)
    c = Cluster(url, tmp_path_factory.mktemp("cluster"), dict(SESSION_ENV))
    c.start_all()
    try:
        c.wait_ready("worker")
        c.wait_ready("ticks")
        yield c
    finally:
        c.stop()


@pytest.fixture
def scratch_url(redis_base_url: str) -> Iterator[str]:
    """An empty database (9) for tests that talk to Redis without workers."""
    url = with_db(redis_base_url, 9)
    flush(url)
    yield url
    flush(url)
