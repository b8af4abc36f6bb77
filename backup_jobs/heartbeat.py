"""Lease heartbeats: one thread per worker process renews the leases of every running attempt.

A thread per attempt would cost a thread start and join per job; one per process costs
nothing per job. An attempt whose lease could not be renewed is told so at its next
``check()`` (called between steps), and stops with ``LeaseLost``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from backup_jobs.catalog import Catalog
from backup_jobs.errors import BackupJobsError, LeaseLost
from backup_jobs.models import Job

log = logging.getLogger("backup_jobs.heartbeat")


class Heartbeats:
    """Renews, every third of the TTL, the lease of each attempt this process holds."""

    def __init__(self, catalog: Catalog, ttl_seconds: float) -> None:
        self._catalog = catalog
        self._ttl = ttl_seconds
        self._held: dict[str, Job] = {}
        self._lost: set[str] = set()
        self._mutex = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    @contextmanager
    def hold(self, job: Job) -> Iterator[Callable[[], None]]:
        """Keep ``job``'s lease alive while the block runs; yields the lease check."""
        with self._mutex:
            self._held[job.id] = job
            self._lost.discard(job.id)
            self._ensure_thread()

        def check() -> None:
            if job.id in self._lost:
                raise LeaseLost(job.item_name)

        try:
            yield check
        finally:
            with self._mutex:
                self._held.pop(job.id, None)
                self._lost.discard(job.id)

    def _ensure_thread(self) -> None:
        # A forked child inherits the object but not the thread.
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self._ttl / 3)
            with self._mutex:
                held = list(self._held.values())
            for job in held:
                self._renew(job)

    def _renew(self, job: Job) -> None:
        try:
            renewed = self._catalog.renew_lock(job.vault, job.item, job.id, self._ttl)
        except Exception as exc:
            # Redis may be back before the lease expires; the next round tries again.
            code = exc.code if isinstance(exc, BackupJobsError) else type(exc).__name__
            log.warning("lease_renewal_failed job=%s item=%s code=%s", job.id, job.item_name, code)
            return
        if not renewed:
            with self._mutex:
                if job.id in self._held:
                    self._lost.add(job.id)
                    log.warning("lease_lost job=%s item=%s", job.id, job.item_name)
