"""The Python API: ``Client`` submits work and reads the catalog; job handles follow jobs.

Methods are verbs on domain nouns. Anything that runs on a worker returns a ``JobHandle``;
reads return typed values. Submitting never imports the worker code: tasks go by name.
"""

from __future__ import annotations

import difflib
import functools
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from backup_jobs import cancels, inventory, jobs, jobs_page, protection, wire
from backup_jobs.attention import Attention
from backup_jobs.catalog import Catalog
from backup_jobs.client_maintenance import MaintenanceVerbs
from backup_jobs.client_restore import RestoreVerbs
from backup_jobs.clock import Clock, SystemClock
from backup_jobs.dashboard import Dashboard, build_dashboard, item_views, reason_filter
from backup_jobs.dispatcher import Dispatcher
from backup_jobs.errors import (
    AmbiguousVMName,
    BackupJobsError,
    CorruptRecord,
    InvalidPolicy,
    JobNotFound,
    NotProtected,
    PolicyInUse,
    PolicyNotFound,
    VMNotFoundInInventory,
    most_severe,
)
from backup_jobs.items import ItemView, ProtectionState
from backup_jobs.joblist import DEFAULT_PAGE_SIZE
from backup_jobs.models import (
    VM,
    Job,
    JobPage,
    JobStatus,
    Listing,
    Operation,
    Problem,
    RegistrationState,
    VaultConfig,
)
from backup_jobs.policies import Policy, checked_policy, next_run
from backup_jobs.settings import Settings

# How often ``JobHandle.wait`` re-reads the job record.
POLL_INTERVAL_SECONDS = 0.1


class JobTimeout(TimeoutError):
    """Raised when ``JobHandle.wait`` runs out of time; the job itself goes on."""


class JobHandle:
    """A submitted job: its id, and ways to read and wait for its record."""

    def __init__(self, catalog: Catalog, job_id: str) -> None:
        self.id = job_id
        self._catalog = catalog

    def __repr__(self) -> str:
        return f"JobHandle({self.id!r})"

    def job(self) -> Job:
        """The current job record."""
        job = self._catalog.get_job(self.id)
        if job is None:
            raise JobNotFound(self.id)
        return job

    def status(self) -> JobStatus:
        """The job's current status."""
        return self.job().status

    def wait(self, timeout: float | None = None) -> Job:
        """Block until the job is final and return its record; ``JobTimeout`` after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job()
            if job.status.is_final:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeout(f"job {self.id} is still {job.status.value} after {timeout}s")
            time.sleep(POLL_INTERVAL_SECONDS)

    def result(self, timeout: float | None = None) -> dict[str, object]:
        """Wait, then the job's properties (e.g. the recovery point); the error if it failed."""
        job = self.wait(timeout)
        return {"status": job.status.value, "error": job.error, **job.properties}


@dataclass(frozen=True)
class Refusal:
    """A VM of a batch that was not submitted: the name it was given by, and why."""

    name: str
    error: BackupJobsError


class Batch(list[JobHandle]):
    """The jobs a batch started (it is a list of their handles) and the VMs it ``refused``."""

    def __init__(self, handles: Iterable[JobHandle] = (), refused: Iterable[Refusal] = ()) -> None:
        super().__init__(handles)
        self.refused = tuple(refused)

    def __repr__(self) -> str:
        return f"Batch({list(self)!r}, refused={self.refused!r})"

    def raise_refused(self) -> None:
        """Raise the most severe refusal's error (``errors.SEVERITY``), if any VM was refused."""
        worst = most_severe(refusal.error for refusal in self.refused)
        if worst is not None:
            raise worst


class Client(MaintenanceVerbs, RestoreVerbs):
    """The front door for scripts: ``Client.from_env()`` then verbs.

    Stopping and resuming protection and the vault's maintenance (prune, verify, GC) are in
    ``client_maintenance``.
    """

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        dispatcher: Dispatcher,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self._dispatcher = dispatcher
        self._clock = clock or SystemClock()
        self.vault = VaultConfig(
            name=settings.vault,
            region=settings.region,
            provider=settings.provider,
            fleet_dir=settings.fleet_location,
            vault_dir=str(Path(settings.vault_dir).resolve()),
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Client:
        """Connect as the ``BACKUP_JOBS_*`` variables say (or to the embedded server)."""
        from backup_jobs.catalogs.redis import RedisCatalog
        from backup_jobs.connection import resolve_redis_url, ssl_options
        from backup_jobs.dispatchers.celery import CeleryDispatcher

        settings = Settings.from_env(environ)
        url = resolve_redis_url(settings)
        catalog = RedisCatalog.from_url(url, ssl_options(settings, url))
        catalog.ping()
        return cls(settings, catalog, CeleryDispatcher.from_url(settings, url))

    def handle(self, job_id: str) -> JobHandle:
        """A handle on an existing job."""
        return JobHandle(self.catalog, job_id)

    def _record_vault(self) -> None:
        """Record this client's view of the vault (region, fleet) for the workers.

        Only commands that start jobs do this, so that reading with other settings (a
        ``job list`` from another directory) never changes where the workers look.
        """
        try:
            current = self.catalog.get_vault(self.vault.name)
        except CorruptRecord:
            current = None  # an unreadable record is replaced by this client's view
        if current != self.vault:
            self.catalog.put_vault(self.vault)

    def _submit(
        self,
        operation: Operation,
        item: str,
        item_name: str,
        properties: dict[str, Any] | None = None,
    ) -> JobHandle:
        """Create one job and send its first attempt."""
        job = self._new_job(operation, item, item_name, properties)
        jobs.submit(self.catalog, self._dispatcher, job, self._clock)
        return self.handle(job.id)

    def _submit_each(
        self, operation: Operation, vm_ids: list[str], properties: dict[str, Any] | None = None
    ) -> list[JobHandle]:
        """One job per VM, each created and sent in turn, confirmed sent in batches."""
        new = (self._new_job(operation, vm_id, vm_id, properties) for vm_id in vm_ids)
        submitted = jobs.submit_all(self.catalog, self._dispatcher, new, self._clock)
        return [self.handle(job.id) for job in submitted]

    def _new_job(
        self, operation: Operation, item: str, item_name: str, properties: dict[str, Any] | None
    ) -> Job:
        job = jobs.new_job(
            self.vault.name, operation, item, item_name, self.settings.max_attempts, self._clock
        )
        if properties:
            job = job.evolve(properties={**job.properties, **properties})
        if operation == Operation.BACKUP:
            self.catalog.set_active_backup(self.vault.name, item, job.id)
        return job

    def discover(self) -> JobHandle:
        """Start a Discovery job for the vault."""
        self._record_vault()
        return self._submit(Operation.DISCOVERY, jobs.VAULT_ITEM, self.vault.name)

    def register(self, vms: str | Iterable[str]) -> Batch:
        """Start one Register job per VM that can be registered; refuse the others.

        ``vms``: names (``cloud_service/name`` or a unique name), or one name as a ``str``.
        A name that matches no VM or several, or a VM registered already or in another region,
        is refused (``Batch.refused``) while the others go on: a refusal never raises here
        (``Batch.raise_refused()`` does); Redis errors still do.
        """
        targets, refused = self._screen(vms, inventory.check_submittable)
        if targets:
            self._record_vault()
        return Batch(self._submit_each(Operation.REGISTER, targets), refused)

    def _screen(
        self, names: str | Iterable[str], check: Callable[[VM, VaultConfig], None]
    ) -> tuple[list[str], list[Refusal]]:
        """The ids of the named VMs that pass ``check`` (once each), and the refusals.

        Names that are ids are read together (``Catalog.get_vms``); any other name, or an id
        that read found no live VM for, is looked up by itself (``inventory.find_vm``, which
        says why it is refused): O(names), not O(VMs); unknown names read every VM once,
        together, for their "did you mean" hints.
        """
        unique = list(dict.fromkeys(_names(names)))
        ids = [name for name in unique if "/" in name and wire.encodable(name)]
        live = {vm.id: vm for vm in self.catalog.get_vms(self.vault.name, ids) if not vm.deleted}
        targets: dict[str, None] = {}
        refused: list[Refusal] = []
        whole = functools.cache(lambda: inventory.VMIndex(self.catalog.list_vms(self.vault.name)))
        for name in unique:
            if not wire.encodable(
                name
            ):  # no record key can hold it: Redis would fail the whole batch
                refused.append(Refusal(name, VMNotFoundInInventory(name, _NOT_UTF8)))
                continue
            try:
                # Redis errors are not refusals: they raise.
                vm = live.get(name) or inventory.find_vm(
                    self.catalog, self.vault.name, name, whole=whole
                )
            except (VMNotFoundInInventory, AmbiguousVMName) as exc:
                refused.append(Refusal(name, exc))
                continue
            except CorruptRecord as exc:  # its action points to `problem list`: put it there
                refused.append(Refusal(name, exc))
                jobs.record_problem(self.catalog, exc, "submission", self._clock)
                continue
            try:
                check(vm, self.vault)
            except BackupJobsError as exc:
                refused.append(Refusal(name, exc))
            else:
                targets[vm.id] = None
        return list(targets), refused

    def cancel(self, job_id: str) -> JobHandle:
        """Cancel a job that is queued, waiting to retry or running; a handle to follow it.

        A job nothing runs is ``Cancelled`` at once; a running one is ``Cancelling`` until its
        attempt stops between chunks or steps (a few seconds), then ``Cancelled``. One that
        commits its work first ends ``Completed``: the cancel came too late.
        ``JobNotFound``; ``JobNotCancellable`` if the job has ended.
        """
        cancels.request_cancel(self.catalog, job_id, self._clock)
        return self.handle(job_id)

    def job(self, job_id: str) -> Job:
        """One job record."""
        return self.handle(job_id).job()

    def jobs(
        self,
        operation: Operation | str | None = None,
        status: JobStatus | str | None = None,
        item: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        before: datetime | str | None = None,
        limit: int | None = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> JobPage:
        """A page of the vault's jobs, newest first, filtered in the catalog's indexes.

        Names are read in any case (``failed``); ``item`` is a VM (``cloud_service/name`` or a
        unique name) or ``vault`` (the vault's own jobs, e.g. Discovery); times are datetimes
        (UTC if naive) or text as the CLI takes it (``24h`` ago, ISO 8601): ``since`` and
        ``until`` inclusive, ``before`` exclusive. At most ``limit`` jobs (1 to 1000; None: every
        match); the page's ``next_cursor`` passed as ``cursor`` gives the next, older page (None:
        nothing more). Unreadable records are named in ``problems``.
        """
        return jobs_page.list_jobs(
            self.catalog,
            self.vault.name,
            self._clock.now(),
            operation=operation,
            status=status,
            item=item,
            since=since,
            until=until,
            before=before,
            limit=limit,
            cursor=cursor,
        )

    def vms(self, registrable: bool = False, include_deleted: bool = False) -> Listing[VM]:
        """The vault's VMs; ``registrable``: not registered, in the vault's region, present.

        Records that cannot be read are left out and named in the result's ``problems``.
        """
        found = self.catalog.list_vms(self.vault.name)
        if registrable:
            kept = [
                vm
                for vm in found
                if not vm.deleted
                and vm.region == self.vault.region
                and vm.registration == RegistrationState.NOT_REGISTERED
            ]
        else:
            kept = [vm for vm in found if include_deleted or not vm.deleted]
        return Listing(kept, found.problems)

    def problems(self) -> list[Problem]:
        """Records the ticks found unreadable and skipped (by key, latest sighting)."""
        return self.catalog.problems()

    # --- policies ----------------------------------------------------------------------------

    def create_policy(self, policy: Policy) -> Policy:
        """Add a policy to the vault (build it with ``policies.make_policy``)."""
        policy = checked_policy(policy)
        if not self.catalog.put_policy(self.vault.name, policy):
            raise InvalidPolicy(
                policy.name,
                "name: the vault has a policy with this name already",
                action="Change it with `backup-jobs policy update NAME ...` "
                "(`client.update_policy`), or choose another name.",
            )
        return policy

    def update_policy(self, policy: Policy) -> Policy:
        """Replace a policy; the items it protects follow its new schedule from the next tick."""
        policy = checked_policy(policy)
        self.policy(policy.name)
        self.catalog.put_policy(self.vault.name, policy, replace=True)
        now = self._clock.now()
        for vm_id in self.catalog.policy_items(self.vault.name, policy.name):
            item = self.catalog.get_item(self.vault.name, vm_id)
            if item is not None and item.state.scheduled:
                self.catalog.schedule(self.vault.name, vm_id, next_run(policy, now))
        return policy

    def delete_policy(self, name: str) -> None:
        """Delete a policy no VM uses (``PolicyInUse`` names the VMs it protects)."""
        self.policy(name)
        used = self.catalog.delete_policy(self.vault.name, name)
        if used:
            shown = ", ".join(used[:10]) + (f" and {len(used) - 10} more" if len(used) > 10 else "")
            raise PolicyInUse(name, shown)

    def policy(self, name: str) -> Policy:
        """One policy of the vault; ``PolicyNotFound`` with close matches if there is none."""
        if not isinstance(name, str):
            raise TypeError(f"a policy name is text, not {name!r}")
        found = self.catalog.get_policy(self.vault.name, name)
        if found is None:
            names = [p.name for p in self.catalog.list_policies(self.vault.name)]
            close = difflib.get_close_matches(name, names)
            raise PolicyNotFound(name, f" Did you mean: {', '.join(close)}?" if close else "")
        return found

    def policies(self) -> Listing[Policy]:
        """The vault's policies, by name."""
        return self.catalog.list_policies(self.vault.name)

    # --- protection --------------------------------------------------------------------------

    def protect(self, vms: str | Iterable[str], policy: str, backup_now: bool = False) -> Batch:
        """Start one ConfigureProtection job per VM that can be protected; refuse the others.

        ``backup_now`` starts each VM's initial backup as soon as its protection is set.
        """
        if not isinstance(backup_now, bool):
            raise TypeError(f"backup_now is True or False, not {backup_now!r}")
        self.policy(policy)
        targets, refused = self._screen(vms, protection.check_protectable)
        if targets:
            self._record_vault()
        properties = {protection.POLICY: policy, protection.BACKUP_NOW: backup_now}
        handles = self._submit_each(Operation.CONFIGURE_PROTECTION, targets, properties)
        return Batch(handles, refused)

    def backup_now(self, vm: str) -> JobHandle:
        """Start an on-demand Backup job of a protected VM."""
        if not isinstance(vm, str):
            raise TypeError(f"backup_now takes one VM name as text, not {vm!r}")
        vm_id = inventory.find_vm(self.catalog, self.vault.name, vm).id
        item = self.catalog.get_item(self.vault.name, vm_id)
        if item is None or not item.state.scheduled:
            state = item.state.value if item else "no policy"
            raise NotProtected(vm_id, f"protection: {state}")
        self._record_vault()
        return self._submit(Operation.BACKUP, vm_id, vm_id, {"trigger": "on demand"})

    def protected_items(
        self,
        state: ProtectionState | str | None = None,
        needs_action: Attention | str | None = None,
    ) -> Listing[ItemView]:
        """Every protected item with its next run, skipped or missed runs, and what needs action.

        ``state``: only items in that protection state; ``needs_action``: only items needing
        action for that reason, or for any (``"any"``). Names are read in any case.
        """
        wanted = None if state is None else ProtectionState.parse(state)
        reason = reason_filter(needs_action)
        return item_views(self.catalog, self.vault.name, self._clock.now(), wanted, reason)

    def dashboard(self) -> Dashboard:
        """The seed's Dashboard page: protection, jobs of the last 24 h, items needing action,
        vault storage; each figure with the filter of the listing it counts."""
        vault_dir = Path(self.vault.vault_dir) if self.vault.vault_dir else None
        return build_dashboard(self.catalog, self.vault.name, vault_dir, self._clock.now())


_NOT_UTF8 = " to the vault: the name is not valid UTF-8 (VM names are)."


def _names(names: object) -> list[str]:
    """VM names given as one ``str`` or an iterable of them; ``TypeError`` naming anything else."""
    if isinstance(names, str):
        return [names]
    if isinstance(names, bytes | bytearray) or not isinstance(names, Iterable):
        raise TypeError(f"VM names must be a str or an iterable of str, not {names!r}")
    listed = list(names)
    for name in listed:
        if not isinstance(name, str):
            raise TypeError(f"VM names must be str, not {type(name).__name__} {name!r}")
    return listed
