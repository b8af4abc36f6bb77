"""Protection use-cases: configure protection of a VM with a policy (DESIGN §3, §6).

Pure over the ports. A ConfigureProtection job checks the VM is registered and in the vault's
region, writes its protected item under the VM's lease (``Protected (pending initial
backup)`` until its first recovery point) and schedules its next run from the policy in the
policy's zone; with ``backup_now`` it then starts the initial backup at once.
"""

from __future__ import annotations

from typing import Any

from backup_jobs import jobs
from backup_jobs.context import JobContext
from backup_jobs.errors import NotRegistered, PolicyNotFound, RegionMismatch, VMNotFoundInInventory
from backup_jobs.items import ProtectedItem, ProtectionState
from backup_jobs.models import VM, Job, Operation, RegistrationState, VaultConfig
from backup_jobs.policies import Policy, next_run

# Job properties a ConfigureProtection job carries (set by the client).
POLICY = "policy"
BACKUP_NOW = "backup_now"


def check_protectable(vm: VM, vault: VaultConfig) -> None:
    """Refuse at submission what the job would refuse: another region, not registered."""
    if vm.region != vault.region:
        raise RegionMismatch(vm.id, f"VM in {vm.region}, vault {vault.name} in {vault.region}")
    if vm.registration != RegistrationState.REGISTERED:
        raise NotRegistered(vm.id, f"registration: {vm.registration.value}")


def load_policy(ctx: JobContext, name: str) -> Policy:
    """The vault's policy called ``name``; ``PolicyNotFound`` if it is gone."""
    policy = ctx.catalog.get_policy(ctx.vault.name, name)
    if policy is None:
        raise PolicyNotFound(name, f" It was deleted after job {ctx.job.id} was submitted.")
    return policy


def configure_protection(ctx: JobContext) -> dict[str, Any]:
    """Put the VM under the job's policy and schedule its next run."""
    vault, vm_id = ctx.vault.name, ctx.job.item
    policy = load_policy(ctx, str(ctx.job.properties[POLICY]))
    vm = ctx.catalog_vm()
    if vm is None or vm.deleted:
        raise VMNotFoundInInventory(vm_id, " to the vault. Run discovery, then protect it again.")
    check_protectable(vm, ctx.vault)
    now = ctx.clock.now()
    current = ctx.catalog.get_item(vault, vm_id)
    state = (
        ProtectionState.PROTECTED
        if current is not None and current.recovery_points
        else ProtectionState.PENDING
    )
    item = (current or ProtectedItem(vault, vm_id, policy.name, state, protected_at=now)).evolve(
        policy=policy.name, state=state, last_job_id=ctx.job.id, last_error=None
    )
    at = next_run(policy, now)
    ctx.catalog.put_item(item, ctx.fence, schedule_at=at)
    result: dict[str, Any] = {
        "policy": policy.name,
        "state": state.value,
        "next_run": at.isoformat(),
    }
    if ctx.job.properties.get(BACKUP_NOW):
        result["initial_backup_job"] = initial_backup(ctx, vm_id).id
    return result


def initial_backup(ctx: JobContext, vm_id: str) -> Job:
    """Create the initial Backup job (``--backup-now``), sent once this job has ended.

    Sent now, it could start before this job frees the VM and fail with OperationInProgress.
    """
    job = jobs.new_job(
        ctx.vault.name, Operation.BACKUP, vm_id, vm_id, ctx.settings.max_attempts, ctx.clock
    )
    job = job.evolve(properties={**job.properties, "trigger": "initial"})
    jobs.create(ctx.catalog, job, ctx.clock)
    ctx.catalog.set_active_backup(ctx.vault.name, vm_id, job.id)
    ctx.followups.append(job)
    return job
