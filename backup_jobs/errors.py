"""The error catalog: every error backup-jobs raises on purpose.

Each error has a stable ``code`` (the wire name, also the class name), a ``kind`` that says
what the caller should do, a message naming what failed, on which item and why, a recommended
action, a ``retryable`` flag (only transient errors are retried) and a CLI exit code.
Messages keep the wording of the seed's troubleshooting table.

    BackupJobsError
    ├── InvalidInput (exit 8)         ConfigurationError, AmbiguousVMName, RegionMismatch,
    │                                 InvalidPolicy, NotRegistered, NotProtected,
    │                                 ProtectionNotStopped,
    │                                 InvalidRestoreTarget,
    │                                 AlreadyRegistered, VMNotRunning, DataDiskLimitExceeded,
    │                                 UnsupportedConfiguration, VMAgentNotInstalled,
    │                                 GuestAgentCertificateNotFound, InstallAgentTimeout
    ├── NotFound (exit 3)             VMNotFoundInInventory, JobNotFound, VMNotFound,
    │                                 RecoveryPointNotFound, PolicyNotFound
    ├── Conflict (exit 4)             OperationInProgress, DiscoveryInProgress, LeaseLost,
    │                                 PolicyInUse, AlreadyRunning
    ├── Integrity (exit 5)            VaultIntegrityError, CorruptRecord, QueueTimeout
    ├── Transient (exit 6, retried)   DiscoveryInternalError, WorkerLost, BackupInternalError,
    │                                 SnapshotTimeout, VaultTransferTimeout, FleetStorageError,
    │                                 VaultStorageError
    ├── Unavailable (exit 7)          RedisUnavailable, ProcessFailed
    └── (exit 1)                      Cancelled, InternalError, DemoFailed

CLI exit codes, one per class so that a script can tell them apart: 0 ok; 1 internal error (a
bug); 2 usage error (click's only: unknown command, bad option value); 3 not found; 4
conflict; 5 integrity; 6 transient; 7 unavailable (Redis, a process of the stack); 8 invalid
input; 130 interrupted.
A command with several outcomes (a batch of VMs, ``--wait`` on several jobs) exits with the
code of the most severe one, in the order of ``SEVERITY``.

Errors survive a trip through Celery and through the job record: ``to_dict`` gives the JSON
stored on the job, ``error_from_dict`` rebuilds the right class.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any, ClassVar, TypeVar


class ErrorKind(StrEnum):
    """What the caller should do about an error."""

    INVALID_INPUT = "invalid_input"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    INTEGRITY = "integrity"
    TRANSIENT = "transient"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


EXIT_CODES: dict[ErrorKind, int] = {
    ErrorKind.INVALID_INPUT: 8,
    ErrorKind.NOT_FOUND: 3,
    ErrorKind.CONFLICT: 4,
    ErrorKind.INTEGRITY: 5,
    ErrorKind.TRANSIENT: 6,
    ErrorKind.UNAVAILABLE: 7,
    ErrorKind.INTERNAL: 1,
}
# Ctrl-C (or SIGTERM) stopped the command; the shell's convention for SIGINT.
EXIT_INTERRUPTED = 130

# Most severe first: what a batch with several outcomes reports (and exits with).
SEVERITY: tuple[ErrorKind, ...] = (
    ErrorKind.INTERNAL,
    ErrorKind.INTEGRITY,
    ErrorKind.UNAVAILABLE,
    ErrorKind.TRANSIENT,
    ErrorKind.CONFLICT,
    ErrorKind.NOT_FOUND,
    ErrorKind.INVALID_INPUT,
)

MIN_AGENT_VERSION = "2.6.1198.718"


class BackupJobsError(Exception):
    """Raised for any failure backup-jobs reports to a user; the base of the catalog."""

    kind: ClassVar[ErrorKind] = ErrorKind.INTERNAL
    retryable: ClassVar[bool] = False
    template: ClassVar[str] = "An internal error occurred."
    action: ClassVar[str] = "See the job's details and the worker log."

    def __init__(self, item: str = "", detail: str = "", action: str | None = None) -> None:
        super().__init__(item, detail, action)
        self.item = item
        self.detail = detail
        # A detail that ends a sentence the template ends too: one full stop, not two.
        shown = detail[:-1] if detail.endswith(".") and "{detail}." in self.template else detail
        message = self.template.format(detail=shown)
        if detail and "{detail}" not in self.template:
            message = f"{message} ({detail})"
        self.message = f"{item}: {message}" if item else message
        self.recommended_action = action or self.action

    @property
    def code(self) -> str:
        """The stable wire name of this error."""
        return type(self).__name__

    @property
    def exit_code(self) -> int:
        """The CLI exit code for this error's kind."""
        return EXIT_CODES[self.kind]

    def __str__(self) -> str:
        return f"{self.message} Recommended action: {self.recommended_action}"

    def __repr__(self) -> str:
        # What Flower shows for a failed task: the code, the message and what to do.
        return f"{self.code}({str(self)!r})"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in the job record."""
        return {
            "code": self.code,
            "message": self.message,
            "recommended_action": self.recommended_action,
            "retryable": self.retryable,
            "item": self.item,
            "detail": self.detail,
        }


class InvalidInput(BackupJobsError):
    """Raised when the request or the item's state makes the operation impossible."""

    kind = ErrorKind.INVALID_INPUT


class NotFound(BackupJobsError):
    """Raised when a named object does not exist."""

    kind = ErrorKind.NOT_FOUND


class Conflict(BackupJobsError):
    """Raised when another operation holds the item."""

    kind = ErrorKind.CONFLICT


class Integrity(BackupJobsError):
    """Raised when stored data fails verification; never retried."""

    kind = ErrorKind.INTEGRITY


class Transient(BackupJobsError):
    """Raised for failures that a later attempt may not meet; the only kind retried."""

    kind = ErrorKind.TRANSIENT
    retryable = True
    # What to do once no attempt is left (None: the action, then start the operation again).
    final_action: ClassVar[str | None] = None

    def after_last_attempt(self, attempts: int) -> Transient:
        """This error as the end of a job: no attempt follows, so the action says so."""
        action = self.final_action or (
            f"{self.recommended_action.rstrip('.')}; then start the operation again."
        )
        failed = "Its only attempt failed" if attempts == 1 else f"All {attempts} attempts failed"
        return type(self)(self.item, self.detail, f"{failed}. {action}")


class Unavailable(BackupJobsError):
    """Raised when a service backup-jobs needs cannot be reached."""

    kind = ErrorKind.UNAVAILABLE


# --- Configuration and inventory -------------------------------------------------------------


class ConfigurationError(InvalidInput):
    """Raised when a setting, a fleet directory or a vm.json is malformed."""

    template = "Invalid configuration: {detail}."
    action = "Fix the named setting or file and try again."


class VMNotFoundInInventory(NotFound):
    """Raised when a VM name matches no VM known to the vault (or, for fleet verbs, the fleet)."""

    template = "No VM with this name is known{detail}"
    action = "Run `backup-jobs vm discover`, then check the name with `backup-jobs vm list`."


class AmbiguousVMName(InvalidInput):
    """Raised when a bare VM name matches VMs in two or more cloud services."""

    template = "The name matches VMs in several cloud services: {detail}."
    action = "Name the VM as cloud_service/name."


class RegionMismatch(InvalidInput):
    """Raised when a VM is not in the vault's region."""

    template = "The VM is not in the same region as the backup vault ({detail})."
    action = "Register it with a vault in the VM's region."


class AlreadyRegistered(InvalidInput):
    """Raised when registering a VM that is already registered."""

    template = "The VM is already registered."
    action = "Nothing to do: the VM is registered; see `backup-jobs vm list`."


class JobNotFound(NotFound):
    """Raised when a job id matches no job."""

    template = "No job with this id."
    action = "List jobs with `backup-jobs job list`."


# --- Discovery -------------------------------------------------------------------------------


class DiscoveryInternalError(Transient):
    """Raised when the provider fails while listing VMs."""

    template = (
        "Failed to discover new items - Backup encountered an internal error. "
        "Wait for a few minutes and then try the operation again."
    )
    action = "Retry the discovery process after 15 minutes."


class DiscoveryInProgress(Conflict):
    """Raised when a discovery starts while another runs on the same vault."""

    template = (
        "Failed to discover new items - Another Discovery operation is already in progress. "
        "Please wait until the current Discovery operation has completed."
    )
    action = (
        "Wait for the running discovery (its job is named in the message) to finish; "
        "its results include the VMs this one would find."
    )


# --- Register --------------------------------------------------------------------------------


class VMNotRunning(InvalidInput):
    """Raised when registering a VM that is not running."""

    template = (
        "The VM is not in a state to install the extension - Please check if the VM is in "
        "the Running state. The backup extension requires the VM to be Running."
    )
    action = (
        "Start the virtual machine, and when it is in the running state, "
        "retry the register operation."
    )


class DataDiskLimitExceeded(InvalidInput):
    """Raised when a VM has more data disks than the supported limit."""

    template = (
        "Number of data disks attached to the virtual machine exceeded the supported limit - "
        "Please detach some data disks on this virtual machine and retry the operation. "
        "{detail}"
    )
    action = (
        "Detach data disks until the VM has at most the supported number "
        "(BACKUP_JOBS_MAX_DATA_DISKS), then retry the register operation."
    )


class UnsupportedConfiguration(InvalidInput):
    """Raised when a VM uses premium storage, several NICs or a load balancer."""

    template = (
        "Backup encountered an internal error - the VM has an unsupported configuration: {detail}."
    )
    action = "Remove the unsupported configuration."


class VMAgentNotInstalled(InvalidInput):
    """Raised when the VM has no VM agent to install the backup extension through."""

    template = (
        "Failed to install the backup extension on the selected item - the VM agent is a "
        "pre-requisite for the backup extension. Please install the VM agent and restart "
        "the registration operation."
    )
    action = "Check that the VM agent is installed and the VM's agent flag is set."


class GuestAgentCertificateNotFound(InvalidInput):
    """Raised when the VM agent is older than the minimum supported version."""

    # The detail says which version is older than which minimum: the minimum is a setting.
    template = "VM Guest Agent Certificate not found (VM agent {detail})."
    action = f"Install the latest VM agent ({MIN_AGENT_VERSION} or higher)."


class InstallAgentTimeout(InvalidInput):
    """Raised when installing the backup extension exceeds its timeout."""

    template = "Registration failed with Install Agent operation timeout."
    action = "Check whether the operating system version of the virtual machine is supported."


class JobNotCancellable(Conflict):
    """Raised when a cancel names a job that has ended (or ended while the cancel was asked)."""

    template = "The job cannot be cancelled: {detail}."
    action = (
        "Nothing to cancel: the job has ended. See how with `backup-jobs job show ID`; undo "
        "its result with the matching operation if you need to."
    )


class OperationInProgress(Conflict):
    """Raised when a job starts on an item another job holds; names the running job."""

    template = (
        "Command execution failed - Another operation is in progress on this item. "
        "Please wait until the previous operation is completed, and then retry. {detail}"
    )
    action = (
        "Wait for the running job to end (follow it with `backup-jobs job show ID`), then start "
        "this operation again."
    )


class LeaseLost(Conflict):
    """Raised when a worker's fencing token is stale: another attempt owns the item now."""

    template = "The job lost its lease on the item; a newer attempt owns it."
    action = (
        "Nothing to do: the newer attempt carries on; follow it with `backup-jobs job show ID`."
    )


class WorkerLost(Transient):
    """Raised (by the reaper) when the worker running an attempt died."""

    template = "The worker running this job stopped responding (its lease expired)."
    action = (
        "Nothing to do while attempts remain: the job is retried automatically; follow it "
        "with `backup-jobs job show ID`."
    )
    final_action = (
        "Check why workers stopped (their logs; memory; `backup-jobs up`'s output), then start "
        "the operation again."
    )


# --- Backup (used by later jobs; here so the catalog is whole) -------------------------------


class VaultTransferTimeout(Transient):
    """Raised when copying disks into the vault exceeds its deadline."""

    template = (
        "Copying VHDs from backup vault timed out - Please retry the operation in a few minutes."
    )
    action = "Too much data to copy; check that the VM has fewer than six data disks."


class RestoreTimeout(Transient):
    """Raised when writing a recovery point's disks out of the vault exceeds its deadline."""

    template = (
        "Restoring from the backup vault timed out - Please retry the operation in a few minutes."
    )
    action = (
        "The job is retried automatically while attempts remain; for a large recovery point "
        "raise BACKUP_JOBS_RESTORE_TIMEOUT_SECONDS, or restore to faster storage."
    )


class SnapshotTimeout(Transient):
    """Raised when the snapshot sub-task exceeds its deadline."""

    template = "Snapshot VM sub task timed out - Please retry the operation in a few minutes."
    action = "Check the VM agent and its network access."


class BackupInternalError(Transient):
    """Raised when a backup fails for a reason no narrower error names."""

    template = "Backup failed with an internal error - Please retry the operation in a few minutes."
    action = (
        "Nothing to do while attempts remain: the job is retried automatically; if it keeps "
        "failing, see the job's details and the worker log."
    )
    final_action = "See the job's details and the worker log, then start the backup again."


class VMNotFound(NotFound):
    """Raised when a protected VM has been deleted from the provider."""

    template = (
        "Backup failed with an internal error - the original VM has been deleted, "
        "so a backup cannot be taken."
    )
    action = (
        "Stop protection and keep the data, to keep the recovery points and stop the errors: "
        "`backup-jobs protection stop VM --keep-data`."
    )


class VaultIntegrityError(Integrity):
    """Raised when a chunk, index or manifest in the vault fails verification."""

    template = "Vault data failed verification: {detail}."
    action = "Run `backup-jobs vault verify`; the next backup stores quarantined chunks again."


class InvalidPolicy(InvalidInput):
    """Raised when a policy's schedule, zone or retention is not valid; names the field."""

    template = "The policy is not valid: {detail}."
    action = "Fix the named field and create the policy again (`backup-jobs policy create --help`)."


class NotRegistered(InvalidInput):
    """Raised when protecting a VM that is not registered with the vault."""

    template = "The VM is not registered with the vault ({detail})."
    action = "Register it first: `backup-jobs vm register VM --wait`, then protect it."


# What to do about a VM whose protection is stopped already (its points kept).
STOPPED_ACTION = (
    "Its protection is stopped already and its points kept: resume it with `backup-jobs "
    "protection resume VM --policy P`, or delete its data with `backup-jobs protection stop VM "
    "--delete-data`."
)


class NotProtected(InvalidInput):
    """Raised when backing up a VM that no policy protects."""

    template = "The VM is not protected ({detail})."
    action = "Protect it first: `backup-jobs protection set VM --policy P`."


class ProtectionNotStopped(InvalidInput):
    """Raised when resuming the protection of a VM whose protection is not stopped."""

    template = "The VM's protection is not stopped ({detail})."
    action = (
        "Nothing to resume: change its policy with `backup-jobs protection set VM --policy P`, "
        "or stop it first with `backup-jobs protection stop VM --keep-data`."
    )


class PolicyNotFound(NotFound):
    """Raised when a policy name matches no policy of the vault."""

    template = "No policy with this name in the vault.{detail}"
    action = "List the vault's policies with `backup-jobs policy list`."


class PolicyInUse(Conflict):
    """Raised when deleting a policy that protects VMs; names them."""

    template = "The policy protects VMs and cannot be deleted: {detail}."
    action = (
        "Move those VMs to another policy (`backup-jobs protection set VM --policy P`) or stop "
        "their protection (`backup-jobs protection stop VM --keep-data`), then "
        "delete the policy."
    )


class AlreadyRunning(Conflict):
    """Raised when ``up``, ``demo`` or ``server`` starts on a data dir whose stack runs."""

    template = "backup-jobs is already running for {detail}."
    action = "Stop it first (Ctrl-C where it runs), or use another BACKUP_JOBS_DATA_DIR."


class CorruptRecord(Integrity):
    """Raised when a record in Redis cannot be read (not JSON, wrong shape, wrong type)."""

    template = "The record cannot be read: {detail}."
    action = (
        "Repair or delete that key (e.g. `redis-cli DEL KEY`); `backup-jobs vm discover` "
        "rewrites VM records. `backup-jobs problem list` shows every record found unreadable."
    )


class QueueTimeout(Integrity):
    """Raised (by the queue sweep) when no worker started a Queued job within the bound."""

    template = "No worker started this job: {detail}."
    action = (
        "Check that workers run and serve the job's queue (`celery -A workers inspect "
        "active_queues`), then submit the operation again."
    )


class FleetStorageError(Transient):
    """Raised when the fleet's file system refuses a write (full, read-only, no permission)."""

    template = "The fleet's storage refused a write: {detail}."
    action = (
        "Free space on (or fix the permissions of) the named path; the job is retried "
        "automatically."
    )
    final_action = (
        "Free space on (or fix the permissions of) the named path, then start the operation again."
    )


class VaultStorageError(Transient):
    """Raised when the vault's file system refuses a write (full, read-only, over quota)."""

    template = "The vault's storage refused a write: {detail}."
    action = (
        "Free space on the vault's disk (BACKUP_JOBS_VAULT_DIR) or make it writable; the job "
        "is retried automatically, and what the failed attempt wrote is reclaimed by GC."
    )
    final_action = (
        "Free space on the vault's disk (BACKUP_JOBS_VAULT_DIR) or make it writable, then "
        "start the backup again."
    )


class InvalidRestoreTarget(InvalidInput):
    """Raised when a restore target is outside the allowed root or would overwrite a file."""

    template = "Cannot restore there: {detail}."
    action = "Choose an empty target inside the allowed restore root, or ask to overwrite."


class RecoveryPointNotFound(NotFound):
    """Raised when a recovery point id matches no committed manifest."""

    template = "No such recovery point."
    action = "List recovery points with `backup-jobs recovery-point list VM`."


class Cancelled(BackupJobsError):
    """Raised inside a job when its cancel flag is seen; the job ends Cancelled."""

    template = "The operation was cancelled; nothing partial was kept."
    action = "Nothing to do: the job was cancelled as asked; start it again if you still want it."


class DemoFailed(BackupJobsError):
    """Raised when a step of ``backup-jobs demo`` ends otherwise than it should."""

    template = "The demo stopped: {detail}."
    action = "See the job with `backup-jobs job show ID` and the worker log in the data dir."


class InternalError(BackupJobsError):
    """Raised when an unexpected exception escapes an operation (a bug)."""

    template = "An internal error occurred: {detail}."


class RedisUnavailable(Unavailable):
    """Raised when the Redis server cannot be reached or refuses the credentials."""

    template = "Cannot use Redis at {detail}."
    action = (
        "Check that the server is running and reachable, and that BACKUP_JOBS_REDIS_URL "
        "(including its password) is right. For the embedded server, leave "
        "BACKUP_JOBS_REDIS_URL unset and use the same BACKUP_JOBS_DATA_DIR as `backup-jobs up`, "
        "as the user that owns it: its password is in that data dir's server.password file."
    )


class ProcessFailed(Unavailable):
    """Raised when a process of the stack exits while starting, does not answer, or keeps
    crashing: ``up``, ``demo`` and ``server`` stop what they started and end with it."""

    template = "A process of the stack failed: {detail}."
    action = "Fix what the process's log shows, then start the stack again."


E = TypeVar("E", bound=BackupJobsError)


def most_severe(errors: Iterable[E]) -> E | None:
    """The error of the most severe kind (``SEVERITY``), the first of equals; None if none."""
    return min(errors, key=lambda error: SEVERITY.index(error.kind), default=None)


def _catalog() -> dict[str, type[BackupJobsError]]:
    found: dict[str, type[BackupJobsError]] = {}
    pending: list[type[BackupJobsError]] = [BackupJobsError]
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found


def error_class(code: str) -> type[BackupJobsError]:
    """The catalog class for a code; unknown codes become ``InternalError``."""
    return _catalog().get(code, InternalError)


def error_from_dict(data: dict[str, Any]) -> BackupJobsError:
    """Rebuild an error from its ``to_dict`` form.

    Records written before every error had an action hold ``"None"``; they get the class's.
    """
    cls = error_class(str(data.get("code", "")))
    action = data.get("recommended_action")
    return cls(
        str(data.get("item", "")),
        str(data.get("detail", "")),
        None if action == "None" else action,
    )
