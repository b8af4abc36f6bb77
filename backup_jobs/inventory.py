"""Inventory use-cases: discover the fleet's VMs, resolve names, register VMs.

Pure: the catalog, provider and clock come in through ``JobContext``; no Celery, no Redis.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from backup_jobs import wire
from backup_jobs.catalog import Catalog, Fence
from backup_jobs.context import JobContext
from backup_jobs.errors import (
    MIN_AGENT_VERSION,
    AlreadyRegistered,
    AmbiguousVMName,
    BackupJobsError,
    CorruptRecord,
    DataDiskLimitExceeded,
    DiscoveryInternalError,
    FleetStorageError,
    GuestAgentCertificateNotFound,
    InstallAgentTimeout,
    InternalError,
    LeaseLost,
    RegionMismatch,
    UnsupportedConfiguration,
    VMAgentNotInstalled,
    VMNotFoundInInventory,
    VMNotRunning,
)
from backup_jobs.models import (
    AGENT_VERSION_UNKNOWN,
    VM,
    Job,
    PowerState,
    RegistrationState,
    VaultConfig,
)
from backup_jobs.provider import (
    CommitGuard,
    Inventory,
    ProviderError,
    ProviderFenced,
    ProviderStorageError,
    ProviderTimeout,
)


def discover(ctx: JobContext) -> dict[str, Any]:
    """List the fleet into the catalog: new VMs appear, vanished VMs are marked deleted.

    A VM the provider cannot read is skipped with a warning (never marked deleted); a VM
    record the catalog cannot read is rewritten from the provider.
    """
    vault = ctx.vault.name
    try:
        inventory = ctx.provider.list_vms()
    except ProviderError as exc:
        raise DiscoveryInternalError(vault, str(exc)) from exc
    found = {vm.id: vm for vm in inventory.vms}
    listing = ctx.catalog.list_vms(vault)
    known = {vm.id: vm for vm in listing}
    added = deleted = 0
    for vm_id, vm in found.items():
        previous = known.get(vm_id)
        added += previous is None or previous.deleted
        ctx.catalog.put_vm(vault, vm)
        ctx.heartbeat()
    _repair_states(ctx, found, {problem.key for problem in listing.problems})
    skipped = _warn_unreadable(ctx, inventory)
    for vm_id, vm in known.items():
        if vm_id not in found and vm_id not in skipped and not vm.deleted:
            ctx.catalog.put_vm(vault, replace(vm, deleted=True))
            deleted += 1
    return {"vms": len(found), "new": added, "deleted": deleted, "skipped": len(skipped)}


def _warn_unreadable(ctx: JobContext, inventory: Inventory) -> set[str]:
    """Warn about each VM the provider could not read; their ids."""
    for bad in inventory.unreadable:
        ctx.warnings.append(f"{bad.where}: {bad.reason}; the VM was skipped.")
    return {bad.vm_id for bad in inventory.unreadable if bad.vm_id}


def _repair_states(ctx: JobContext, found: dict[str, VM], bad_keys: set[str]) -> None:
    """Rewrite each unreadable VM state record from what the provider says now."""
    vault = ctx.vault.name
    for vm_id, vm in found.items():
        if wire.vm_state_key(vault, vm_id) not in bad_keys:
            continue
        registration = (
            RegistrationState.REGISTERED
            if vm.extension_installed
            else RegistrationState.NOT_REGISTERED
        )
        if ctx.catalog.repair_vm_state(vault, replace(vm, registration=registration)):
            ctx.warnings.append(
                f"{vm_id}: its state record was unreadable; rewritten as {registration.value} "
                "from the provider."
            )


def resolve_vm(vms: Iterable[VM], name: str) -> VM:
    """The one live VM called ``name`` (``cloud_service/name`` or a unique bare name)."""
    return VMIndex(vms).resolve(name)


def find_vm(
    catalog: Catalog,
    vault: str,
    name: str,
    *,
    include_deleted: bool = False,
    whole: Callable[[], VMIndex] | None = None,
) -> VM:
    """The one live VM (or deleted one too, if asked) called ``name``, looked up directly.

    O(1) in the vault's size: only a name that matches nothing reads every VM, for the
    error's "did you mean" hint (through ``whole``, if given: a batch reads them once for all
    its unknown names). ``AmbiguousVMName`` for a bare name used in two cloud services;
    ``CorruptRecord`` if the only VM of that name cannot be read.
    """
    found = catalog.find_vms(vault, name)
    matches = [vm for vm in found if include_deleted or not vm.deleted]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise AmbiguousVMName(name, ", ".join(sorted(vm.id for vm in matches)))
    if found.problems:
        raise CorruptRecord(found.problems[0].key, found.problems[0].reason)
    # Unknown: the whole inventory's error, with its hint (or the VM, if it just appeared).
    if whole is not None:
        return whole().resolve(name)
    return VMIndex(catalog.list_vms(vault), include_deleted=include_deleted).resolve(name)


class VMIndex:
    """Live VMs (deleted ones too, if asked) by id and by bare name: one pass for many names."""

    def __init__(
        self, vms: Iterable[VM], where: str = "the vault", *, include_deleted: bool = False
    ) -> None:
        self.where = where  # what an unknown name is unknown to, in the error
        live = [vm for vm in vms if include_deleted or not vm.deleted]
        self.by_id = {vm.id: vm for vm in live}
        self.by_name: dict[str, list[VM]] = {}
        for vm in live:
            self.by_name.setdefault(vm.name, []).append(vm)

    def resolve(self, name: str) -> VM:
        """The one live VM called ``name`` (``cloud_service/name`` or a unique bare name)."""
        if "/" in name:
            found = self.by_id.get(name)
            matches = [found] if found else []
        else:
            matches = self.by_name.get(name, [])
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise AmbiguousVMName(name, ", ".join(sorted(vm.id for vm in matches)))
        close = difflib.get_close_matches(name, [*self.by_id, *self.by_name])
        hint = f" Did you mean: {', '.join(dict.fromkeys(close))}?" if close else ""
        raise VMNotFoundInInventory(name, f" to {self.where}.{hint}")


def check_submittable(vm: VM, vault: VaultConfig) -> None:
    """Refuse at submission what the register job would refuse anyway: wrong region, done."""
    if vm.region != vault.region:
        raise RegionMismatch(vm.id, f"VM in {vm.region}, vault {vault.name} in {vault.region}")
    if vm.registration == RegistrationState.REGISTERED:
        raise AlreadyRegistered(vm.id)


def check_registrable(
    vm: VM, vault: VaultConfig, max_data_disks: int, min_agent_version: str = MIN_AGENT_VERSION
) -> None:
    """Raise the seed's error for the first reason ``vm`` cannot take the backup extension.

    ``min_agent_version`` is the seed's for its VM agent; a provider with another agent (the
    QEMU guest agent) has its own, from the settings.
    """
    if vm.region != vault.region:
        raise RegionMismatch(vm.id, f"VM in {vm.region}, vault {vault.name} in {vault.region}")
    if vm.power_state != PowerState.RUNNING:
        raise VMNotRunning(vm.id, f"power state: {vm.power_state.value}")
    if len(vm.data_disks) > max_data_disks:
        raise DataDiskLimitExceeded(
            vm.id,
            f"Backup supports up to {max_data_disks} data disks; this VM has {len(vm.data_disks)}.",
            f"Detach data disks until the VM has at most {max_data_disks}, "
            "then retry the register operation.",
        )
    unsupported = [
        reason
        for reason, present in (
            ("premium storage", vm.storage_tier.lower() == "premium"),
            (f"multiple NICs ({vm.nics})", vm.nics > 1),
            ("load balancer", vm.load_balancer),
        )
        if present
    ]
    if unsupported:
        raise UnsupportedConfiguration(vm.id, ", ".join(unsupported))
    if not vm.agent_version:
        raise VMAgentNotInstalled(vm.id)
    if vm.agent_version == AGENT_VERSION_UNKNOWN:
        return  # the install step finds out, waiting for the agent to answer
    if version_tuple(vm.agent_version) < version_tuple(min_agent_version):
        raise GuestAgentCertificateNotFound(
            vm.id,
            f"{vm.agent_version} is older than {min_agent_version}",
            f"Install the latest VM agent ({min_agent_version} or higher).",
        )


def version_tuple(version: str) -> tuple[int, ...]:
    """``"2.6.1198.718"`` as ``(2, 6, 1198, 718)``; non-numeric parts count as 0."""
    return tuple(int(part) if part.isdigit() else 0 for part in version.split("."))


def register(ctx: JobContext) -> dict[str, Any]:
    """Check the VM, install the backup extension through its agent, mark it Registered.

    Registered is settled (``JobContext.settle_vm``), not written here: the task base writes
    it with the job's Completed record, one fenced write for both.
    """
    vault, vm_id = ctx.vault.name, ctx.job.item
    vm = ctx.provider.get_vm(vm_id)
    if vm is None:
        raise VMNotFoundInInventory(vm_id, " to the fleet any more; run discovery.")
    record = ctx.catalog_vm()
    if record is not None and record.registration == RegistrationState.REGISTERED:
        if record.last_job_id == ctx.job.id:
            # An earlier attempt of this job registered the VM but died before recording it.
            return {"vm": vm_id, "registration": RegistrationState.REGISTERED.value}
        raise AlreadyRegistered(vm_id)
    check_registrable(vm, ctx.vault, ctx.settings.max_data_disks, ctx.settings.min_agent_version)
    ctx.catalog.put_vm_state(
        vault,
        replace(vm, registration=RegistrationState.REGISTERING, last_job_id=ctx.job.id),
        ctx.fence,
    )
    _install(ctx, vm_id)
    ctx.settle_vm(
        replace(
            vm, registration=RegistrationState.REGISTERED, last_job_id=ctx.job.id, last_error=None
        )
    )
    return {"vm": vm_id, "registration": RegistrationState.REGISTERED.value}


def _install(ctx: JobContext, vm_id: str) -> None:
    """Install the extension, committed only under the lease; provider errors mapped."""
    guard = CommitGuard(ctx.fence.token, ctx.guard, ctx.fence.vault)
    try:
        ctx.provider.install_extension(
            vm_id, ctx.settings.timeouts.install_agent_seconds, ctx.heartbeat, guard
        )
    except ProviderTimeout as exc:
        raise InstallAgentTimeout(vm_id, str(exc)) from exc
    except ProviderFenced as exc:
        raise LeaseLost(vm_id, str(exc)) from exc
    except ProviderStorageError as exc:
        raise FleetStorageError(vm_id, str(exc)) from exc
    except ProviderError as exc:
        raise InternalError(vm_id, str(exc)) from exc


def register_failed(catalog: Catalog, job: Job, fence: Fence, error: BackupJobsError) -> None:
    """Put the VM back to NotRegistered with the job's error, if this job still owns it.

    Called after every failed attempt, the reaper's included, so that no VM stays Registering
    once nothing runs on it; a retry sets Registering again when it starts.
    """
    try:
        record = catalog.get_vm(job.vault, job.item)
    except CorruptRecord:
        return  # Discovery rewrites it; the problem shows in listings meanwhile.
    if record is None or record.registration == RegistrationState.REGISTERED:
        return
    catalog.put_vm_state(
        job.vault,
        replace(
            record,
            registration=RegistrationState.NOT_REGISTERED,
            last_job_id=job.id,
            last_error=error.to_dict(),
        ),
        fence,
    )
