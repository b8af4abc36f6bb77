"""The catalog port: VMs, jobs, per-item leases and the indexes the ticks work from.

The catalog is the source of truth for job status. Writes to an item's state made by a job
carry a ``Fence`` (the fencing token the job got when it acquired the item's lease); the
catalog applies such a write only if the token is still current, atomically, so a worker that
lost its lease cannot overwrite newer state.

Saving a job keeps every index that follows from its status in the same atomic write: the
in-progress set (the reaper's), the retry set (``WaitingToRetry`` jobs by ``next_retry_at``), the
queued set (``Queued`` jobs by when the sweep should look at them), the jobs page's indexes
(``joblist``: by status, operation and item), the retention index (final jobs by end time) and the
item's lease (freed once the job is not running). No crash between two writes can leave a job in a
status without its index entry, so nothing is stranded.

The indexes are derived data: the job records can rebuild them. A store whose indexes can be
damaged from outside (Redis: a key of the wrong type, a member that is not UTF-8) repairs them
on the spot and names each in a problem, and ``restore_job_indexes`` puts back every entry a
job's status implies that its index lacks (the index-repair tick runs it).

A record that cannot be read raises ``CorruptRecord`` naming its key when asked for by itself;
listings skip it and name it in ``Listing.problems``, so one bad record never blocks the rest.

Implementations: ``catalogs.redis`` (real) and ``catalogs.memory`` (tests, and shipped through
``backup_jobs.testing``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from backup_jobs.errors import CorruptRecord
from backup_jobs.items import ProtectedItem, RecoveryPointRecord, ScheduleEvent
from backup_jobs.joblist import JobQuery
from backup_jobs.models import VM, Job, JobPage, JobStatus, Listing, Operation, Problem, VaultConfig
from backup_jobs.policies import Policy

# A query for every job of a vault, newest first.
ALL_JOBS = JobQuery()


@dataclass(frozen=True)
class Fence:
    """Proof of holding an item's lease: the item and the token got on acquire."""

    vault: str
    item: str
    token: int


@dataclass(frozen=True)
class VMRead:
    """A VM's catalog record as one read found it: the VM, None if it has none, or the problem
    of a record that cannot be read."""

    vm: VM | None = None
    problem: Problem | None = None

    @classmethod
    def of(cls, found: Listing[VM]) -> VMRead:
        """The read of one VM from a listing of it: its first problem, else the VM or None."""
        if found.problems:
            return cls(problem=found.problems[0])
        return cls(next(iter(found), None))

    def get(self) -> VM | None:
        """The VM or None, as ``Catalog.get_vm`` returns it; ``CorruptRecord`` if unreadable."""
        if self.problem is not None:
            raise CorruptRecord(self.problem.key, self.problem.reason)
        return self.vm


@dataclass(frozen=True)
class LockResult:
    """The outcome of a lease acquire: the token if acquired, else who holds it; and the
    item's VM record, if the acquire was asked to read it (``start_attempt``)."""

    acquired: bool
    token: int = 0
    holder: str | None = None
    vm: VMRead | None = None


@dataclass(frozen=True)
class DueRun:
    """A protected item whose scheduled run is due: its vault, VM and scheduled time."""

    vault: str
    vm_id: str
    scheduled_at: datetime


class ProtectionRecords(Protocol):
    """Policies, protected items, their schedule and the recovery-point mirror."""

    def put_policy(self, vault: str, policy: Policy, *, replace: bool = False) -> bool:
        """Store a policy; False (nothing written) if it exists and ``replace`` is not set."""
        ...

    def get_policy(self, vault: str, name: str) -> Policy | None:
        """One policy, or None; ``CorruptRecord`` if unreadable."""
        ...

    def list_policies(self, vault: str) -> Listing[Policy]:
        """Every readable policy of a vault, by name."""
        ...

    def delete_policy(self, vault: str, name: str) -> list[str] | None:
        """Delete a policy no item uses: None if deleted (or absent), else the VMs using it."""
        ...

    def policy_items(self, vault: str, name: str) -> list[str]:
        """The VM ids a policy protects now, sorted."""
        ...

    def get_item(self, vault: str, vm_id: str) -> ProtectedItem | None:
        """A protected item, or None; ``CorruptRecord`` if unreadable."""
        ...

    def list_items(self, vault: str) -> Listing[ProtectedItem]:
        """Every readable protected item of a vault, by VM id."""
        ...

    def count_items(self, vault: str) -> int:
        """How many protected items a vault has (cheap: the maintenance ticks ask it)."""
        ...

    def put_item(
        self,
        item: ProtectedItem,
        fence: Fence | None = None,
        schedule_at: datetime | None = None,
    ) -> None:
        """Replace an item (fenced) and what follows from it, atomically.

        Its policy's set of items, and the schedule: an item whose state is not scheduled
        leaves it; ``schedule_at`` (re)schedules its next run. ``LeaseLost`` if fenced out.
        The stored ``recovery_points`` is the number of the VM's mirrored points at the write
        (whatever the item says), so that no writer's count overwrites another's.
        """
        ...

    def remove_item(self, vault: str, vm_id: str, fence: Fence | None = None) -> None:
        """Forget an item (its data deleted): its record, schedule entry, policy membership,
        skipped and missed runs and active backup, atomically. ``LeaseLost`` if fenced out."""
        ...

    def next_run(self, vault: str, vm_id: str) -> datetime | None:
        """When an item's next scheduled run is, if it is scheduled."""
        ...

    def schedule(self, vault: str, vm_id: str, at: datetime) -> None:
        """Set an item's next run (the dispatch tick, after handling a due one)."""
        ...

    def unschedule(self, vault: str, vm_id: str) -> None:
        """Take an item out of the schedule (it is gone, or its policy is)."""
        ...

    def move_run(self, vault: str, vm_id: str, was: datetime, to: datetime | None) -> bool:
        """Move an item's next run from ``was`` to ``to`` (None: out of the schedule).

        Only if it is still at ``was``: a second tick handling the same due run, or one that
        lost a race with a change of the item's schedule, changes nothing. False then.
        """
        ...

    def due_runs(self, now: datetime, limit: int = 500) -> list[DueRun]:
        """Items whose next run is due at ``now``, earliest first."""
        ...

    def record_event(self, vault: str, vm_id: str, event: ScheduleEvent) -> None:
        """Remember a skipped or missed run (the newest few per item; idempotent)."""
        ...

    def events(self, vault: str, vm_id: str) -> list[ScheduleEvent]:
        """An item's remembered skipped and missed runs, newest first."""
        ...

    def set_active_backup(self, vault: str, vm_id: str, job_id: str) -> None:
        """Remember the newest Backup job started for an item."""
        ...

    def active_backup(self, vault: str, vm_id: str) -> str | None:
        """The newest Backup job started for an item, if any."""
        ...

    def add_recovery_point(self, vault: str, point: RecoveryPointRecord) -> None:
        """Mirror a committed recovery point; the item's count follows in the same write."""
        ...

    def remove_recovery_point(self, vault: str, vm_id: str, rp_id: str) -> None:
        """Forget a pruned or deleted point; the item's count follows in the same write.

        Unfenced: it changes only the mirror and the count derived from it, so a prune never
        needs (or blocks) the VM's lease. Removing a point that is not mirrored is harmless.
        """
        ...

    def update_recovery_point(self, vault: str, point: RecoveryPointRecord) -> bool:
        """Replace a mirrored point's record (verify's marks); False, writing nothing, if it
        is not mirrored (pruned meanwhile): a mark never brings a point back."""
        ...

    def recovery_points(self, vault: str, vm_id: str) -> Listing[RecoveryPointRecord]:
        """A VM's mirrored recovery points, newest first."""
        ...


class Catalog(ProtectionRecords, Protocol):
    """Stores vaults, VMs and jobs, and arbitrates per-item leases."""

    def ping(self) -> None:
        """Raise ``RedisUnavailable`` (or the like) unless the store answers."""
        ...

    def put_vault(self, vault: VaultConfig) -> None:
        """Create or replace a vault's configuration."""
        ...

    def get_vault(self, name: str) -> VaultConfig | None:
        """A vault's configuration, or None; ``CorruptRecord`` if unreadable."""
        ...

    def list_vaults(self) -> list[str]:
        """The names of every vault a client recorded, sorted (the maintenance ticks')."""
        ...

    def get_vm(self, vault: str, vm_id: str) -> VM | None:
        """One VM of a vault (properties joined with state), or None."""
        ...

    def list_vms(self, vault: str) -> Listing[VM]:
        """Every readable VM of a vault (deleted ones included), sorted by id."""
        ...

    def find_vms(self, vault: str, name: str) -> Listing[VM]:
        """The VMs ``name`` may mean, deleted ones included, sorted by id: the one whose id it
        is (``cloud_service/name``), or every VM with that bare name (one per cloud service).

        Costs O(matches), whatever the vault's size: submitting a job for one VM never reads
        the whole inventory. Records that cannot be read are the listing's problems.
        """
        ...

    def get_vms(self, vault: str, ids: list[str]) -> Listing[VM]:
        """The VMs with these ids (``cloud_service/name``), in their order, deleted ones
        included and unknown ones left out: ``find_vms`` of each id, for a few hundred ids per
        round trip (a batch submission). Records that cannot be read are the problems.
        """
        ...

    def put_vm(self, vault: str, vm: VM) -> None:
        """Create or replace a VM's provider properties (discovery); its state is kept.

        Properties and state are separate records so that a discovery and a job on the same
        VM never overwrite each other's writes.
        """
        ...

    def put_vm_state(self, vault: str, vm: VM, fence: Fence | None = None) -> None:
        """Replace a VM's registration, last job and last error; ``LeaseLost`` if fenced out."""
        ...

    def repair_vm_state(self, vault: str, vm: VM) -> bool:
        """Rewrite a VM's state record only if it is unreadable now; True if rewritten."""
        ...

    def create_job(self, job: Job, check_at: datetime) -> bool:
        """Store a new ``Queued`` job; False (and nothing written) if its id exists.

        ``check_at``: when the queue sweep looks at the job if nothing started it by then.
        """
        ...

    def get_job(self, job_id: str) -> Job | None:
        """One job, or None; ``CorruptRecord`` if its record is unreadable."""
        ...

    def save_job(
        self,
        job: Job,
        fence: Fence | None = None,
        *,
        expect: JobStatus | None = None,
        check_at: datetime | None = None,
        vm_state: VM | None = None,
    ) -> bool:
        """Replace a job and its index entries; ``LeaseLost`` if fenced out.

        With ``expect``, only if the stored job has that status now (False otherwise).
        ``check_at`` is required for a ``Queued`` job (see ``create_job``). ``vm_state`` (a VM
        of the job's vault) is written in the same atomic step as ``put_vm_state`` would,
        under the same fence and only if the job is written: a job whose last step settles its
        VM (Register) ends in one write, and the two never disagree.
        """
        ...

    def list_jobs(self, vault: str, query: JobQuery = ALL_JOBS) -> JobPage:
        """A page of the readable jobs of a vault that ``query`` asks for, newest first.

        Costs O(log n + page) for one filter (a walk of its index); filters that intersect
        walk the smallest index in the time range, looking at most at ``joblist.SCAN_BUDGET``
        entries (a shorter page, with a cursor). ``next_cursor`` is None when nothing more can
        match. Unreadable records are the page's problems.
        """
        ...

    def count_jobs(
        self,
        vault: str,
        *,
        status: JobStatus | None = None,
        operation: Operation | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """How many jobs of a vault have this status and operation, queued in [since, until].

        One ZCOUNT for one filter (the dashboard's "last 24 h per status"); both filters count
        the matches of the smaller index in the time range.
        """
        ...

    def expire_jobs(self, ended_before: datetime, limit: int) -> Listing[str]:
        """Delete up to ``limit`` final jobs that ended before ``ended_before``, oldest first.

        Each with every index entry, in one atomic write per job, and only if its record is
        still the final one read (a job is never removed while it can still change). Costs
        O(limit); nothing due costs one range read. Returns the ids deleted; unreadable
        records are the problems (their entry in the retention index is dropped).
        """
        ...

    def acquire_lock(
        self,
        vault: str,
        item: str,
        holder: str,
        ttl_seconds: float,
        stale_holder: str | None = None,
    ) -> LockResult:
        """Take the item's lease without blocking; on success the fencing token is new.

        ``stale_holder``: take the lease over if that (dead) holder still has it.
        """
        ...

    def start_attempt(
        self, job: Job, ttl_seconds: float, *, expect: JobStatus, read_vm: bool = False
    ) -> LockResult:
        """Take ``job``'s item lease for it and save ``job`` (its attempt begun, its
        ``fencing_token`` None) with the new token, in one atomic step: a job's usual start.

        Only if the lease is free (nobody's) and the stored job has the status ``expect`` now;
        otherwise nothing is taken or written and the result says who holds the lease (the
        job's own id if its status changed meanwhile, as if it held it: nothing to do).
        With ``read_vm`` (the item is a VM), a start also reads the VM's record in the same
        step (``LockResult.vm``): the operations that begin with it need no read of their own.
        """
        ...

    def renew_lock(self, vault: str, item: str, holder: str, ttl_seconds: float) -> bool:
        """Extend the lease if ``holder`` still holds it."""
        ...

    def release_lock(self, vault: str, item: str, holder: str) -> None:
        """Free the lease if ``holder`` holds it."""
        ...

    def lock_holder(self, vault: str, item: str) -> str | None:
        """Who holds the item's lease now, if anyone."""
        ...

    def fence_is_current(self, fence: Fence, holder: str) -> bool:
        """True if ``holder`` holds the item's lease and ``fence`` is its latest token."""
        ...

    def invalidate_fence(self, vault: str, item: str) -> int:
        """Make every token issued so far stale; returns the new token (the reaper's fence)."""
        ...

    def due_retries(self, now: datetime, limit: int = 100) -> Listing[str]:
        """Ids of ``WaitingToRetry`` jobs due at ``now``, oldest first.

        The listing's problems name what the read had to repair in the index.
        """
        ...

    def due_queued(self, now: datetime, limit: int = 100) -> Listing[str]:
        """Ids of ``Queued`` jobs whose sweep check is due at ``now``, oldest first."""
        ...

    def mark_sent(self, sent: Mapping[str, datetime]) -> None:
        """These jobs' messages went out: the sweep need not look at each before its time.

        One write for a whole batch; a job no longer queued (started meanwhile) is left alone.
        """
        ...

    def postpone(self, index: str, job_id: str, until: datetime) -> None:
        """Move a job's entry in a sorted index the ticks read (``wire.RETRY_SET_KEY`` or
        ``wire.QUEUED_KEY``) to ``until``, if it is there; the in-progress set has no time."""
        ...

    def drop_from_index(self, index: str, job_id: str) -> None:
        """Drop a job id from one index the ticks read (``wire.RETRY_SET_KEY``,
        ``wire.QUEUED_KEY`` or ``wire.IN_PROGRESS_KEY``): its record is gone."""
        ...

    def in_progress(self) -> Listing[str]:
        """Ids of jobs saved as ``InProgress``: an index every job save keeps, for the reaper."""
        ...

    def restore_job_indexes(self, now: datetime) -> Listing[str]:
        """Put back every index entry a job record's status implies that its index lacks.

        One pass over every job record: a Queued job is due for the sweep at ``now``, an InProgress
        one goes back to the reaper, a WaitingToRetry one is due at its next retry, every job is in
        its vault's job index and the jobs page's indexes of its status, operation and item, and a
        final job in the retention index. Returns the ids put back; job records that cannot be read
        are the listing's problems.
        """
        ...

    def record_problem(self, problem: Problem) -> None:
        """Remember an unreadable record (one entry per key, the latest sighting)."""
        ...

    def problems(self) -> list[Problem]:
        """Every remembered problem, by key."""
        ...

    def clear_problems(self) -> int:
        """Forget every problem; returns how many there were."""
        ...

    def record_tick(self, name: str, at: datetime) -> None:
        """Note that a tick ran (for health checks and tests)."""
        ...

    def last_ticks(self) -> dict[str, datetime]:
        """When each tick last ran."""
        ...
