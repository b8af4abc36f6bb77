"""backup-jobs: policy-driven VM backup as a distributed job queue on Celery and Redis.

The front door: ``Client`` (``Client.from_env()``), job handles, the domain values and the
error catalog. Submitting work from Python never imports the worker code.
"""

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
