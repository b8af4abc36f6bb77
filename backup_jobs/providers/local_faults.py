"""Fault injection for the local fleet: persistent in ``<fleet>/faults.json``, consumed as it fires.

Several worker processes may consume faults at once; an ``flock`` on a side file serialises
read-modify-write of the JSON file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from backup_jobs.errors import ConfigurationError
from backup_jobs.provider import ProviderStorageError

FAULT_KINDS = (
    "discovery-internal-error",
    "discovery-slow",
    "install-agent-timeout",
    "install-slow",
    "snapshot-timeout",
    "transfer-timeout",
    "backup-internal-error",
    "freeze-failure",
)
FAULTS_FILE = "faults.json"
# Faults that fire on the whole fleet, never on one VM.
FLEET_WIDE_KINDS = frozenset({"discovery-internal-error", "discovery-slow"})
# Bounds of a fault's delay and count: a day, a million times (or forever).
MAX_FAULT_SECONDS = 86_400.0
MAX_FAULT_TIMES = 1_000_000


@dataclass(frozen=True)
class Fault:
    """One armed fault: its kind, the VM it targets (None: any), how often it fires, delay."""

    kind: str
    vm: str | None = None
    times: int | None = 1
    seconds: float = 0.0

    def matches(self, kind: str, vm_id: str | None) -> bool:
        """True if this fault fires for ``kind`` on ``vm_id``."""
        if self.kind != kind:
            return False
        if self.vm is None or vm_id is None:
            return True
        return self.vm in (vm_id, vm_id.split("/", 1)[-1])


def check_fault(fault: Fault) -> None:
    """Raise ``ConfigurationError`` naming what is wrong with a fault, before it is armed."""
    problem, action = None, "Arm the fault again with a value in range."
    if fault.kind not in FAULT_KINDS:
        problem = f"unknown fault kind {fault.kind!r}; accepted: {', '.join(FAULT_KINDS)}"
        action = "Arm one of the accepted kinds."
    elif fault.vm is not None and fault.kind in FLEET_WIDE_KINDS:
        problem = f"{fault.kind} fires on the whole fleet's listing, not on one VM"
        action = "Arm it again without --vm."
    elif not 0.0 <= fault.seconds <= MAX_FAULT_SECONDS:  # NaN fails both comparisons
        problem = f"fault seconds {fault.seconds!r} is outside 0 to {MAX_FAULT_SECONDS:g}"
    elif fault.times is not None and not 1 <= fault.times <= MAX_FAULT_TIMES:
        problem = f"fault times {fault.times!r} is outside 1 to {MAX_FAULT_TIMES} (or forever)"
    if problem is not None:
        raise ConfigurationError(detail=problem, action=action)


class FaultStore:
    """The armed faults of one fleet directory."""

    def __init__(self, fleet_dir: Path) -> None:
        self._path = fleet_dir / FAULTS_FILE
        self._lock_path = fleet_dir / ".faults.lock"

    def add(self, fault: Fault) -> None:
        """Arm a fault."""
        check_fault(fault)
        with self._locked() as faults:
            faults.append(fault)

    def armed(self) -> list[Fault]:
        """The armed faults."""
        with self._locked() as faults:
            return list(faults)

    def clear(self) -> int:
        """Disarm every fault; returns how many there were."""
        with self._locked() as faults:
            count = len(faults)
            faults.clear()
            return count

    def consume(self, kind: str, vm_id: str | None = None) -> Fault | None:
        """Fire the first fault matching ``kind`` and ``vm_id``, counting it down."""
        if not self._path.exists():
            return None
        with self._locked() as faults:
            for index, fault in enumerate(faults):
                if fault.matches(kind, vm_id):
                    if fault.times is not None:
                        if fault.times <= 1:
                            del faults[index]
                        else:
                            faults[index] = Fault(
                                fault.kind, fault.vm, fault.times - 1, fault.seconds
                            )
                    return fault
        return None

    @contextmanager
    def _locked(self) -> Iterator[list[Fault]]:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock_file() as lock:
            if lock is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            faults = self._read()
            before = list(faults)
            yield faults
            if faults != before:
                self._write(faults)

    @contextmanager
    def _lock_file(self) -> Iterator[TextIO | None]:
        """The side file to lock; on a read-only fleet, opened for reading (or none at all).

        A read-only fleet can still be listed: only consuming a fault writes.
        """
        lock: TextIO | None = None
        for mode in ("a", "r"):
            try:
                lock = open(self._lock_path, mode)  # noqa: SIM115 - closed below
                break
            except OSError as exc:
                if not _read_only(exc):
                    raise
        try:
            yield lock
        finally:
            if lock is not None:
                lock.close()

    def _read(self) -> list[Fault]:
        if not self._path.exists():
            return []
        try:
            data: dict[str, Any] = json.loads(self._path.read_text())
            return [Fault(**f) for f in data["faults"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(detail=f"{self._path} is malformed: {exc}") from exc

    def _write(self, faults: list[Fault]) -> None:
        tmp = self._path.with_suffix(".tmp")
        record = json.dumps({"version": 1, "faults": [asdict(f) for f in faults]}, indent=2)
        try:
            tmp.write_text(record)
            os.replace(tmp, self._path)
        except OSError as exc:
            raise ProviderStorageError(f"{exc.filename or self._path}: {exc.strerror}") from exc


def _read_only(exc: OSError) -> bool:
    """True for the errors of a file system or directory we may not write to."""
    return exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT)
