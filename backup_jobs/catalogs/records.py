"""Reading and writing the catalog's JSON records, shared by the Redis and memory catalogs.

One place decides what an unreadable record is: anything that is not a JSON object with the
fields its type needs becomes ``CorruptRecord`` naming the key and why.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from backup_jobs import wire
from backup_jobs.errors import BackupJobsError, CorruptRecord
from backup_jobs.joblist import ended_score, listing_keys
from backup_jobs.models import VM, VM_STATE_FIELDS, Job, JobStatus, Listing, Problem

T = TypeVar("T")

_STATE_PROBE = VM("probe", "probe", "probe").properties_dict()


def dump(record: dict[str, Any]) -> str:
    """Compact, sorted JSON: what every record is stored as."""
    return json.dumps(record, separators=(",", ":"), sort_keys=True)


def decode_record(key: str, raw: str, build: Callable[[dict[str, Any]], T]) -> T:
    """Parse one JSON record; ``CorruptRecord`` naming ``key`` and why, whatever is wrong."""
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise TypeError(f"a JSON {type(data).__name__}, not an object")
        return build(data)
    except json.JSONDecodeError as exc:
        raise CorruptRecord(key, f"not JSON ({exc.msg} at char {exc.pos})") from exc
    except KeyError as exc:
        raise CorruptRecord(key, f"field {exc} is missing") from exc
    except (ValueError, TypeError, AttributeError) as exc:
        raise CorruptRecord(key, f"a field has a wrong value ({exc})") from exc
    except BackupJobsError as exc:  # well-formed but refused by its type's checks (a policy)
        raise CorruptRecord(key, f"it does not hold a valid record: {exc.message}") from exc


def collect(
    into: Listing[T], key: str, raw: str, build: Callable[[dict[str, Any]], T], by: str
) -> None:
    """Append the decoded record to a listing, or name it in the listing's problems."""
    try:
        into.append(decode_record(key, raw, build))
    except CorruptRecord as exc:
        into.problems.append(Problem(key, exc.detail, by))


def checked_state(data: dict[str, Any]) -> dict[str, Any]:
    """A VM state record, checked by joining it to a well-formed properties record."""
    for name in VM_STATE_FIELDS:
        if name not in data:
            raise KeyError(name)
    VM.from_records(_STATE_PROBE, data)
    return data


def readable_state(raw: str) -> bool:
    """True if ``raw`` is a well-formed VM state record."""
    try:
        decode_record("", raw, checked_state)
    except CorruptRecord:
        return False
    return True


def join_vm(vault: str, vm_id: str, properties: str, state: str | None) -> VM:
    """Join a VM's two records; ``CorruptRecord`` names whichever cannot be read."""
    state_data = (
        decode_record(wire.vm_state_key(vault, vm_id), state, checked_state) if state else None
    )
    return decode_record(
        wire.vm_key(vault, vm_id), properties, lambda data: VM.from_records(data, state_data)
    )


def vms_listing(vault: str, records: list[tuple[str, str | None, str | None]]) -> Listing[VM]:
    """VMs from ``(id, properties, state)`` raw records; unreadable ones become problems."""
    found: Listing[VM] = Listing()
    for vm_id, properties, state in records:
        if not properties:
            continue
        try:
            found.append(join_vm(vault, vm_id, properties, state))
        except CorruptRecord as exc:
            found.problems.append(Problem(exc.item, exc.detail, "list VMs"))
    return found


def index_entries(job: Job, now: datetime) -> list[tuple[str, float | None]]:
    """The ticks' indexes a job's status puts it in, each with its score (None in a set).

    What the index repair puts back: a Queued job is due for the sweep at ``now`` (its message
    may be lost with the entry; a duplicate is harmless), a job waiting to retry is due at its
    next retry (``now`` if it has none).
    """
    if job.status.is_running:
        return [(wire.IN_PROGRESS_KEY, None)]
    if job.status == JobStatus.WAITING_TO_RETRY:
        return [(wire.RETRY_SET_KEY, (job.next_retry_at or now).timestamp())]
    if job.status == JobStatus.QUEUED:
        return [(wire.QUEUED_KEY, now.timestamp())]
    return []


def listing_entries(job: Job) -> list[tuple[str, float]]:
    """The jobs page's index entries a job implies, and its retention entry once final."""
    queued = job.queued_at.timestamp()
    entries = [(key, queued) for key in listing_keys(job)]
    ended = ended_score(job)
    if ended is not None:
        entries.append((wire.ENDED_KEY, ended))
    return entries
