"""What the scheduler, backup-job and incremental benchmarks share.

A Redis database of their own (of the server ``BACKUP_JOBS_REDIS_URL`` names, or of an embedded
server started for the run and private to it), emptied before and after; medians with their
ranges, as the report prints them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

from backup_jobs.runtime import embedded

# Databases of a given server that the benchmarks empty: the test suite uses 1-4 and 9.
CONTROL_PLANE_DB = 5
SCHEDULER_DB = 6
BACKUP_JOB_DB = 7
JOB_LIST_DB = 8
SUBMISSION_DB = 10
# The control-plane benchmark's list of ended task ids (``benchmarks.finished``).
FINISHED_KEY = "bench:finished"


def arguments(doc: str, runs: int = 3) -> argparse.ArgumentParser:
    """A parser described by the benchmark's docstring, with ``--runs`` and ``--dir``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="work directory")
    return parser


@contextmanager
def workspace(directory: str, prefix: str) -> Iterator[Path]:
    """A fresh work directory under ``directory``, removed afterwards whatever happens."""
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=directory))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def redis_database(work: Path, db: int) -> Iterator[str]:
    """The URL of database ``db``, empty; emptied again (and a server started here stopped)."""
    given = os.environ.get("BACKUP_JOBS_REDIS_URL")
    server = process = None
    if given:
        base = given
    else:
        server, process = embedded.start(work)
        base = server.url
    url = urlunsplit(urlsplit(base)._replace(path=f"/{db}"))
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        try:
            client.flushdb()
        finally:
            client.close()
            if server is not None:
                embedded.stop(server, process, work)


def spread(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """``median (min-max)`` of ``values`` times ``scale``."""
    low, mid, high = (v * scale for v in (min(values), statistics.median(values), max(values)))
    return f"{mid:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def header(*facts: str) -> None:
    """The report's first line: the machine, then what was measured and how."""
    print("\n" + "; ".join((f"machine: {os.cpu_count()} cpus", *facts, "median (min-max)")))


def row(label: str, values: list[float], unit: str = "s", note: str = "") -> None:
    """One line of a report: what, median (min-max) in ``unit`` (s or ms), and a note."""
    scale = 1000.0 if unit == "ms" else 1.0
    print(f"{label:<32}{spread(values, scale):<20}{unit:<4}{note}".rstrip())
