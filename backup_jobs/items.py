"""Protected items: the vault's protection state of a VM, a type of its own (DESIGN §10).

What the provider says about a VM (``models.VM``) and what the vault knows of protecting it
are different records with different writers: a protected item is written only by the jobs
on its VM (ConfigureProtection, Backup), under the VM's fencing token. Its next scheduled run
lives in the schedule (a sorted set the dispatch tick reads), and runs that were skipped or
missed in a small history of their own, so that the tick never writes the item.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from backup_jobs.models import RECORD_VERSION, JobStatus, ParsedEnum, from_iso, to_iso

if TYPE_CHECKING:  # attention judges items: it imports this module
    from backup_jobs.attention import Attention


class ProtectionState(ParsedEnum):
    """Where protection of a VM stands (DESIGN §3)."""

    CONFIGURING = "ConfiguringProtection"
    PENDING = "ProtectedPendingInitialBackup"
    PROTECTED = "Protected"
    ERROR = "ProtectionError"
    STOPPED = "ProtectionStopped"

    @property
    def shown(self) -> str:
        """How the seed's portal shows it."""
        return SHOWN.get(self, self.value)

    @classmethod
    def _missing_(cls, value: object) -> ProtectionState | None:
        """Also the way it is shown (``Protection stopped``), in any case."""
        found = super()._missing_(value)
        if found is None:
            wanted = str(value).strip().lower()
            found = next((s for s, text in SHOWN.items() if text.lower() == wanted), None)
        return found

    @property
    def scheduled(self) -> bool:
        """True if beat runs this item's policy."""
        return self in (ProtectionState.PENDING, ProtectionState.PROTECTED, ProtectionState.ERROR)


SHOWN = {
    ProtectionState.PENDING: "Protected (pending initial backup)",
    ProtectionState.CONFIGURING: "Configuring protection",
    ProtectionState.ERROR: "Protected (last backup failed)",
    ProtectionState.STOPPED: "Protection stopped",
}


@dataclass(frozen=True)
class LastBackup:
    """How the newest backup of an item ended."""

    job_id: str
    at: datetime
    status: JobStatus
    consistency: str | None = None
    recovery_point_id: str | None = None
    error_code: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "job_id": self.job_id,
            "at": to_iso(self.at),
            "status": self.status.value,
            "consistency": self.consistency,
            "recovery_point_id": self.recovery_point_id,
            "error_code": self.error_code,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LastBackup:
        """Rebuild from ``to_dict``."""
        at = from_iso(data["at"])
        assert at is not None
        return cls(
            data["job_id"],
            at,
            JobStatus(data["status"]),
            data.get("consistency"),
            data.get("recovery_point_id"),
            data.get("error_code"),
        )


@dataclass(frozen=True)
class ProtectedItem:
    """A VM under a policy: its protection state, last backup and recovery point count."""

    vault: str
    vm_id: str
    policy: str
    state: ProtectionState
    protected_at: datetime | None = None
    last_backup: LastBackup | None = None
    recovery_points: int = 0
    last_job_id: str | None = None
    last_error: dict[str, Any] | None = None

    @property
    def health(self) -> str:
        """``Healthy``, or ``ActionNeeded`` with the error's code when the last job failed."""
        if self.state == ProtectionState.ERROR or (
            self.last_error and not self.last_error.get("retryable", False)
        ):
            code = (self.last_error or {}).get("code", "BackupFailed")
            return f"ActionNeeded ({code})"
        if self.last_error:
            return f"Warning ({self.last_error.get('code')}: retrying)"
        return "Healthy"

    def evolve(self, **changes: Any) -> ProtectedItem:
        """A copy with ``changes`` applied."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The JSON record."""
        return {
            "version": RECORD_VERSION,
            "vault": self.vault,
            "vm_id": self.vm_id,
            "policy": self.policy,
            "state": self.state.value,
            "protected_at": to_iso(self.protected_at),
            "last_backup": self.last_backup.to_dict() if self.last_backup else None,
            "recovery_points": self.recovery_points,
            "last_job_id": self.last_job_id,
            "last_error": self.last_error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProtectedItem:
        """Rebuild from ``to_dict``."""
        last = data.get("last_backup")
        return cls(
            vault=data["vault"],
            vm_id=data["vm_id"],
            policy=data["policy"],
            state=ProtectionState(data["state"]),
            protected_at=from_iso(data.get("protected_at")),
            last_backup=LastBackup.from_dict(last) if last else None,
            recovery_points=int(data.get("recovery_points", 0)),
            last_job_id=data.get("last_job_id"),
            last_error=data.get("last_error"),
        )


class RunOutcome(ParsedEnum):
    """What became of a scheduled run that did not start a backup."""

    SKIPPED = "Skipped"
    MISSED = "Missed"


@dataclass(frozen=True)
class ScheduleEvent:
    """A scheduled run that started no backup: skipped (one still ran) or missed (too late)."""

    scheduled_at: datetime
    outcome: RunOutcome
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (deterministic: two ticks recording one event write it once)."""
        return {
            "scheduled_at": to_iso(self.scheduled_at),
            "outcome": self.outcome.value,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScheduleEvent:
        """Rebuild from ``to_dict``."""
        at = from_iso(data["scheduled_at"])
        assert at is not None
        return cls(at, RunOutcome(data["outcome"]), data["reason"])


class VerifyState(ParsedEnum):
    """What the latest Verify job found of a recovery point."""

    UNVERIFIED = "Unverified"
    VERIFIED = "Verified"
    BROKEN = "Broken"


@dataclass(frozen=True)
class RecoveryPointRecord:
    """The catalog's mirror of a recovery point (its manifest in the vault is the truth).

    ``verify_state`` is a ``VerifyState`` value: ``Unverified`` until a Verify job reads the
    point (records written before verify existed read so too), then ``Verified`` with the
    time, or ``Broken`` with the reason (a chunk or index that failed its checks).
    """

    id: str
    vm_id: str
    created_at: datetime
    consistency: str
    size_bytes: int
    new_bytes: int
    job_id: str = ""
    policy: str = ""
    verify_state: str = VerifyState.UNVERIFIED.value
    verified_at: datetime | None = None
    broken_reason: str | None = None

    @property
    def good(self) -> bool:
        """False once verify found it broken: retention never counts it as the newest good."""
        return self.verify_state != VerifyState.BROKEN

    def evolve(self, **changes: Any) -> RecoveryPointRecord:
        """A copy with ``changes`` applied."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The JSON record."""
        return {
            "version": RECORD_VERSION,
            "id": self.id,
            "vm_id": self.vm_id,
            "created_at": to_iso(self.created_at),
            "consistency": self.consistency,
            "size_bytes": self.size_bytes,
            "new_bytes": self.new_bytes,
            "job_id": self.job_id,
            "policy": self.policy,
            "verify_state": self.verify_state,
            "verified_at": to_iso(self.verified_at),
            "broken_reason": self.broken_reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecoveryPointRecord:
        """Rebuild from ``to_dict``."""
        created = from_iso(data["created_at"])
        assert created is not None
        return cls(
            data["id"],
            data["vm_id"],
            created,
            data["consistency"],
            data["size_bytes"],
            data["new_bytes"],
            data.get("job_id", ""),
            data.get("policy", ""),
            VerifyState(data.get("verify_state") or VerifyState.UNVERIFIED).value,
            from_iso(data.get("verified_at")),
            data.get("broken_reason"),
        )


@dataclass(frozen=True)
class ItemView:
    """A protected item joined, for display only, with its schedule, skipped runs and what
    needs action about it."""

    item: ProtectedItem
    next_run_at: datetime | None
    events: list[ScheduleEvent]
    needs_action: tuple[Attention, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON a listing prints."""
        return {
            **self.item.to_dict(),
            "state_shown": self.item.state.shown,
            "health": self.item.health,
            "next_run_at": to_iso(self.next_run_at),
            "skipped_or_missed": [event.to_dict() for event in self.events],
            "needs_action": [reason.value for reason in self.needs_action],
        }
