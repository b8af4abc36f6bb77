"""An in-memory catalog with the same semantics as the Redis one; thread-safe.

Records are kept as the same JSON strings under the same keys as in Redis (``records``), so a
test can write garbage into one and see the catalog isolate it exactly as Redis's does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from backup_jobs import wire
from backup_jobs.catalog import ALL_JOBS, Fence, LockResult, VMRead
from backup_jobs.catalogs.memory_jobs import JobIndexes
from backup_jobs.catalogs.memory_protection import MemoryProtection
from backup_jobs.catalogs.records import (
    collect,
    decode_record,
    dump,
    index_entries,
    listing_entries,
    readable_state,
    vms_listing,
)
from backup_jobs.errors import CorruptRecord, LeaseLost
from backup_jobs.joblist import JobQuery, encode_cursor
from backup_jobs.models import (
    VM,
    Job,
    JobPage,
    JobStatus,
    Listing,
    Operation,
    Problem,
    VaultConfig,
)


class MemoryCatalog(MemoryProtection):
    """The catalog port kept in dictionaries; leases expire on the monotonic clock."""

    def __init__(self) -> None:
        self._mutex = threading.RLock()
        self.records: dict[str, str] = {}
        self._vm_ids: dict[str, set[str]] = {}
        self._vm_names: dict[tuple[str, str], set[str]] = {}  # (vault, bare name): ids
        self._pages = JobIndexes()
        self._locks: dict[str, tuple[str, float]] = {}
        self._fences: dict[str, int] = {}
        self._retries: dict[str, float] = {}
        self._queued: dict[str, float] = {}
        self._in_progress: set[str] = set()
        self._problems: dict[str, Problem] = {}
        self._ticks: dict[str, datetime] = {}

    def ping(self) -> None:
        """Always answers."""

    def put_vault(self, vault: VaultConfig) -> None:
        """Create or replace a vault's configuration."""
        with self._mutex:
            self.records[wire.vault_key(vault.name)] = dump(vault.to_dict())

    def list_vaults(self) -> list[str]:
        """The names of every recorded vault, sorted."""
        prefix = wire.vault_key("")
        with self._mutex:
            return sorted(k.removeprefix(prefix) for k in self.records if k.startswith(prefix))

    def get_vault(self, name: str) -> VaultConfig | None:
        """A vault's configuration, or None."""
        key = wire.vault_key(name)
        raw = self.records.get(key)
        return decode_record(key, raw, VaultConfig.from_dict) if raw else None

    def get_vm(self, vault: str, vm_id: str) -> VM | None:
        """One VM of a vault, or None; ``CorruptRecord`` if unreadable."""
        found = self._vms(vault, [vm_id])
        if found.problems:
            raise CorruptRecord(found.problems[0].key, found.problems[0].reason)
        return next(iter(found), None)

    def list_vms(self, vault: str) -> Listing[VM]:
        """Every readable VM of a vault, sorted by id."""
        with self._mutex:
            ids = sorted(self._vm_ids.get(vault, set()))
        return self._vms(vault, ids)

    def find_vms(self, vault: str, name: str) -> Listing[VM]:
        """The VM with id ``name``, or every VM with that bare name."""
        with self._mutex:
            ids = self._vm_ids.get(vault, set())
            if "/" in name:
                matches = [name] if name in ids else []
            else:
                matches = sorted(self._vm_names.get((vault, name), set()))
        return self._vms(vault, matches)

    def get_vms(self, vault: str, ids: list[str]) -> Listing[VM]:
        """The VMs with these ids, in their order; unknown ones left out."""
        with self._mutex:
            known = self._vm_ids.get(vault, set())
            matches = [vm_id for vm_id in ids if vm_id in known]
        return self._vms(vault, matches)

    def put_vm(self, vault: str, vm: VM) -> None:
        """Create or replace a VM's provider properties."""
        with self._mutex:
            self.records[wire.vm_key(vault, vm.id)] = dump(vm.properties_dict())
            self._vm_ids.setdefault(vault, set()).add(vm.id)
            self._vm_names.setdefault((vault, vm.name), set()).add(vm.id)

    def put_vm_state(self, vault: str, vm: VM, fence: Fence | None = None) -> None:
        """Replace a VM's state, checking the fence atomically."""
        with self._mutex:
            if not self._fence_ok(fence):
                raise LeaseLost(vm.id)
            self.records[wire.vm_state_key(vault, vm.id)] = dump(vm.state_dict())

    def repair_vm_state(self, vault: str, vm: VM) -> bool:
        """Rewrite a VM's state record only if it cannot be read now."""
        key = wire.vm_state_key(vault, vm.id)
        with self._mutex:
            raw = self.records.get(key)
            if raw is None or readable_state(raw):
                return False
            self.records[key] = dump(vm.state_dict())
            return True

    def _vms(self, vault: str, ids: list[str]) -> Listing[VM]:
        with self._mutex:
            rows = [
                (
                    i,
                    self.records.get(wire.vm_key(vault, i)),
                    self.records.get(wire.vm_state_key(vault, i)),
                )
                for i in ids
            ]
        return vms_listing(vault, rows)

    def create_job(self, job: Job, check_at: datetime) -> bool:
        """Store a new job unless its id exists."""
        key = wire.job_key(job.id)
        with self._mutex:
            if key in self.records:
                return False
            self.records[key] = dump(job.to_dict())
            self._pages.put(job)
            self._queued[job.id] = check_at.timestamp()
            return True

    def get_job(self, job_id: str) -> Job | None:
        """One job, or None; ``CorruptRecord`` if unreadable."""
        key = wire.job_key(job_id)
        raw = self.records.get(key)
        return decode_record(key, raw, Job.from_dict) if raw else None

    def save_job(
        self,
        job: Job,
        fence: Fence | None = None,
        *,
        expect: JobStatus | None = None,
        check_at: datetime | None = None,
        vm_state: VM | None = None,
    ) -> bool:
        """Replace a job and its index entries (and ``vm_state``) atomically; ``LeaseLost``
        if fenced out."""
        if job.status == JobStatus.QUEUED and check_at is None:
            raise ValueError("saving a Queued job needs check_at")
        with self._mutex:
            if not self._fence_ok(fence):
                raise LeaseLost(job.item_name)
            if expect is not None and not self._has_status(job.id, expect):
                return False
            self.records[wire.job_key(job.id)] = dump(job.to_dict())
            if vm_state is not None:
                self.records[wire.vm_state_key(job.vault, vm_state.id)] = dump(
                    vm_state.state_dict()
                )
            self._index(job, check_at)
            return True

    def _has_status(self, job_id: str, status: JobStatus) -> bool:
        try:
            stored = self.get_job(job_id)
        except CorruptRecord:
            return False
        return stored is not None and stored.status == status

    def _index(self, job: Job, check_at: datetime | None) -> None:
        self._pages.put(job)
        if job.status.is_running:
            self._in_progress.add(job.id)
        else:
            self._in_progress.discard(job.id)
            lock = wire.lock_key(job.vault, job.item)
            if self._live_holder(lock) == job.id:
                del self._locks[lock]
        if job.status == JobStatus.WAITING_TO_RETRY and job.next_retry_at is not None:
            self._retries[job.id] = job.next_retry_at.timestamp()
        else:
            self._retries.pop(job.id, None)
        if job.status == JobStatus.QUEUED and check_at is not None:
            self._queued[job.id] = check_at.timestamp()
        else:
            self._queued.pop(job.id, None)

    def list_jobs(self, vault: str, query: JobQuery = ALL_JOBS) -> JobPage:
        """A page of the jobs ``query`` asks for, newest first, as the Redis catalog pages."""
        limit = query.limit or len(self.records) + 1
        with self._mutex:
            walk = self._pages.walk(query.indexes(vault), query, limit)
            raws = [(wire.job_key(i), self.records.get(wire.job_key(i))) for i in walk.ids]
        found: Listing[Job] = Listing()
        for key, raw in raws:
            if raw:
                collect(found, key, raw, Job.from_dict, "list jobs")
        cursor = encode_cursor(walk.position) if walk.position else None
        kept = [job for job in found if job.vault == vault and query.matches(job)]
        return JobPage(kept, found.problems, cursor)

    def count_jobs(
        self,
        vault: str,
        *,
        status: JobStatus | None = None,
        operation: Operation | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """How many jobs match, in the time range."""
        query = JobQuery(status=status, operation=operation, since=since, until=until)
        with self._mutex:
            return self._pages.count(query.indexes(vault), query)

    def expire_jobs(self, ended_before: datetime, limit: int) -> Listing[str]:
        """Delete up to ``limit`` final jobs that ended before ``ended_before``."""
        deleted: Listing[str] = Listing()
        with self._mutex:
            for job_id in self._pages.due(wire.ENDED_KEY, ended_before.timestamp(), limit):
                key = wire.job_key(job_id)
                raw = self.records.get(key)
                job: Job | None = None
                if raw:
                    try:
                        job = decode_record(key, raw, Job.from_dict)
                    except CorruptRecord as exc:
                        deleted.problems.append(Problem(key, exc.detail, "expire job history"))
                if job is None or not job.status.is_final:
                    self._pages.scores[wire.ENDED_KEY].pop(job_id, None)
                    continue
                del self.records[key]
                self._pages.drop(job)
                deleted.append(job_id)
        return deleted

    def acquire_lock(
        self,
        vault: str,
        item: str,
        holder: str,
        ttl_seconds: float,
        stale_holder: str | None = None,
    ) -> LockResult:
        """Take the lease if free, expired or held by ``stale_holder``; bump the token."""
        key = wire.lock_key(vault, item)
        with self._mutex:
            current = self._live_holder(key)
            if current is not None and (stale_holder is None or current != stale_holder):
                return LockResult(False, holder=current)
            self._locks[key] = (holder, time.monotonic() + ttl_seconds)
            token = self._bump(wire.fence_key(vault, item))
            return LockResult(True, token=token, holder=holder)

    def start_attempt(
        self, job: Job, ttl_seconds: float, *, expect: JobStatus, read_vm: bool = False
    ) -> LockResult:
        """Take the lease and save the started job with its new token (and read its VM, if
        asked), atomically."""
        with self._mutex:
            if not self._has_status(job.id, expect):
                return LockResult(False, holder=job.id)
            lock = self.acquire_lock(job.vault, job.item, job.id, ttl_seconds)
            fence = Fence(job.vault, job.item, lock.token)
            if lock.acquired and not self.save_job(
                job.evolve(fencing_token=lock.token), fence, expect=expect
            ):
                self.release_lock(job.vault, job.item, job.id)
                return LockResult(False, holder=job.id)
            if lock.acquired and read_vm:
                return replace(lock, vm=VMRead.of(self._vms(job.vault, [job.item])))
            return lock

    def renew_lock(self, vault: str, item: str, holder: str, ttl_seconds: float) -> bool:
        """Extend the lease if ``holder`` still holds it."""
        key = wire.lock_key(vault, item)
        with self._mutex:
            if self._live_holder(key) != holder:
                return False
            self._locks[key] = (holder, time.monotonic() + ttl_seconds)
            return True

    def release_lock(self, vault: str, item: str, holder: str) -> None:
        """Free the lease if ``holder`` holds it."""
        key = wire.lock_key(vault, item)
        with self._mutex:
            if self._live_holder(key) == holder:
                del self._locks[key]

    def lock_holder(self, vault: str, item: str) -> str | None:
        """Who holds the lease now."""
        with self._mutex:
            return self._live_holder(wire.lock_key(vault, item))

    def fence_is_current(self, fence: Fence, holder: str) -> bool:
        """True if ``holder`` holds the lease and ``fence`` is the latest token."""
        with self._mutex:
            held = self._live_holder(wire.lock_key(fence.vault, fence.item)) == holder
            return held and self._fence_ok(fence)

    def invalidate_fence(self, vault: str, item: str) -> int:
        """Make every token issued so far stale; the new token."""
        with self._mutex:
            return self._bump(wire.fence_key(vault, item))

    def due_retries(self, now: datetime, limit: int = 100) -> Listing[str]:
        """Job ids due at ``now``, oldest first."""
        return self._due(self._retries, now, limit)

    def due_queued(self, now: datetime, limit: int = 100) -> Listing[str]:
        """Queued job ids whose sweep check is due, oldest first."""
        return self._due(self._queued, now, limit)

    def mark_sent(self, sent: Mapping[str, datetime]) -> None:
        """Push the sweep's check of each queued job back (only if it is still queued)."""
        for job_id, check_at in sent.items():
            self.postpone(wire.QUEUED_KEY, job_id, check_at)

    def postpone(self, index: str, job_id: str, until: datetime) -> None:
        """Move a job's entry in a sorted index to ``until``, if it is there (a set: nothing)."""
        with self._mutex:
            scores = self._scores(index)
            if scores is not None and job_id in scores:
                scores[job_id] = until.timestamp()

    def drop_from_index(self, index: str, job_id: str) -> None:
        """Drop a job id from one index the ticks read."""
        with self._mutex:
            scores = self._scores(index)
            if scores is None:
                self._in_progress.discard(job_id)
            else:
                scores.pop(job_id, None)

    def in_progress(self) -> Listing[str]:
        """Ids of jobs recorded as running."""
        with self._mutex:
            return Listing(sorted(self._in_progress))

    def restore_job_indexes(self, now: datetime) -> Listing[str]:
        """Put back every index entry a job record implies and its index lacks."""
        found: Listing[Job] = Listing()
        prefix = wire.job_key("")
        with self._mutex:
            for key in sorted(k for k in self.records if k.startswith(prefix)):
                collect(found, key, self.records[key], Job.from_dict, "repair job indexes")
            restored = {job.id for job in found if self._restore(job, now)}
        return Listing(sorted(restored), found.problems)

    def _restore(self, job: Job, now: datetime) -> bool:
        """Put back the job's missing entries; True if any was missing."""
        missing = self._pages.restore(listing_entries(job), job.id)
        for index, score in index_entries(job, now):
            scores = self._scores(index)
            if scores is None:
                missing |= job.id not in self._in_progress
                self._in_progress.add(job.id)
            elif score is not None:
                missing |= job.id not in scores
                scores.setdefault(job.id, score)
        return missing

    def _scores(self, index: str) -> dict[str, float] | None:
        """A sorted index of the ticks by its key; None for the in-progress set."""
        if index == wire.IN_PROGRESS_KEY:
            return None
        if index == wire.RETRY_SET_KEY:
            return self._retries
        if index == wire.QUEUED_KEY:
            return self._queued
        raise ValueError(f"not a job index: {index}")

    def record_problem(self, problem: Problem) -> None:
        """Remember an unreadable record, one entry per key."""
        with self._mutex:
            self._problems[problem.key] = problem

    def problems(self) -> list[Problem]:
        """Every remembered problem, by key."""
        with self._mutex:
            return [self._problems[key] for key in sorted(self._problems)]

    def clear_problems(self) -> int:
        """Forget every problem."""
        with self._mutex:
            count = len(self._problems)
            self._problems.clear()
            return count

    def record_tick(self, name: str, at: datetime) -> None:
        """Note when a tick ran."""
        with self._mutex:
            self._ticks[name] = at

    def last_ticks(self) -> dict[str, datetime]:
        """When each tick last ran."""
        with self._mutex:
            return dict(self._ticks)

    def _due(self, index: dict[str, float], now: datetime, limit: int) -> Listing[str]:
        with self._mutex:
            due = sorted((t, j) for j, t in index.items() if t <= now.timestamp())
        return Listing([j for _, j in due[:limit]])

    def _bump(self, key: str) -> int:
        self._fences[key] = self._fences.get(key, 0) + 1
        return self._fences[key]

    def _live_holder(self, key: str) -> str | None:
        held = self._locks.get(key)
        if held is None or held[1] <= time.monotonic():
            self._locks.pop(key, None)
            return None
        return held[0]

    def _fence_ok(self, fence: Fence | None) -> bool:
        if fence is None:
            return True
        return self._fences.get(wire.fence_key(fence.vault, fence.item), 0) == fence.token
