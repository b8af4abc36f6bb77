"""The memory catalog's protection records, with the Redis catalog's semantics (a mixin)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from backup_jobs import wire
from backup_jobs.catalog import DueRun, Fence
from backup_jobs.catalogs.records import collect, decode_record, dump
from backup_jobs.errors import LeaseLost
from backup_jobs.items import ProtectedItem, ProtectionState, RecoveryPointRecord, ScheduleEvent
from backup_jobs.models import Listing
from backup_jobs.policies import Policy

T = TypeVar("T")
EVENTS_KEPT = 20


class MemoryProtection:
    """Protection records in dictionaries (mixed into ``MemoryCatalog``)."""

    _mutex: threading.RLock
    records: dict[str, str]

    def _fence_ok(self, fence: Fence | None) -> bool:
        raise NotImplementedError  # provided by MemoryCatalog

    def _sets(self) -> dict[str, set[str]]:
        return self.__dict__.setdefault("_protection_sets", {})  # type: ignore[no-any-return]

    def _zsets(self) -> dict[str, dict[str, float]]:
        return self.__dict__.setdefault("_protection_zsets", {})  # type: ignore[no-any-return]

    def put_policy(self, vault: str, policy: Policy, *, replace: bool = False) -> bool:
        """Store a policy; False if it exists and ``replace`` is not set."""
        key = wire.policy_key(vault, policy.name)
        with self._mutex:
            if key in self.records and not replace:
                return False
            self.records[key] = dump(policy.to_dict())
            self._sets().setdefault(wire.policy_index_key(vault), set()).add(policy.name)
            return True

    def get_policy(self, vault: str, name: str) -> Policy | None:
        """One policy, or None."""
        return self._get(wire.policy_key(vault, name), Policy.from_dict)

    def list_policies(self, vault: str) -> Listing[Policy]:
        """Every readable policy of a vault, by name."""
        names = sorted(self._sets().get(wire.policy_index_key(vault), set()))
        return self._records([wire.policy_key(vault, n) for n in names], Policy.from_dict)

    def delete_policy(self, vault: str, name: str) -> list[str] | None:
        """Delete a policy unless an item uses it."""
        with self._mutex:
            used = sorted(self._sets().get(wire.policy_items_key(vault, name), set()))
            if used:
                return used
            self.records.pop(wire.policy_key(vault, name), None)
            self._sets().get(wire.policy_index_key(vault), set()).discard(name)
            return None

    def policy_items(self, vault: str, name: str) -> list[str]:
        """The VM ids a policy protects now."""
        with self._mutex:
            return sorted(self._sets().get(wire.policy_items_key(vault, name), set()))

    def get_item(self, vault: str, vm_id: str) -> ProtectedItem | None:
        """A protected item, or None."""
        return self._get(wire.item_key(vault, vm_id), ProtectedItem.from_dict)

    def list_items(self, vault: str) -> Listing[ProtectedItem]:
        """Every readable protected item of a vault, by VM id."""
        ids = sorted(self._sets().get(wire.item_index_key(vault), set()))
        return self._records([wire.item_key(vault, i) for i in ids], ProtectedItem.from_dict)

    def count_items(self, vault: str) -> int:
        """How many protected items a vault has."""
        with self._mutex:
            return len(self._sets().get(wire.item_index_key(vault), set()))

    def put_item(
        self,
        item: ProtectedItem,
        fence: Fence | None = None,
        schedule_at: datetime | None = None,
    ) -> None:
        """Replace an item, its policy membership and its schedule entry, atomically."""
        key = wire.item_key(item.vault, item.vm_id)
        member = wire.schedule_member(item.vault, item.vm_id)
        with self._mutex:
            if not self._fence_ok(fence):
                raise LeaseLost(item.vm_id)
            old = self._get(key, lambda d: str(d.get("policy", "")), quiet=True)
            count = len(self._zsets().get(wire.recovery_points_key(item.vault, item.vm_id), {}))
            self.records[key] = dump(item.evolve(recovery_points=count).to_dict())
            sets = self._sets()
            sets.setdefault(wire.item_index_key(item.vault), set()).add(item.vm_id)
            if old and old != item.policy:
                sets.get(wire.policy_items_key(item.vault, old), set()).discard(item.vm_id)
            members = sets.setdefault(wire.policy_items_key(item.vault, item.policy), set())
            if item.state.scheduled or item.state == ProtectionState.CONFIGURING:
                members.add(item.vm_id)
            else:
                members.discard(item.vm_id)
            schedule = self._zsets().setdefault(wire.SCHEDULE_KEY, {})
            if not item.state.scheduled:
                schedule.pop(member, None)
            elif schedule_at is not None:
                schedule[member] = schedule_at.timestamp()

    def remove_item(self, vault: str, vm_id: str, fence: Fence | None = None) -> None:
        """Remove an item with its schedule entry, policy membership, runs and active backup."""
        key = wire.item_key(vault, vm_id)
        with self._mutex:
            if not self._fence_ok(fence):
                raise LeaseLost(vm_id)
            policy = self._get(key, lambda d: str(d.get("policy", "")), quiet=True)
            self.records.pop(key, None)
            self.records.pop(wire.active_backup_key(vault, vm_id), None)
            sets, zsets = self._sets(), self._zsets()
            sets.get(wire.item_index_key(vault), set()).discard(vm_id)
            sets.get(wire.policy_items_key(vault, policy or ""), set()).discard(vm_id)
            zsets.get(wire.SCHEDULE_KEY, {}).pop(wire.schedule_member(vault, vm_id), None)
            zsets.pop(wire.item_events_key(vault, vm_id), None)

    def next_run(self, vault: str, vm_id: str) -> datetime | None:
        """When an item's next run is."""
        with self._mutex:
            score = self._zsets().get(wire.SCHEDULE_KEY, {}).get(wire.schedule_member(vault, vm_id))
        return datetime.fromtimestamp(score, UTC) if score is not None else None

    def schedule(self, vault: str, vm_id: str, at: datetime) -> None:
        """Set an item's next run."""
        with self._mutex:
            self._zsets().setdefault(wire.SCHEDULE_KEY, {})[wire.schedule_member(vault, vm_id)] = (
                at.timestamp()
            )

    def unschedule(self, vault: str, vm_id: str) -> None:
        """Take an item out of the schedule."""
        with self._mutex:
            self._zsets().get(wire.SCHEDULE_KEY, {}).pop(wire.schedule_member(vault, vm_id), None)

    def move_run(self, vault: str, vm_id: str, was: datetime, to: datetime | None) -> bool:
        """Move an item's next run from ``was`` to ``to`` if it is still at ``was``."""
        with self._mutex:
            schedule = self._zsets().setdefault(wire.SCHEDULE_KEY, {})
            member = wire.schedule_member(vault, vm_id)
            if schedule.get(member) != was.timestamp():
                return False
            if to is None:
                del schedule[member]
            else:
                schedule[member] = to.timestamp()
            return True

    def due_runs(self, now: datetime, limit: int = 500) -> list[DueRun]:
        """Items whose next run is due, earliest first."""
        with self._mutex:
            schedule = self._zsets().get(wire.SCHEDULE_KEY, {})
            due = sorted((t, m) for m, t in schedule.items() if t <= now.timestamp())[:limit]
        runs = []
        for score, member in due:
            vault, _, vm_id = member.partition("|")
            runs.append(DueRun(vault, vm_id, datetime.fromtimestamp(score, UTC)))
        return runs

    def record_event(self, vault: str, vm_id: str, event: ScheduleEvent) -> None:
        """Remember a skipped or missed run (newest few kept; the same event once)."""
        with self._mutex:
            events = self._zsets().setdefault(wire.item_events_key(vault, vm_id), {})
            events[dump(event.to_dict())] = event.scheduled_at.timestamp()
            for old in sorted(events, key=events.__getitem__)[:-EVENTS_KEPT]:
                del events[old]

    def events(self, vault: str, vm_id: str) -> list[ScheduleEvent]:
        """An item's remembered skipped and missed runs, newest first."""
        with self._mutex:
            events = dict(self._zsets().get(wire.item_events_key(vault, vm_id), {}))
        found: Listing[ScheduleEvent] = Listing()
        for raw in sorted(events, key=events.__getitem__, reverse=True):
            collect(found, "events", raw, ScheduleEvent.from_dict, "item events")
        return list(found)

    def set_active_backup(self, vault: str, vm_id: str, job_id: str) -> None:
        """Remember the newest Backup job started for an item."""
        with self._mutex:
            self.records[wire.active_backup_key(vault, vm_id)] = job_id

    def active_backup(self, vault: str, vm_id: str) -> str | None:
        """The newest Backup job started for an item."""
        return self.records.get(wire.active_backup_key(vault, vm_id))

    def add_recovery_point(self, vault: str, point: RecoveryPointRecord) -> None:
        """Mirror a committed recovery point; the item's count follows."""
        with self._mutex:
            self.records[wire.recovery_point_key(vault, point.id)] = dump(point.to_dict())
            index = self._zsets().setdefault(wire.recovery_points_key(vault, point.vm_id), {})
            index[point.id] = point.created_at.timestamp()
            self._recount(vault, point.vm_id)

    def remove_recovery_point(self, vault: str, vm_id: str, rp_id: str) -> None:
        """Forget a pruned recovery point; the item's count follows."""
        with self._mutex:
            self.records.pop(wire.recovery_point_key(vault, rp_id), None)
            self._zsets().get(wire.recovery_points_key(vault, vm_id), {}).pop(rp_id, None)
            self._recount(vault, vm_id)

    def update_recovery_point(self, vault: str, point: RecoveryPointRecord) -> bool:
        """Replace a mirrored point's record if it is still mirrored."""
        key = wire.recovery_point_key(vault, point.id)
        with self._mutex:
            if key not in self.records:
                return False
            self.records[key] = dump(point.to_dict())
            return True

    def _recount(self, vault: str, vm_id: str) -> None:
        """Set the item's recovery point count to its mirror's size (if it is readable)."""
        key = wire.item_key(vault, vm_id)
        item = self._get(key, ProtectedItem.from_dict, quiet=True)
        if item is not None:
            count = len(self._zsets().get(wire.recovery_points_key(vault, vm_id), {}))
            self.records[key] = dump(item.evolve(recovery_points=count).to_dict())

    def recovery_points(self, vault: str, vm_id: str) -> Listing[RecoveryPointRecord]:
        """A VM's mirrored recovery points, newest first."""
        with self._mutex:
            index = dict(self._zsets().get(wire.recovery_points_key(vault, vm_id), {}))
        ids = sorted(index, key=index.__getitem__, reverse=True)
        keys = [wire.recovery_point_key(vault, i) for i in ids]
        return self._records(keys, RecoveryPointRecord.from_dict)

    def _get(self, key: str, build: Callable[[dict[str, Any]], T], quiet: bool = False) -> T | None:
        raw = self.records.get(key)
        if raw is None:
            return None
        if quiet:
            found: Listing[T] = Listing()
            collect(found, key, raw, build, "")
            return found[0] if found else None
        return decode_record(key, raw, build)

    def _records(self, keys: list[str], build: Callable[[dict[str, Any]], T]) -> Listing[T]:
        found: Listing[T] = Listing()
        with self._mutex:
            raws = [(key, self.records.get(key)) for key in keys]
        for key, raw in raws:
            if raw:
                collect(found, key, raw, build, "list")
        return found
