"""The catalog in Redis: JSON records, sorted-set indexes, leases with fencing tokens.

Leases are ``SET NX PX`` keys holding the job id; acquiring one also increments the item's fencing
counter, in one Lua script so nobody sees a lease without its token. Fenced writes are Lua scripts
that compare the counter and write in one step; saving a job maintains every index its status
implies in the same script. Redis errors are translated into the catalog's errors
(``catalogs.redis_errors``); a record that cannot be parsed becomes ``CorruptRecord`` naming its
key, and listings skip it into ``Listing.problems``; so does a record key of the wrong Redis type.
Job records, the jobs page and history retention are ``catalogs.redis_jobs``. Indexes are derived
data, repaired rather than trusted (``catalogs.redis_indexes``: an index key of the wrong type is
replaced, a member that is not UTF-8 removed, and a repair pass puts back what the job records
imply).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import redis

from backup_jobs import wire
from backup_jobs.catalog import Fence, LockResult
from backup_jobs.catalogs import scripts
from backup_jobs.catalogs.records import collect, decode_record, dump, readable_state, vms_listing
from backup_jobs.catalogs.redis_base import text as _text
from backup_jobs.catalogs.redis_errors import WRITE_REFUSALS, reply_code, translated
from backup_jobs.catalogs.redis_jobs import RedisJobs
from backup_jobs.catalogs.redis_protection import RedisProtection
from backup_jobs.errors import ConfigurationError, CorruptRecord, LeaseLost
from backup_jobs.models import (
    VM,
    Listing,
    Problem,
    VaultConfig,
    from_iso,
    to_iso,
)
from backup_jobs.settings import redact_url as redact

T = TypeVar("T")
# Records fetched per MGET when listing.
BATCH = 500
# VMs read per script by ``get_vms`` (two records each): a short script, but one per this many.
VM_BATCH = 200

__all__ = ["RedisCatalog", "redact"]


class RedisCatalog(RedisProtection, RedisJobs):
    """The catalog port on a Redis (or Valkey) server."""

    def __init__(self, client: redis.Redis, url: str = "redis") -> None:
        self._redis = client
        self._url = url
        self._acquire = client.register_script(scripts.ACQUIRE)
        self._renew = client.register_script(scripts.RENEW)
        self._release = client.register_script(scripts.RELEASE)
        self._fenced_set = client.register_script(scripts.FENCED_SET)
        self._repair = client.register_script(scripts.REPAIR)

    @classmethod
    def from_url(cls, url: str, ssl: Mapping[str, Any] | None = None) -> RedisCatalog:
        """Connect to ``url`` (nothing is sent until the first call); ``ssl`` holds the TLS
        options of a ``rediss://`` URL (``connection.ssl_options``)."""
        try:
            client = redis.Redis.from_url(
                url,
                **(ssl or {}),
                decode_responses=True,
                # A record that is not UTF-8 is unreadable, not a crash of the whole listing.
                encoding_errors="replace",
                socket_connect_timeout=5,
                health_check_interval=30,
            )
        except ValueError as exc:
            raise ConfigurationError(
                detail=f"BACKUP_JOBS_REDIS_URL={redact(url)} is not a Redis URL ({exc})"
            ) from exc
        return cls(client, url)

    @property
    def client(self) -> redis.Redis:
        """The underlying redis-py client."""
        return self._redis

    @property
    def url(self) -> str:
        """The server's URL (with its password: show it only through ``redact_url``)."""
        return self._url

    def ping(self) -> None:
        """Raise ``RedisUnavailable`` unless the server answers.

        A server that refuses only writes (``MISCONF`` with a full disk, ``OOM``...) refuses
        PING too, but answers reads: it counts as answering, so listings work meanwhile.
        """
        with translated(self._url):
            try:
                self._redis.ping()
            except redis.ResponseError as exc:
                if reply_code(exc) not in WRITE_REFUSALS:
                    raise

    # --- vaults and VMs ----------------------------------------------------------------------

    def put_vault(self, vault: VaultConfig) -> None:
        """Create or replace a vault's configuration (and list its name)."""

        def write() -> None:
            pipe = self._redis.pipeline(transaction=True)
            pipe.set(wire.vault_key(vault.name), dump(vault.to_dict()))
            pipe.sadd(wire.vault_index_key(), vault.name)
            pipe.execute()

        self._call(write)

    def list_vaults(self) -> list[str]:
        """The names of every recorded vault, sorted.

        Vaults recorded before the index existed are found once by a scan and indexed.
        """
        index = wire.vault_index_key()
        names = {_text(n) for n in self._call(lambda: self._redis.smembers(index), index)}
        if not names:
            prefix = wire.vault_key("")
            found = self._call(lambda: list(self._redis.scan_iter(match=prefix + "*", count=1000)))
            names = {_text(key).removeprefix(prefix) for key in found}
            if names:
                self._call(lambda: self._redis.sadd(index, *sorted(names)), index)
        return sorted(names)

    def get_vault(self, name: str) -> VaultConfig | None:
        """A vault's configuration, or None."""
        key = wire.vault_key(name)
        raw = self._call(lambda: self._redis.get(key))
        return decode_record(key, _text(raw), VaultConfig.from_dict) if raw else None

    def get_vm(self, vault: str, vm_id: str) -> VM | None:
        """One VM of a vault, or None; ``CorruptRecord`` if unreadable."""
        found = self._vms(vault, [vm_id])
        if found.problems:
            problem = found.problems[0]
            raise CorruptRecord(problem.key, problem.reason)
        return next(iter(found), None)

    def list_vms(self, vault: str) -> Listing[VM]:
        """Every readable VM of a vault, sorted by id."""
        index = wire.vm_index_key(vault)
        ids = self._members(index, "set", "list VMs", "SMEMBERS", index)
        found = self._vms(vault, sorted(ids)) if ids else Listing()
        found.problems[:0] = ids.problems
        return found

    def find_vms(self, vault: str, name: str) -> Listing[VM]:
        """The VM with id ``name`` (one round trip), or every VM with that bare name through
        the vault's name index (two)."""
        if "/" in name:
            return self._vms(vault, [name])
        key = wire.vm_name_key(vault, name)
        try:
            ids = self._members(key, "set", "find VMs", "SMEMBERS", key)
        except CorruptRecord:
            ids = Listing()  # of the wrong Redis type: rebuilt from the vault's ids
        if not ids:
            ids = self._index_name(vault, name)
        found = self._vms(vault, sorted(ids)) if ids else Listing()
        found.problems[:0] = ids.problems
        return found

    def get_vms(self, vault: str, ids: list[str]) -> Listing[VM]:
        """The VMs with these ids, in their order: one read-only script per ``VM_BATCH`` ids,
        which also tells a missing record from one of the wrong type."""
        found: Listing[VM] = Listing()
        for start in range(0, len(ids), VM_BATCH):
            chunk = self._vms(vault, ids[start : start + VM_BATCH], typed=True)
            found.extend(chunk)
            found.problems.extend(chunk.problems)
        return found

    def _index_name(self, vault: str, name: str) -> Listing[str]:
        """The ids of the vault's VMs called ``name``, written into the name index.

        For a name the index does not know: VMs recorded before the index existed, or an
        index key found damaged. Costs O(VMs of the vault), like the unknown name it usually is.
        """
        index = wire.vm_index_key(vault)
        ids = self._members(index, "set", "find VMs", "SMEMBERS", index)
        matches = Listing([i for i in ids if i.split("/", 1)[-1] == name], ids.problems)
        if matches:
            key = wire.vm_name_key(vault, name)

            def write() -> None:
                pipe = self._redis.pipeline(transaction=True)
                pipe.delete(key)
                pipe.sadd(key, *matches)
                pipe.execute()

            self._call(write, key)
        return matches

    def put_vm(self, vault: str, vm: VM) -> None:
        """Create or replace a VM's provider properties and index it by id and by name (one
        round trip)."""
        record = dump(vm.properties_dict())
        names = wire.vm_name_key(vault, vm.name)

        def write() -> tuple[bool, bool]:
            pipe = self._redis.pipeline(transaction=True)
            pipe.set(wire.vm_key(vault, vm.id), record)
            pipe.sadd(wire.vm_index_key(vault), vm.id)
            pipe.sadd(names, vm.id)
            stored, indexed, named = pipe.execute(raise_on_error=False)
            for error in (stored, indexed, named):
                if isinstance(error, Exception) and (error is stored or not _wrong_type(error)):
                    raise error
            return isinstance(indexed, Exception), isinstance(named, Exception)

        bad_index, bad_name = self._call(write)
        if bad_name:
            # The name index is derived data: one of the wrong Redis type is replaced.
            self._call(lambda: self._redis.delete(names), names)
            self._call(lambda: self._redis.sadd(names, vm.id), names)
        if bad_index:
            self._rebuild_vm_index(vault)

    def _rebuild_vm_index(self, vault: str) -> None:
        """Replace a vault's VM index of the wrong Redis type by the ids of the VM records the
        keyspace holds (a SCAN: once, for a damaged key), and name it as a problem.

        Discovery is what a ``CorruptRecord`` of that key tells the user to run: it must not
        fail on it too. The ids come from the records, so VMs the provider no longer lists
        (deleted ones, kept in the catalog) stay listed.
        """
        index = wire.vm_index_key(vault)
        prefix = wire.vm_key(vault, "")
        pattern = "".join("\\" + c if c in "[]*?\\" else c for c in prefix) + "*"

        def rebuild() -> int:
            ids = [_text(key)[len(prefix) :] for key in self._redis.scan_iter(pattern, count=1000)]
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(index)
            if ids:
                pipe.sadd(index, *ids)
            pipe.execute()
            return len(ids)

        count = self._call(rebuild, index)
        self._noted(index, f"it was not a set; rebuilt from the {count} VM records", "discovery")

    def put_vm_state(self, vault: str, vm: VM, fence: Fence | None = None) -> None:
        """Replace a VM's state, checking the fence atomically."""
        key = wire.vm_state_key(vault, vm.id)
        keys = [_fence_key(fence, key), key]
        args = [_token(fence), dump(vm.state_dict())]
        if not self._call(lambda: self._fenced_set(keys=keys, args=args)):
            raise LeaseLost(vm.id)

    def repair_vm_state(self, vault: str, vm: VM) -> bool:
        """Rewrite a VM's state record only if it cannot be read now."""
        key = wire.vm_state_key(vault, vm.id)
        # The exact bytes, undecoded: the script compares them with what is stored now.
        try:
            raw = self._call(lambda: _get_bytes(self._redis, key), key)
        except CorruptRecord:
            raw = b""  # of the wrong Redis type: the script replaces any such key
        if raw is None or (raw and readable_state(_text(raw))):
            return False
        args: list[bytes | str] = [raw, dump(vm.state_dict())]
        return bool(self._call(lambda: self._repair(keys=[key], args=args)))

    def _vms(self, vault: str, ids: list[str], *, typed: bool = False) -> Listing[VM]:
        """The VMs of ``ids`` (absent ones left out); ``typed``: read by one script however
        many (most VMs have no state record before their registration: an MGET would ask the
        type of each)."""
        keys = [wire.vm_key(vault, i) for i in ids] + [wire.vm_state_key(vault, i) for i in ids]
        read = self._read_few if typed else self._read_records
        texts, wrong = read(keys, "list VMs")
        n = len(ids)
        rows = [
            (vm_id, texts[i], texts[n + i])
            for i, vm_id in enumerate(ids)
            if keys[i] not in wrong and keys[n + i] not in wrong
        ]
        found = vms_listing(vault, rows)
        found.problems[:0] = wrong.values()
        return found

    # --- leases ------------------------------------------------------------------------------

    def acquire_lock(
        self,
        vault: str,
        item: str,
        holder: str,
        ttl_seconds: float,
        stale_holder: str | None = None,
    ) -> LockResult:
        """Take the lease without blocking (or over from ``stale_holder``); bump the token."""
        keys = [wire.lock_key(vault, item), wire.fence_key(vault, item)]
        # A fencing counter that is not an integer any more restarts from the clock in ms,
        # which is above every count issued before.
        args: list[str | int] = [
            holder,
            _ms(ttl_seconds),
            stale_holder or "",
            int(time.time() * 1000),
        ]
        ok, token, current = self._call(lambda: self._acquire(keys=keys, args=args), keys[0])
        return LockResult(bool(ok), int(token), current or None)

    def renew_lock(self, vault: str, item: str, holder: str, ttl_seconds: float) -> bool:
        """Extend the lease if ``holder`` still holds it."""
        key = wire.lock_key(vault, item)
        return bool(self._call(lambda: self._renew(keys=[key], args=[holder, _ms(ttl_seconds)])))

    def release_lock(self, vault: str, item: str, holder: str) -> None:
        """Free the lease if ``holder`` holds it."""
        key = wire.lock_key(vault, item)
        self._call(lambda: self._release(keys=[key], args=[holder]))

    def lock_holder(self, vault: str, item: str) -> str | None:
        """Who holds the lease now."""
        key = wire.lock_key(vault, item)
        holder = self._call(lambda: self._redis.get(key), key)
        return str(holder) if holder else None

    def fence_is_current(self, fence: Fence, holder: str) -> bool:
        """True if ``holder`` holds the lease and ``fence`` is the latest token."""
        keys = [wire.lock_key(fence.vault, fence.item), wire.fence_key(fence.vault, fence.item)]
        current_holder, token = self._call(lambda: self._redis.mget(keys))
        return bool(current_holder == holder and token == str(fence.token))

    def invalidate_fence(self, vault: str, item: str) -> int:
        """Make every token issued so far stale; the new token."""
        key = wire.fence_key(vault, item)
        return int(self._call(lambda: self._redis.incr(key), key))

    # --- problems and ticks ------------------------------------------------------------------

    def record_problem(self, problem: Problem) -> None:
        """Remember an unreadable record, one entry per key."""
        record = dump(problem.to_dict())
        self._call(lambda: self._redis.hset(wire.PROBLEMS_KEY, problem.key, record))

    def problems(self) -> list[Problem]:
        """Every remembered problem, by key."""
        raw = self._call(lambda: self._redis.hgetall(wire.PROBLEMS_KEY), wire.PROBLEMS_KEY)
        found: Listing[Problem] = Listing()
        for key, value in sorted(raw.items()):
            where = f"{wire.PROBLEMS_KEY}[{_text(key)}]"
            collect(found, where, _text(value), Problem.from_dict, "problems")
        return [*found, *found.problems]

    def clear_problems(self) -> int:
        """Forget every problem."""
        count = self._call(lambda: self._redis.hlen(wire.PROBLEMS_KEY), wire.PROBLEMS_KEY)
        self._call(lambda: self._redis.delete(wire.PROBLEMS_KEY))
        return int(count)

    def record_tick(self, name: str, at: datetime) -> None:
        """Note when a tick ran."""
        self._call(lambda: self._redis.hset(wire.TICKS_KEY, name, to_iso(at) or ""))

    def last_ticks(self) -> dict[str, datetime]:
        """When each tick last ran (unreadable entries left out)."""
        raw = self._call(lambda: self._redis.hgetall(wire.TICKS_KEY), wire.TICKS_KEY)
        ticks: dict[str, datetime] = {}
        for name, value in raw.items():
            try:
                at = from_iso(_text(value))
            except ValueError:
                continue
            if at is not None:
                ticks[_text(name)] = at
        return ticks

    def _call(self, operation: Callable[[], T], key: str | None = None) -> T:
        with translated(self._url, key):
            return operation()


def _wrong_type(error: Exception) -> bool:
    return isinstance(error, redis.ResponseError) and reply_code(error) == "WRONGTYPE"


def _get_bytes(client: redis.Redis, key: str) -> bytes | None:
    """GET without decoding, whatever the client's decode_responses says."""
    raw: bytes | None = client.execute_command(  # type: ignore[no-untyped-call]
        "GET", key, NEVER_DECODE=True
    )
    return raw


def _fence_key(fence: Fence | None, record_key: str) -> str:
    """The fencing counter to check; unfenced writes pass the record's own key (unused)."""
    return wire.fence_key(fence.vault, fence.item) if fence else record_key


def _token(fence: Fence | None) -> str:
    """The token a fenced script compares; '' means unfenced."""
    return str(fence.token) if fence else ""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
