"""The Prometheus exporter (``backup-jobs exporter``): the catalog's figures, computed per scrape.

Nothing is kept in this process between scrapes but the vault storage figures (a walk of the
chunk store, cached for ``STORAGE_CACHE_SECONDS``): Redis, the truth, is read each time, one
cheap command per figure, so that any number of exporters agree and a restart loses nothing.

Job durations are a *gauge histogram* of the newest ``RECENT_JOBS`` final jobs (by end time,
every vault): a window that moves, not a counter that only grows. A counter histogram would
need every job end to update Redis in the job's own save script, and would still lose what
ended while it was down; the window is exact about what it covers and costs one range read
and ``RECENT_JOBS`` GETs.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from backup_jobs import logs, wire
from backup_jobs.catalog import Catalog
from backup_jobs.catalogs.redis import RedisCatalog
from backup_jobs.catalogs.redis_errors import translated
from backup_jobs.dashboard import FINISHED, UNFINISHED
from backup_jobs.errors import BackupJobsError, CorruptRecord
from backup_jobs.items import ProtectedItem, ProtectionState, RecoveryPointRecord
from backup_jobs.models import Job, JobStatus, Operation
from backup_jobs.runtime.backlog import read_backlog, tick_runs
from backup_jobs.runtime.readiness import WILDCARDS
from backup_jobs.vault import Vault

log = logs.get_logger("exporter")

PREFIX = "backup_jobs_"
# The newest final jobs whose durations make the histogram: enough for a rate of outcomes,
# few enough that a scrape reads them in milliseconds.
RECENT_JOBS = 200
# Upper bounds (seconds) of the duration buckets: a register takes a second, a backup hours.
DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 21600)
# A walk of a large chunk store takes a while: at most once a minute per vault directory.
STORAGE_CACHE_SECONDS = 60.0


@dataclass(frozen=True)
class VaultUsage:
    """What a vault directory holds: blobs and bytes (None if unreachable from here)."""

    chunks: int | None
    stored_bytes: int | None


class CatalogCollector(Collector):
    """Every backup-jobs metric, read from the catalog (and vault directories) at scrape time."""

    def __init__(
        self,
        connect: Callable[[], RedisCatalog],
        now: Callable[[], datetime],
        default_vault_dir: Path | None = None,
    ) -> None:
        self._connect = connect
        self._catalog: RedisCatalog | None = None
        self._now = now
        self._problem = ""
        self._default_vault_dir = default_vault_dir
        self._usage: dict[Path, tuple[float, VaultUsage]] = {}

    def collect(self) -> Iterator[Metric]:
        """The metrics; ``backup_jobs_up`` 0 (and nothing else) if the catalog cannot be read."""
        up = GaugeMetricFamily(f"{PREFIX}up", "1 if this scrape could read the catalog, else 0")
        try:
            if self._catalog is None:  # found at the first scrape: Redis may start after us
                self._catalog = self._connect()
            families = list(self._families(self._catalog, self._now()))
        except BackupJobsError as exc:
            self._report(exc.message)
            up.add_metric([], 0)
            yield up
            return
        self._report("")
        up.add_metric([], 1)
        yield up
        yield from families

    def _report(self, problem: str) -> None:
        """Log when scrapes start failing (and why) and when they work again."""
        if problem != self._problem:
            if problem:
                log.warning("scrape_failed", reason=problem)
            else:
                log.info("scrape_recovered")
        self._problem = problem

    def _families(self, catalog: RedisCatalog, now: datetime) -> Iterator[Metric]:
        vaults = catalog.list_vaults()
        yield from _job_counts(catalog, vaults)
        yield from self._items(catalog, vaults, now)
        recent = _recent_jobs(catalog, RECENT_JOBS)
        yield duration_histogram(recent)
        yield _retried(recent)
        backlog = read_backlog(catalog, now)
        yield _gauge(
            "retries_waiting", "Jobs in the retry set (WaitingToRetry)", [], [((), backlog.retries)]
        )
        yield _gauge(
            "retries_due",
            "Jobs in the retry set whose retry is due now",
            [],
            [((), backlog.retries_due)],
        )
        yield _gauge(
            "oldest_queued_job_age_seconds",
            "Seconds since the oldest Queued job of the vault was queued",
            ["vault"],
            [((v,), age) for v, age in sorted(backlog.oldest_queued_seconds.items())],
        )
        yield _gauge(
            "tick_age_seconds",
            "Seconds since each beat tick last ran (tick lag)",
            ["tick"],
            [
                ((n,), max(0.0, (now - at).total_seconds()))
                for n, at in sorted(tick_runs(catalog).items())
            ],
        )

    def _items(self, catalog: Catalog, vaults: list[str], now: datetime) -> Iterator[Metric]:
        """Per-item and per-vault figures: states, points, bytes, last good backup, storage."""
        states: list[tuple[tuple[str, ...], float]] = []
        points: list[tuple[tuple[str, ...], float]] = []
        logical: list[tuple[tuple[str, ...], float]] = []
        ages: list[tuple[tuple[str, ...], float]] = []
        storage: list[tuple[str, int, VaultUsage]] = []
        for vault in vaults:
            items = list(catalog.list_items(vault))
            for state in ProtectionState:
                states.append(((vault, state.value), sum(1 for i in items if i.state == state)))
            vault_bytes = 0
            for item in items:
                listed = _points(catalog, vault, item)
                size = sum(p.size_bytes for p in listed)
                vault_bytes += size
                points.append(((vault, item.vm_id), len(listed)))
                logical.append(((vault, item.vm_id), size))
                good = [p.created_at for p in listed if p.good]
                if good:
                    ages.append(((vault, item.vm_id), (now - max(good)).total_seconds()))
            storage.append((vault, vault_bytes, self._vault_usage(catalog, vault)))
        yield _gauge(
            "protected_items", "Protected items by protection state", ["vault", "state"], states
        )
        yield _gauge("recovery_points", "Recovery points per VM", ["vault", "vm"], points)
        yield _gauge(
            "recovery_point_bytes",
            "Logical bytes of the VM's recovery points (before deduplication)",
            ["vault", "vm"],
            logical,
        )
        yield _gauge(
            "last_good_backup_age_seconds",
            "Seconds since the VM's newest recovery point not found broken",
            ["vault", "vm"],
            ages,
        )
        yield from _storage_families(storage)

    def _vault_usage(self, catalog: Catalog, vault: str) -> VaultUsage:
        """The vault directory's blobs and bytes, cached; None figures if unreachable."""
        config = catalog.get_vault(vault)
        where = Path(config.vault_dir) if config and config.vault_dir else self._default_vault_dir
        if where is None or not (where / "config.json").exists():
            return VaultUsage(None, None)
        cached = self._usage.get(where)
        if cached and time.monotonic() - cached[0] < STORAGE_CACHE_SECONDS:
            return cached[1]
        try:
            chunks, stored = Vault.open(where).store.usage()
            usage = VaultUsage(chunks, stored)
        except (BackupJobsError, OSError):
            usage = VaultUsage(None, None)
        self._usage[where] = (time.monotonic(), usage)
        return usage


def _gauge(
    name: str, doc: str, labels: list[str], samples: Iterable[tuple[tuple[str, ...], float]]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(PREFIX + name, doc, labels=labels)
    for values, value in samples:
        family.add_metric(list(values), value)
    return family


def _job_counts(catalog: Catalog, vaults: list[str]) -> Iterator[Metric]:
    """Jobs per status and per operation (one ZCOUNT each); unfinished ones per both (each
    count walks the small index of an unfinished status)."""
    yield _gauge(
        "jobs",
        "Jobs kept in the history, by status",
        ["vault", "status"],
        [((v, s.value), catalog.count_jobs(v, status=s)) for v in vaults for s in JobStatus],
    )
    yield _gauge(
        "jobs_by_operation",
        "Jobs kept in the history, by operation",
        ["vault", "operation"],
        [((v, o.value), catalog.count_jobs(v, operation=o)) for v in vaults for o in Operation],
    )
    yield _gauge(
        "jobs_unfinished",
        "Jobs not final yet, by operation and status",
        ["vault", "operation", "status"],
        [
            ((v, o.value, s.value), catalog.count_jobs(v, status=s, operation=o))
            for v in vaults
            for o in Operation
            for s in UNFINISHED
        ],
    )


def _points(catalog: Catalog, vault: str, item: ProtectedItem) -> list[RecoveryPointRecord]:
    try:
        return list(catalog.recovery_points(vault, item.vm_id))
    except CorruptRecord:  # named by `problem list`; the rest of the scrape goes on
        return []


def _recent_jobs(catalog: RedisCatalog, count: int) -> list[Job]:
    """The newest ``count`` final jobs of every vault, by end time."""
    client: Any = catalog.client
    with translated(catalog.url, wire.ENDED_KEY):
        ids = client.zrevrange(wire.ENDED_KEY, 0, count - 1)
    found = []
    for job_id in ids:
        try:
            job = catalog.get_job(job_id)
        except CorruptRecord:
            continue
        if job is not None and job.status in FINISHED:
            found.append(job)
    return found


def duration_histogram(recent: list[Job]) -> Metric:
    """A gauge histogram of the recent jobs' durations (first start to end), by vault,
    operation and final status."""
    family = GaugeHistogramMetricFamily(
        f"{PREFIX}job_duration_seconds",
        f"Durations of the newest {RECENT_JOBS} final jobs (first start to end)",
        labels=["vault", "operation", "status"],
    )
    groups: dict[tuple[str, str, str], list[float]] = {}
    for job in recent:
        seconds = job.duration_seconds
        if seconds is not None:
            groups.setdefault((job.vault, job.operation.value, job.status.value), []).append(
                seconds
            )
    for labels, values in sorted(groups.items()):
        buckets = [
            (str(float(b)), float(sum(1 for v in values if v <= b))) for b in DURATION_BUCKETS
        ]
        buckets.append(("+Inf", float(len(values))))
        family.add_metric(list(labels), buckets, sum(values))
    return family


def _retried(recent: list[Job]) -> Metric:
    """Of the recent final jobs, how many took more than one attempt, by vault and operation."""
    counts: dict[tuple[str, str], int] = {}
    for job in recent:
        key = (job.vault, job.operation.value)
        counts[key] = counts.get(key, 0) + (1 if job.attempt > 1 else 0)
    return _gauge(
        "recent_jobs_retried",
        f"Of the newest {RECENT_JOBS} final jobs, those that took more than one attempt",
        ["vault", "operation"],
        sorted(counts.items()),
    )


def _storage_families(storage: list[tuple[str, int, VaultUsage]]) -> Iterator[Metric]:
    """Per vault: logical bytes of its points, stored bytes and blobs, deduplication ratio."""
    yield _gauge(
        "vault_logical_bytes",
        "Bytes the vault's recovery points describe",
        ["vault"],
        [((v,), b) for v, b, _ in storage],
    )
    reachable = [(v, b, u) for v, b, u in storage if u.stored_bytes is not None]
    yield _gauge(
        "vault_stored_bytes",
        "Bytes the vault directory holds (compressed, deduplicated), if reachable from here",
        ["vault"],
        [((v,), u.stored_bytes or 0) for v, _, u in reachable],
    )
    yield _gauge(
        "vault_chunks",
        "Blobs in the vault directory, if reachable from here",
        ["vault"],
        [((v,), u.chunks or 0) for v, _, u in reachable],
    )
    yield _gauge(
        "vault_dedup_ratio",
        "Logical bytes per stored byte (deduplication and compression together)",
        ["vault"],
        [((v,), b / u.stored_bytes) for v, b, u in reachable if u.stored_bytes],
    )


def bind(collector: CatalogCollector, address: str, port: int) -> WSGIServer:
    """A server answering scrapes (any path) on ``address:port``; ``serve_forever`` runs it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server_class = _IPv6Server if ":" in address else WSGIServer
    return make_server(
        address, port, make_wsgi_app(registry), server_class, handler_class=_QuietHandler
    )


def metrics_url(address: str, port: int) -> str:
    """Where the metrics answer on this machine."""
    host = WILDCARDS.get(address, address)
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/metrics"


class _IPv6Server(WSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No line per scrape in the log: Prometheus scrapes every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:
        """Say nothing."""
