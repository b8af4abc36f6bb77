"""Values of the domain: VMs, jobs, vaults, and their states.

Persisted records are JSON with a ``version`` field so that ``redis-cli`` can read them and a
later release can migrate them. ``to_dict``/``from_dict`` are the only codecs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Generic, Self, TypeVar

from backup_jobs.errors import ConfigurationError

RECORD_VERSION = 1
T = TypeVar("T")


def _folded(text: str) -> str:
    """``in-progress``, ``in_progress`` and ``InProgress`` all fold to ``inprogress``."""
    return "".join(c for c in text.lower() if c not in "-_ ")


class ParsedEnum(StrEnum):
    """A ``StrEnum`` that reads any case, with or without ``-``/``_`` between words.

    People and old records spell values several ways (``register``, ``Register``,
    ``in-progress``); the enum always prints its own spelling.
    """

    @classmethod
    def _missing_(cls, value: object) -> Self | None:
        wanted = _folded(str(value))
        return next((member for member in cls if _folded(member.value) == wanted), None)

    @classmethod
    def parse(cls, text: str) -> Self:
        """The member ``text`` names in any spelling; ``ConfigurationError`` listing the values."""
        try:
            return cls(text)
        except ValueError:
            accepted = ", ".join(member.value for member in cls)
            raise ConfigurationError(
                detail=f"{cls.__name__} {text!r} is not valid; accepted: {accepted} (any case)"
            ) from None


class Operation(ParsedEnum):
    """What a job does, in the seed's spelling; ``wire.TASK_NAMES`` maps it to its task."""

    DISCOVERY = "Discovery"
    REGISTER = "Register"
    CONFIGURE_PROTECTION = "ConfigureProtection"
    BACKUP = "Backup"
    RESTORE = "Restore"
    STOP_PROTECTION = "StopProtection"
    DELETE_BACKUP_DATA = "DeleteBackupData"
    PRUNE = "Prune"
    VERIFY = "Verify"
    GARBAGE_COLLECT = "GarbageCollect"


class JobStatus(ParsedEnum):
    """Where a job is in its life (DESIGN §3)."""

    QUEUED = "Queued"
    IN_PROGRESS = "InProgress"
    WAITING_TO_RETRY = "WaitingToRetry"
    CANCELLING = "Cancelling"
    COMPLETED = "Completed"
    COMPLETED_WITH_WARNINGS = "CompletedWithWarnings"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def is_final(self) -> bool:
        """True once the job will never change again."""
        return self in FINAL_STATUSES

    @property
    def is_running(self) -> bool:
        """True while an attempt runs: ``InProgress``, or ``Cancelling`` until it has stopped.

        A running job keeps its item's lease and its place in the in-progress set, so that
        the reaper finds it if its worker dies.
        """
        return self in (JobStatus.IN_PROGRESS, JobStatus.CANCELLING)


FINAL_STATUSES = frozenset(
    {JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_WARNINGS, JobStatus.FAILED, JobStatus.CANCELLED}
)


class Consistency(ParsedEnum):
    """How consistent a recovery point is (the seed's "Consistency of recovery points")."""

    APPLICATION = "ApplicationConsistent"
    FILE_SYSTEM = "FileSystemConsistent"
    CRASH = "CrashConsistent"


class RegistrationState(StrEnum):
    """Registration of one VM with the vault."""

    NOT_REGISTERED = "NotRegistered"
    REGISTERING = "Registering"
    REGISTERED = "Registered"


class PowerState(StrEnum):
    """Power state of a VM as the provider reports it."""

    RUNNING = "Running"
    STOPPED = "Stopped"


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def to_iso(value: datetime | None) -> str | None:
    """ISO 8601 text for a timestamp, or None."""
    return value.isoformat() if value else None


def from_iso(value: str | None) -> datetime | None:
    """A timestamp from ISO 8601 text, or None."""
    return datetime.fromisoformat(value) if value else None


# A VM agent the provider knows is configured but whose version it could not read yet (the
# libvirt provider's guest agent channel before the agent answered): registration then waits
# for the agent itself, up to the install timeout.
AGENT_VERSION_UNKNOWN = "unknown"


@dataclass(frozen=True)
class Disk:
    """One disk of a VM: the OS disk or a data disk."""

    name: str
    size_bytes: int
    path: str = ""


@dataclass(frozen=True)
class VM:
    """A VM as the provider describes it, plus the vault's view of it (registration)."""

    name: str
    cloud_service: str
    region: str
    power_state: PowerState = PowerState.RUNNING
    os_type: str = "Linux"
    agent_version: str | None = None
    nics: int = 1
    load_balancer: bool = False
    storage_tier: str = "Standard"
    os_disk: Disk = field(default_factory=lambda: Disk("os", 0))
    data_disks: tuple[Disk, ...] = ()
    extension_installed: bool = False
    registration: RegistrationState = RegistrationState.NOT_REGISTERED
    deleted: bool = False
    last_job_id: str | None = None
    last_error: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        """``cloud_service/name``: unique within a fleet."""
        return f"{self.cloud_service}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON record."""
        return {
            "version": RECORD_VERSION,
            "id": self.id,
            "name": self.name,
            "cloud_service": self.cloud_service,
            "region": self.region,
            "power_state": self.power_state.value,
            "os_type": self.os_type,
            "agent_version": self.agent_version,
            "nics": self.nics,
            "load_balancer": self.load_balancer,
            "storage_tier": self.storage_tier,
            "os_disk": _disk_dict(self.os_disk),
            "data_disks": [_disk_dict(d) for d in self.data_disks],
            "extension_installed": self.extension_installed,
            "registration": self.registration.value,
            "deleted": self.deleted,
            "last_job_id": self.last_job_id,
            "last_error": self.last_error,
        }

    def properties_dict(self) -> dict[str, Any]:
        """What discovery owns: the provider's view (and whether the VM is gone)."""
        data = self.to_dict()
        for name in VM_STATE_FIELDS:
            del data[name]
        return data

    def state_dict(self) -> dict[str, Any]:
        """What jobs on the VM own: registration, last job, last error."""
        data = self.to_dict()
        return {"version": RECORD_VERSION, **{name: data[name] for name in VM_STATE_FIELDS}}

    @classmethod
    def from_records(cls, properties: dict[str, Any], state: dict[str, Any] | None) -> VM:
        """Join the two records; a VM no job has touched yet is NotRegistered."""
        default = {
            "registration": RegistrationState.NOT_REGISTERED.value,
            "last_job_id": None,
            "last_error": None,
        }
        return cls.from_dict({**properties, **default, **(state or {})})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VM:
        """Rebuild from ``to_dict``."""
        return cls(
            name=data["name"],
            cloud_service=data["cloud_service"],
            region=data["region"],
            power_state=PowerState(data["power_state"]),
            os_type=data["os_type"],
            agent_version=data["agent_version"],
            nics=data["nics"],
            load_balancer=data["load_balancer"],
            storage_tier=data["storage_tier"],
            os_disk=Disk(**data["os_disk"]),
            data_disks=tuple(Disk(**d) for d in data["data_disks"]),
            extension_installed=data["extension_installed"],
            registration=RegistrationState(data["registration"]),
            deleted=data["deleted"],
            last_job_id=data["last_job_id"],
            last_error=data["last_error"],
        )


VM_STATE_FIELDS = ("registration", "last_job_id", "last_error")


def _disk_dict(disk: Disk) -> dict[str, Any]:
    return {"name": disk.name, "size_bytes": disk.size_bytes, "path": disk.path}


@dataclass(frozen=True)
class VaultConfig:
    """A vault: its name, region, where its provider finds the fleet, where its data lives."""

    name: str
    region: str
    provider: str
    fleet_dir: str
    # Where the recovery points are stored; "" in records written before backups existed
    # (a worker then uses its own BACKUP_JOBS_VAULT_DIR).
    vault_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON record."""
        return {"version": RECORD_VERSION, **self.__dict__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VaultConfig:
        """Rebuild from ``to_dict``."""
        return cls(
            data["name"],
            data["region"],
            data["provider"],
            data["fleet_dir"],
            str(data.get("vault_dir", "")),
        )


@dataclass(frozen=True)
class Attempt:
    """One attempt of a job: when it ran, on which Celery task, how it ended."""

    number: int
    started_at: datetime
    celery_task_id: str = ""
    ended_at: datetime | None = None
    status: JobStatus = JobStatus.IN_PROGRESS
    error: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON record."""
        return {
            "number": self.number,
            "started_at": to_iso(self.started_at),
            "celery_task_id": self.celery_task_id,
            "ended_at": to_iso(self.ended_at),
            "status": self.status.value,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Attempt:
        """Rebuild from ``to_dict``."""
        started = from_iso(data["started_at"])
        assert started is not None
        return cls(
            number=data["number"],
            started_at=started,
            celery_task_id=data["celery_task_id"],
            ended_at=from_iso(data["ended_at"]),
            status=JobStatus(data["status"]),
            error=data["error"],
        )


@dataclass(frozen=True)
class SubTask:
    """A step of a job with its own status, times and progress (DESIGN §1, "sub-task")."""

    name: str
    status: JobStatus = JobStatus.QUEUED
    started_at: datetime | None = None
    ended_at: datetime | None = None
    bytes_done: int = 0
    bytes_total: int = 0
    throughput_bytes_per_second: float | None = None

    @property
    def progress_percent(self) -> float | None:
        """How far it got, by bytes; None for a step that does not count bytes."""
        if self.bytes_total:
            return round(100.0 * self.bytes_done / self.bytes_total, 1)
        return 100.0 if self.status == JobStatus.COMPLETED else None

    @property
    def duration_seconds(self) -> float | None:
        """Seconds from start to end, once ended."""
        if self.started_at is None or self.ended_at is None:
            return None
        return round((self.ended_at - self.started_at).total_seconds(), 3)

    def to_dict(self) -> dict[str, Any]:
        """The JSON record."""
        return {
            "name": self.name,
            "status": self.status.value,
            "started_at": to_iso(self.started_at),
            "ended_at": to_iso(self.ended_at),
            "duration_seconds": self.duration_seconds,
            "progress_percent": self.progress_percent,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "throughput_bytes_per_second": self.throughput_bytes_per_second,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubTask:
        """Rebuild from ``to_dict``."""
        return cls(
            name=data["name"],
            status=JobStatus(data["status"]),
            started_at=from_iso(data["started_at"]),
            ended_at=from_iso(data["ended_at"]),
            bytes_done=data["bytes_done"],
            bytes_total=data["bytes_total"],
            throughput_bytes_per_second=data["throughput_bytes_per_second"],
        )


@dataclass(frozen=True)
class Job:
    """One operation on one item: the source of truth for its status (DESIGN §3)."""

    id: str
    vault: str
    operation: Operation
    item: str
    item_name: str
    queued_at: datetime
    max_attempts: int
    status: JobStatus = JobStatus.QUEUED
    started_at: datetime | None = None
    ended_at: datetime | None = None
    attempt: int = 0
    next_retry_at: datetime | None = None
    error: dict[str, Any] | None = None
    warnings: tuple[str, ...] = ()
    properties: dict[str, Any] = field(default_factory=dict)
    attempts: tuple[Attempt, ...] = ()
    fencing_token: int = 0
    # When the message of the next attempt was last handed to the queue (first send, retry).
    dispatched_at: datetime | None = None
    subtasks: tuple[SubTask, ...] = ()

    @property
    def duration_seconds(self) -> float | None:
        """Seconds from the first start to the end, once ended."""
        if self.started_at is None or self.ended_at is None:
            return None
        return round((self.ended_at - self.started_at).total_seconds(), 3)

    @property
    def celery_task_ids(self) -> list[str]:
        """One Celery task id per attempt, to find the attempts in Flower."""
        return [a.celery_task_id for a in self.attempts]

    def evolve(self, **changes: Any) -> Job:
        """A copy with ``changes`` applied."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (readable with ``redis-cli GET``)."""
        return {
            "version": RECORD_VERSION,
            "id": self.id,
            "vault": self.vault,
            "operation": self.operation.value,
            "item": self.item,
            "item_name": self.item_name,
            "status": self.status.value,
            "queued_at": to_iso(self.queued_at),
            "started_at": to_iso(self.started_at),
            "ended_at": to_iso(self.ended_at),
            "duration_seconds": self.duration_seconds,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "next_retry_at": to_iso(self.next_retry_at),
            "error": self.error,
            "warnings": list(self.warnings),
            "properties": self.properties,
            "attempts": [a.to_dict() for a in self.attempts],
            "celery_task_ids": self.celery_task_ids,
            "fencing_token": self.fencing_token,
            "dispatched_at": to_iso(self.dispatched_at),
            "subtasks": [subtask.to_dict() for subtask in self.subtasks],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        """Rebuild from ``to_dict``."""
        queued = from_iso(data["queued_at"])
        assert queued is not None
        return cls(
            id=data["id"],
            vault=data["vault"],
            operation=Operation(data["operation"]),
            item=data["item"],
            item_name=data["item_name"],
            queued_at=queued,
            max_attempts=data["max_attempts"],
            status=JobStatus(data["status"]),
            started_at=from_iso(data["started_at"]),
            ended_at=from_iso(data["ended_at"]),
            attempt=data["attempt"],
            next_retry_at=from_iso(data["next_retry_at"]),
            error=data["error"],
            warnings=tuple(data["warnings"]),
            properties=data["properties"],
            attempts=tuple(Attempt.from_dict(a) for a in data["attempts"]),
            fencing_token=data["fencing_token"],
            dispatched_at=from_iso(data.get("dispatched_at")),
            subtasks=tuple(SubTask.from_dict(st) for st in data.get("subtasks", [])),
        )


@dataclass(frozen=True)
class Problem:
    """A record that could not be read, and what skipped it; isolated so the rest goes on."""

    key: str
    reason: str
    seen_by: str = ""
    seen_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON record."""
        return {
            "version": RECORD_VERSION,
            "key": self.key,
            "reason": self.reason,
            "seen_by": self.seen_by,
            "seen_at": to_iso(self.seen_at),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Problem:
        """Rebuild from ``to_dict``."""
        return cls(
            str(data["key"]),
            str(data["reason"]),
            str(data.get("seen_by", "")),
            from_iso(data.get("seen_at")),
        )


class Listing(list[T], Generic[T]):
    """A list of records plus the records that could not be read (``problems``)."""

    def __init__(self, items: list[T] | None = None, problems: list[Problem] | None = None) -> None:
        super().__init__(items or [])
        self.problems: list[Problem] = list(problems or [])


class JobPage(Listing[Job]):
    """One page of jobs, newest first, with the cursor of the page after it.

    ``next_cursor`` is an opaque token (``Client.jobs(cursor=...)``, ``job list --cursor``);
    None when nothing more can match. A page may be shorter than asked (a scan is bounded),
    and the page after a full one may be empty.
    """

    def __init__(
        self,
        items: list[Job] | None = None,
        problems: list[Problem] | None = None,
        next_cursor: str | None = None,
    ) -> None:
        super().__init__(items, problems)
        self.next_cursor = next_cursor
