"""What each operation runs, what it does on failure, and how its time limit reads.

The worker's shared task base looks operations up here, so a task module is one line per
operation and the cross-cutting behaviour (lease, retries, limits) lives in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backup_jobs.errors import BackupJobsError, DiscoveryInternalError, InstallAgentTimeout
from backup_jobs.inventory import JobContext, discover, register, register_failed
from backup_jobs.models import Operation
from backup_jobs.settings import Settings

# Seconds between the soft and the hard time limit: enough to record the failure and
# release the lease before the worker kills the child.
CLEANUP_MARGIN_SECONDS = 30


def _ignore_failure(ctx: JobContext, error: BackupJobsError) -> None:
    """Operations whose failure leaves no item state to roll back."""


@dataclass(frozen=True)
class OperationSpec:
    """How one operation runs as a job."""

    run: Callable[[JobContext], dict[str, Any]]
    on_failure: Callable[[JobContext, BackupJobsError], None]
    timeout_error: Callable[[str], BackupJobsError]
    soft_limit_seconds: Callable[[Settings], float]


OPERATIONS: dict[Operation, OperationSpec] = {
    Operation.DISCOVERY: OperationSpec(
        run=discover,
        on_failure=_ignore_failure,
        timeout_error=lambda item: DiscoveryInternalError(item, "discovery timed out"),
        soft_limit_seconds=lambda s: s.timeouts.discovery_seconds,
    ),
    Operation.REGISTER: OperationSpec(
        run=register,
        on_failure=register_failed,
        timeout_error=lambda item: InstallAgentTimeout(item, "register time limit reached"),
        soft_limit_seconds=lambda s: s.timeouts.install_agent_seconds + CLEANUP_MARGIN_SECONDS,
    ),
}
