"""What each operation runs, what it does on failure, and how its time limit reads.

The worker's shared task base and the reaper look operations up here, so a task module is one
line per operation and the cross-cutting behaviour (lease, retries, limits, roll-back) lives in
one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backup_jobs.backups import backup_failed, run_backup
from backup_jobs.catalog import Catalog, Fence
from backup_jobs.context import JobContext
from backup_jobs.errors import (
    BackupJobsError,
    DiscoveryInternalError,
    InstallAgentTimeout,
    InternalError,
    RestoreTimeout,
    VaultTransferTimeout,
)
from backup_jobs.inventory import discover, register, register_failed
from backup_jobs.jobs import Rollback
from backup_jobs.maintenance import run_garbage_collect, run_prune, run_verify
from backup_jobs.models import Job, Operation
from backup_jobs.protection import configure_protection
from backup_jobs.restores import run_restore
from backup_jobs.settings import MAINTENANCE_TIMEOUT_SECONDS, Settings
from backup_jobs.stopping import delete_backup_data, stop_protection

# Seconds between the soft and the hard time limit: enough to record the failure and
# release the lease before the worker kills the child.
CLEANUP_MARGIN_SECONDS = 30
# Configuring protection writes a few records: minutes would mean Redis is in trouble.
CONFIGURE_PROTECTION_SECONDS = 120
# Deleting a VM's manifests and mirrors: seconds per thousand points.
DELETE_BACKUP_DATA_SECONDS = 3600


def _nothing_to_roll_back(catalog: Catalog, job: Job, fence: Fence, error: BackupJobsError) -> None:
    """Operations whose failure leaves no item state to roll back."""


@dataclass(frozen=True)
class OperationSpec:
    """How one operation runs as a job."""

    run: Callable[[JobContext], dict[str, Any]]
    on_failure: Rollback
    timeout_error: Callable[[str], BackupJobsError]
    soft_limit_seconds: Callable[[Settings], float]


def _maintenance(run: Callable[[JobContext], dict[str, Any]], name: str) -> OperationSpec:
    """A vault maintenance job: nothing to roll back (it is idempotent: run it again)."""
    return OperationSpec(
        run=run,
        on_failure=_nothing_to_roll_back,
        timeout_error=lambda item: InternalError(item, f"{name} time limit reached"),
        soft_limit_seconds=lambda s: MAINTENANCE_TIMEOUT_SECONDS,
    )


OPERATIONS: dict[Operation, OperationSpec] = {
    Operation.DISCOVERY: OperationSpec(
        run=discover,
        on_failure=_nothing_to_roll_back,
        timeout_error=lambda item: DiscoveryInternalError(item, "discovery timed out"),
        soft_limit_seconds=lambda s: s.timeouts.discovery_seconds,
    ),
    Operation.REGISTER: OperationSpec(
        run=register,
        on_failure=register_failed,
        timeout_error=lambda item: InstallAgentTimeout(item, "register time limit reached"),
        soft_limit_seconds=lambda s: s.timeouts.install_agent_seconds + CLEANUP_MARGIN_SECONDS,
    ),
    Operation.CONFIGURE_PROTECTION: OperationSpec(
        run=configure_protection,
        on_failure=_nothing_to_roll_back,
        timeout_error=lambda item: InternalError(item, "configure protection time limit reached"),
        soft_limit_seconds=lambda s: CONFIGURE_PROTECTION_SECONDS,
    ),
    # The sub-tasks have their own deadlines (SnapshotTimeout, VaultTransferTimeout); the job's
    # limit is their sum plus a margin, a last resort.
    Operation.BACKUP: OperationSpec(
        run=run_backup,
        on_failure=backup_failed,
        timeout_error=lambda item: VaultTransferTimeout(item, "backup time limit reached"),
        soft_limit_seconds=lambda s: (
            s.timeouts.snapshot_seconds + s.timeouts.transfer_seconds + CLEANUP_MARGIN_SECONDS
        ),
    ),
    # The transfer has its own deadline (RestoreTimeout); creating a new VM is a rename.
    Operation.RESTORE: OperationSpec(
        run=run_restore,
        on_failure=_nothing_to_roll_back,
        timeout_error=lambda item: RestoreTimeout(item, "restore time limit reached"),
        soft_limit_seconds=lambda s: s.timeouts.restore_seconds + CLEANUP_MARGIN_SECONDS,
    ),
    Operation.STOP_PROTECTION: OperationSpec(
        run=stop_protection,
        on_failure=_nothing_to_roll_back,
        timeout_error=lambda item: InternalError(item, "stop protection time limit reached"),
        soft_limit_seconds=lambda s: CONFIGURE_PROTECTION_SECONDS,
    ),
    # Whatever a failed attempt deleted stays deleted; deleting again finishes the work.
    Operation.DELETE_BACKUP_DATA: OperationSpec(
        run=delete_backup_data,
        on_failure=_nothing_to_roll_back,
        timeout_error=lambda item: InternalError(item, "delete backup data time limit reached"),
        soft_limit_seconds=lambda s: DELETE_BACKUP_DATA_SECONDS,
    ),
    Operation.PRUNE: _maintenance(run_prune, "prune"),
    Operation.VERIFY: _maintenance(run_verify, "verify"),
    Operation.GARBAGE_COLLECT: _maintenance(run_garbage_collect, "garbage collection"),
}


def roll_back(catalog: Catalog, job: Job, fence: Fence, error: BackupJobsError) -> None:
    """Put the job's item back into a state a user can act on after a failed attempt."""
    OPERATIONS[job.operation].on_failure(catalog, job, fence, error)
