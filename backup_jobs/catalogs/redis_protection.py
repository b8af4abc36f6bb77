"""The Redis catalog's protection records: policies, protected items, schedule, recovery points.

A mixin of ``RedisCatalog`` (it uses the catalog's client and error translation). Writes that
must stay consistent with each other are one Lua script each: an item and its policy's set
and its schedule entry; a policy's deletion and the check that no item uses it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar, cast

from backup_jobs import wire
from backup_jobs.catalog import DueRun, Fence
from backup_jobs.catalogs import scripts
from backup_jobs.catalogs.records import collect, decode_record, dump
from backup_jobs.catalogs.redis_base import RedisBase
from backup_jobs.catalogs.redis_base import text as _text
from backup_jobs.errors import LeaseLost
from backup_jobs.items import ProtectedItem, RecoveryPointRecord, ScheduleEvent
from backup_jobs.models import Listing, Problem
from backup_jobs.policies import Policy

T = TypeVar("T")
# Skipped and missed runs remembered per item.
EVENTS_KEPT = 20


class RedisProtection(RedisBase):
    """Protection records in Redis (mixed into ``RedisCatalog``)."""

    # --- policies ----------------------------------------------------------------------------

    def put_policy(self, vault: str, policy: Policy, *, replace: bool = False) -> bool:
        """Store a policy; False if it exists and ``replace`` is not set."""
        key = wire.policy_key(vault, policy.name)
        record = dump(policy.to_dict())

        def write() -> bool:
            pipe = self._redis.pipeline(transaction=True)
            pipe.set(key, record, nx=not replace)
            pipe.sadd(wire.policy_index_key(vault), policy.name)
            written = pipe.execute()[0]
            return bool(written)

        return self._call(write, key)

    def get_policy(self, vault: str, name: str) -> Policy | None:
        """One policy, or None."""
        key = wire.policy_key(vault, name)
        raw = self._call(lambda: self._redis.get(key), key)
        return decode_record(key, _text(raw), Policy.from_dict) if raw else None

    def list_policies(self, vault: str) -> Listing[Policy]:
        """Every readable policy of a vault, by name."""
        names = sorted(
            _text(n) for n in self._call(lambda: self._redis.smembers(wire.policy_index_key(vault)))
        )
        return self._records(
            [wire.policy_key(vault, n) for n in names], Policy.from_dict, "list policies"
        )

    def delete_policy(self, vault: str, name: str) -> list[str] | None:
        """Delete a policy unless an item uses it; the items using it otherwise."""
        keys = [
            wire.policy_key(vault, name),
            wire.policy_index_key(vault),
            wire.policy_items_key(vault, name),
        ]
        used = self._call(lambda: self._script(scripts.DELETE_POLICY)(keys=keys, args=[name]))
        return sorted(_text(u) for u in used) if used else None

    def policy_items(self, vault: str, name: str) -> list[str]:
        """The VM ids a policy protects now."""
        key = wire.policy_items_key(vault, name)
        return sorted(_text(m) for m in self._call(lambda: self._redis.smembers(key), key))

    # --- protected items ---------------------------------------------------------------------

    def get_item(self, vault: str, vm_id: str) -> ProtectedItem | None:
        """A protected item, or None."""
        key = wire.item_key(vault, vm_id)
        raw = self._call(lambda: self._redis.get(key), key)
        return decode_record(key, _text(raw), ProtectedItem.from_dict) if raw else None

    def list_items(self, vault: str) -> Listing[ProtectedItem]:
        """Every readable protected item of a vault, by VM id."""
        index = wire.item_index_key(vault)
        ids = sorted(_text(i) for i in self._call(lambda: self._redis.smembers(index), index))
        return self._records(
            [wire.item_key(vault, i) for i in ids], ProtectedItem.from_dict, "list protected items"
        )

    def count_items(self, vault: str) -> int:
        """How many protected items a vault has."""
        index = wire.item_index_key(vault)
        return int(self._call(lambda: self._redis.scard(index), index))

    def put_item(
        self,
        item: ProtectedItem,
        fence: Fence | None = None,
        schedule_at: datetime | None = None,
    ) -> None:
        """Replace an item, its policy membership and its schedule entry, in one script."""
        key = wire.item_key(item.vault, item.vm_id)
        old = self._call(lambda: self._redis.get(key), key)
        old_policy = _policy_of(_text(old)) if old else None
        scheduled = item.state.scheduled or item.state.value == "ConfiguringProtection"
        keys = [
            wire.fence_key(fence.vault, fence.item) if fence else key,
            key,
            wire.item_index_key(item.vault),
            wire.policy_items_key(item.vault, item.policy),
            wire.policy_items_key(item.vault, old_policy or item.policy),
            wire.SCHEDULE_KEY,
            wire.recovery_points_key(item.vault, item.vm_id),
        ]
        args = [
            str(fence.token) if fence else "",
            dump(item.to_dict()),
            item.vm_id,
            wire.schedule_member(item.vault, item.vm_id),
            "1" if scheduled else "0",
            "1" if item.state.scheduled else "0",
            repr(schedule_at.timestamp()) if schedule_at else "",
        ]
        if not self._call(lambda: self._script(scripts.PUT_ITEM)(keys=keys, args=args), key):
            raise LeaseLost(item.vm_id)

    def remove_item(self, vault: str, vm_id: str, fence: Fence | None = None) -> None:
        """Remove an item with its schedule entry, policy membership, runs and active backup."""
        key = wire.item_key(vault, vm_id)
        old = self._call(lambda: self._redis.get(key), key)
        policy = (_policy_of(_text(old)) if old else None) or ""
        keys = [
            wire.fence_key(fence.vault, fence.item) if fence else key,
            key,
            wire.item_index_key(vault),
            wire.policy_items_key(vault, policy),
            wire.SCHEDULE_KEY,
            wire.item_events_key(vault, vm_id),
            wire.active_backup_key(vault, vm_id),
        ]
        args = [str(fence.token) if fence else "", vm_id, wire.schedule_member(vault, vm_id)]
        if not self._call(lambda: self._script(scripts.REMOVE_ITEM)(keys=keys, args=args), key):
            raise LeaseLost(vm_id)

    def next_run(self, vault: str, vm_id: str) -> datetime | None:
        """When an item's next run is."""
        member = wire.schedule_member(vault, vm_id)
        score = self._call(lambda: self._redis.zscore(wire.SCHEDULE_KEY, member))
        return datetime.fromtimestamp(float(score), UTC) if score is not None else None

    def schedule(self, vault: str, vm_id: str, at: datetime) -> None:
        """Set an item's next run."""
        member = wire.schedule_member(vault, vm_id)
        self._call(lambda: self._redis.zadd(wire.SCHEDULE_KEY, {member: at.timestamp()}))

    def unschedule(self, vault: str, vm_id: str) -> None:
        """Take an item out of the schedule."""
        member = wire.schedule_member(vault, vm_id)
        self._call(lambda: self._redis.zrem(wire.SCHEDULE_KEY, member))

    def move_run(self, vault: str, vm_id: str, was: datetime, to: datetime | None) -> bool:
        """Move an item's next run from ``was`` to ``to`` if it is still at ``was``."""
        args = [wire.schedule_member(vault, vm_id), repr(was.timestamp())]
        args.append(repr(to.timestamp()) if to is not None else "")
        script = self._script(scripts.MOVE_RUN)
        moved = self._call(lambda: script(keys=[wire.SCHEDULE_KEY], args=args), wire.SCHEDULE_KEY)
        return bool(moved)

    def due_runs(self, now: datetime, limit: int = 500) -> list[DueRun]:
        """Items whose next run is due, earliest first (unparsable members dropped)."""
        due: list[tuple[Any, float]] = cast(
            list[tuple[Any, float]],
            self._call(
                lambda: self._redis.zrangebyscore(
                    wire.SCHEDULE_KEY, "-inf", now.timestamp(), start=0, num=limit, withscores=True
                ),
                wire.SCHEDULE_KEY,
            ),
        )
        runs = []
        for member, score in due:
            text = _text(member)
            vault, _, vm_id = text.partition("|")
            if not vm_id:
                self._call(partial(self._redis.zrem, wire.SCHEDULE_KEY, text))
                continue
            runs.append(DueRun(vault, vm_id, datetime.fromtimestamp(float(score), UTC)))
        return runs

    def record_event(self, vault: str, vm_id: str, event: ScheduleEvent) -> None:
        """Remember a skipped or missed run (newest few kept; the same event once)."""
        key = wire.item_events_key(vault, vm_id)
        member = dump(event.to_dict())

        def write() -> None:
            pipe = self._redis.pipeline(transaction=True)
            pipe.zadd(key, {member: event.scheduled_at.timestamp()})
            pipe.zremrangebyrank(key, 0, -EVENTS_KEPT - 1)
            pipe.execute()

        self._call(write, key)

    def events(self, vault: str, vm_id: str) -> list[ScheduleEvent]:
        """An item's remembered skipped and missed runs, newest first."""
        key = wire.item_events_key(vault, vm_id)
        raws: list[Any] = cast(
            list[Any], self._call(lambda: self._redis.zrevrange(key, 0, -1), key)
        )
        found: Listing[ScheduleEvent] = Listing()
        for raw in raws:
            collect(found, key, _text(raw), ScheduleEvent.from_dict, "item events")
        return list(found)

    def set_active_backup(self, vault: str, vm_id: str, job_id: str) -> None:
        """Remember the newest Backup job started for an item."""
        self._call(lambda: self._redis.set(wire.active_backup_key(vault, vm_id), job_id))

    def active_backup(self, vault: str, vm_id: str) -> str | None:
        """The newest Backup job started for an item."""
        key = wire.active_backup_key(vault, vm_id)
        raw = self._call(lambda: self._redis.get(key), key)
        return _text(raw) if raw else None

    # --- recovery points ---------------------------------------------------------------------

    def add_recovery_point(self, vault: str, point: RecoveryPointRecord) -> None:
        """Mirror a committed recovery point; the item's count follows."""
        self._put_point(vault, point.vm_id, point.id, dump(point.to_dict()), point.created_at)

    def remove_recovery_point(self, vault: str, vm_id: str, rp_id: str) -> None:
        """Forget a pruned recovery point; the item's count follows."""
        self._put_point(vault, vm_id, rp_id, "", None)

    def _put_point(
        self, vault: str, vm_id: str, rp_id: str, record: str, at: datetime | None
    ) -> None:
        keys = [
            wire.recovery_point_key(vault, rp_id),
            wire.recovery_points_key(vault, vm_id),
            wire.item_key(vault, vm_id),
        ]
        args = [rp_id, record, repr(at.timestamp()) if at else ""]
        replaced = self._call(
            lambda: self._script(scripts.PUT_POINT)(keys=keys, args=args), keys[0]
        )
        if replaced:
            reason = (
                f"it was a Redis {_text(replaced)}, not a zset: replaced by an empty index; the "
                "next prune mirrors the VM's recovery points from the vault again"
            )
            self.record_problem(Problem(keys[1], reason, "mirror recovery points", now()))

    def update_recovery_point(self, vault: str, point: RecoveryPointRecord) -> bool:
        """Replace a mirrored point's record if it is still mirrored (never resurrect one)."""
        key = wire.recovery_point_key(vault, point.id)
        record = dump(point.to_dict())
        return bool(self._call(lambda: self._redis.set(key, record, xx=True), key))

    def recovery_points(self, vault: str, vm_id: str) -> Listing[RecoveryPointRecord]:
        """A VM's mirrored recovery points, newest first."""
        index = wire.recovery_points_key(vault, vm_id)
        members: list[Any] = cast(
            list[Any], self._call(lambda: self._redis.zrevrange(index, 0, -1), index)
        )
        ids = [_text(i) for i in members]
        return self._records(
            [wire.recovery_point_key(vault, i) for i in ids],
            RecoveryPointRecord.from_dict,
            "list recovery points",
        )

    def _records(
        self, keys: list[str], build: Callable[[dict[str, Any]], T], by: str
    ) -> Listing[T]:
        found: Listing[T] = Listing()
        for start in range(0, len(keys), 500):
            batch = keys[start : start + 500]
            raws, wrong = self._read_records(batch, by)
            found.problems.extend(wrong.values())
            for key, raw in zip(batch, raws, strict=True):
                if raw:
                    collect(found, key, raw, build, by)
        return found


def _policy_of(raw: str) -> str | None:
    """The policy a stored item record names, if it can be read."""
    try:
        data = json.loads(raw)
        return str(data["policy"]) if isinstance(data, dict) and data.get("policy") else None
    except ValueError:
        return None


def now() -> datetime:
    """When a problem was seen."""
    return datetime.now(UTC)
