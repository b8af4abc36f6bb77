"""Shared fixtures: one real server for the session, one cluster (worker + beat) on it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from backup_jobs import client
from backup_jobs.runtime import embedded
from tests.harness import SESSION_ENV, Cluster, flush, with_db

# The tests wait for thousands of jobs one after another: polling a job record every 20 ms, not
# every 100 ms as a user's script does, saves half a poll interval on each wait.
client.POLL_INTERVAL_SECONDS = 0.02


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.integration)


# How much of each session process's log a failed integration test's report carries.
LOG_TAIL_LINES = 60


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that used the session cluster reports the tail of its processes' logs:
    CI shows only the report, and a flaky failure must say what the worker saw."""
    report = yield
    cluster = getattr(item, "funcargs", {}).get("cluster")
    if report.failed and isinstance(cluster, Cluster):
        for name in ("worker", "ticks"):
            lines = cluster.log(name).splitlines()[-LOG_TAIL_LINES:]
            report.sections.append((f"session {name} log (last lines)", "\n".join(lines)))
    return report


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
