"""backup-jobs: policy-driven VM backup as a distributed job queue on Celery and Redis.

The front door: ``Client`` (``Client.from_env()``), job handles, the domain values and the
error catalog. Submitting work from Python never imports the worker code.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backup_jobs.client import Batch, Client, JobHandle, JobTimeout, Refusal
    from backup_jobs.errors import (
        AlreadyRegistered,
        AmbiguousVMName,
        BackupJobsError,
        ConfigurationError,
        DataDiskLimitExceeded,
        DiscoveryInProgress,
        DiscoveryInternalError,
        ErrorKind,
        GuestAgentCertificateNotFound,
        InstallAgentTimeout,
        JobNotCancellable,
        JobNotFound,
        OperationInProgress,
        RedisUnavailable,
        RegionMismatch,
        UnsupportedConfiguration,
        VMAgentNotInstalled,
        VMNotFoundInInventory,
        VMNotRunning,
        WorkerLost,
    )
    from backup_jobs.models import (
        VM,
        Job,
        JobPage,
        JobStatus,
        Operation,
        PowerState,
        RegistrationState,
    )
    from backup_jobs.settings import Settings

# Where each name of the front door lives. They are imported on first use (PEP 562), so that
# a process that needs one part (a vault backup in a child process imports backup_jobs.vault)
# does not pay for the client, the catalog and the models it never touches: importing them
# all took ~0.2 s of every such process.
_ORIGINS = {
    "backup_jobs.client": ("Batch", "Client", "JobHandle", "JobTimeout", "Refusal"),
    "backup_jobs.errors": (
        "AlreadyRegistered",
        "AmbiguousVMName",
        "BackupJobsError",
        "ConfigurationError",
        "DataDiskLimitExceeded",
        "DiscoveryInProgress",
        "DiscoveryInternalError",
        "ErrorKind",
        "GuestAgentCertificateNotFound",
        "InstallAgentTimeout",
        "JobNotCancellable",
        "JobNotFound",
        "OperationInProgress",
        "RedisUnavailable",
        "RegionMismatch",
        "UnsupportedConfiguration",
        "VMAgentNotInstalled",
        "VMNotFoundInInventory",
        "VMNotRunning",
        "WorkerLost",
    ),
    "backup_jobs.models": (
        "VM",
        "Job",
        "JobPage",
        "JobStatus",
        "Operation",
        "PowerState",
        "RegistrationState",
    ),
    "backup_jobs.settings": ("Settings",),
}
_MODULE_OF = {name: module for module, names in _ORIGINS.items() for name in names}

__all__ = [  # noqa: RUF022 - plain sorted order, pinned by a test
    "AlreadyRegistered",
    "AmbiguousVMName",
    "BackupJobsError",
    "Batch",
    "Client",
    "ConfigurationError",
    "DataDiskLimitExceeded",
    "DiscoveryInProgress",
    "DiscoveryInternalError",
    "ErrorKind",
    "GuestAgentCertificateNotFound",
    "InstallAgentTimeout",
    "Job",
    "JobHandle",
    "JobNotCancellable",
    "JobNotFound",
    "JobPage",
    "JobStatus",
    "JobTimeout",
    "Operation",
    "OperationInProgress",
    "PowerState",
    "RedisUnavailable",
    "Refusal",
    "RegionMismatch",
    "RegistrationState",
    "Settings",
    "UnsupportedConfiguration",
    "VM",
    "VMAgentNotInstalled",
    "VMNotFoundInInventory",
    "VMNotRunning",
    "WorkerLost",
]


def __getattr__(name: str) -> Any:
    """Import a front-door name from its module on first use, then keep it here."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'backup_jobs' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The front door's names, imported or not (for completion and help()), without this
    module's own imports."""
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
