"""The jobs page as users ask for it: names and times as text, checked, into a ``JobQuery``.

What a user types (``--status failed``, ``--item web01``, ``--since 24h``, a cursor) becomes
a ``joblist.JobQuery``, or a ``ConfigurationError`` naming the option and what to do
(``VMNotFoundInInventory`` for an unknown VM). The catalog does the rest in its indexes.
"""

from __future__ import annotations

from datetime import datetime

from backup_jobs import inventory, jobs, timeparse
from backup_jobs.catalog import Catalog
from backup_jobs.errors import ConfigurationError
from backup_jobs.joblist import DEFAULT_PAGE_SIZE, JobQuery, Position, decode_cursor, parse_limit
from backup_jobs.models import JobPage, JobStatus, Operation


def list_jobs(
    catalog: Catalog,
    vault: str,
    now: datetime,
    *,
    operation: Operation | str | None = None,
    status: JobStatus | str | None = None,
    item: str | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    before: datetime | str | None = None,
    limit: int | str | None = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
) -> JobPage:
    """One page of a vault's jobs, newest first (see ``Client.jobs``)."""
    low = timeparse.since(since, now, "since")
    high = timeparse.since(until, now, "until")
    if low is not None and high is not None and high < low:
        raise ConfigurationError(
            detail=f"until={high.isoformat()!r} is before since={low.isoformat()!r}, so no job "
            "can match; give the earlier time as since"
        )
    first = timeparse.since(before, now, "before")
    if low is not None and first is not None and first <= low:
        raise ConfigurationError(
            detail=f"before={first.isoformat()!r} is not after since={low.isoformat()!r}, so "
            "no job can match; give the earlier time as since"
        )
    query = JobQuery(
        status=None if status is None else JobStatus.parse(status),
        operation=None if operation is None else Operation.parse(operation),
        item=None if item is None else resolve_item(catalog, vault, item),
        since=low,
        until=high,
        after=_start(cursor, first),
        limit=None if limit is None else parse_limit(limit),
    )
    return catalog.list_jobs(vault, query)


def resolve_item(catalog: Catalog, vault: str, name: str) -> str:
    """The item a name means: the vault's own (``vault`` or its name), else a VM.

    A VM is named as everywhere (``cloud_service/name`` or a unique bare name); a VM gone from
    the fleet still has its jobs, by its full id.
    """
    if not isinstance(name, str):
        raise TypeError(f"item must be a VM name or 'vault', not {name!r}")
    if name in (jobs.VAULT_ITEM, vault):
        return jobs.VAULT_ITEM
    if "/" in name:
        found = catalog.find_vms(vault, name)
        # Known by its id, it keeps its jobs: a VM deleted from the fleet, and one whose record
        # cannot be read (a filter needs no more than the id; the listing's own reads say why).
        if len(found) == 1 or found.problems:
            return name
    return inventory.find_vm(catalog, vault, name).id


def _start(cursor: str | None, before: datetime | None) -> Position | None:
    """Where the page starts: after the cursor's position, and before ``before``."""
    positions = []
    if cursor is not None and cursor != "":
        positions.append(decode_cursor(cursor))
    if before is not None:
        # Strictly before the time: every job queued at it sorts above (its id is above "").
        positions.append(Position(before.timestamp(), ""))
    return min(positions, default=None)
