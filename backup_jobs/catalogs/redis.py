"""The catalog in Redis: JSON records, a sorted-set job index, leases with fencing tokens.

Leases are ``SET NX PX`` keys holding the job id; acquiring one also increments the item's
fencing counter, in one Lua script so nobody sees a lease without its token. Fenced writes are
Lua scripts that compare the counter and write in one step. Redis errors are translated here
into ``RedisUnavailable``, raised from the original.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis

from backup_jobs import wire
from backup_jobs.catalog import Fence, LockResult
from backup_jobs.errors import LeaseLost, RedisUnavailable
from backup_jobs.models import VM, Job, JobStatus, VaultConfig

T = TypeVar("T")

_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, redis.call('INCR', KEYS[2]), ARGV[1]}
end
local holder = redis.call('GET', KEYS[1])
if not holder then holder = '' end
return {0, 0, holder}
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Every fenced script starts so: KEYS[1] is the item's fencing counter, ARGV[1] the writer's
# token ('' = unfenced write); a stale token writes nothing.
_FENCE_CHECK = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
"""

# KEYS[1] fence counter, KEYS[2] record; ARGV[1] token ('' = unfenced), ARGV[2] JSON.
_FENCED_SET = (
    _FENCE_CHECK
    + """
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""
)

# KEYS[1] fence counter, KEYS[2] job record, KEYS[3] in-progress index, KEYS[4] item lease;
# ARGV[1] token ('' = unfenced), ARGV[2] JSON, ARGV[3] job id, ARGV[4] '1' if in progress.
_SAVE_JOB = (
    _FENCE_CHECK
    + """
redis.call('SET', KEYS[2], ARGV[2])
if ARGV[4] == '1' then
  redis.call('SADD', KEYS[3], ARGV[3])
else
  redis.call('SREM', KEYS[3], ARGV[3])
  if redis.call('GET', KEYS[4]) == ARGV[3] then redis.call('DEL', KEYS[4]) end
end
return 1
"""
)

# KEYS[1] job record, KEYS[2] the vault's job index; ARGV[1] JSON, ARGV[2] score, ARGV[3] id.
_CREATE_JOB = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1
"""


def redact(url: str) -> str:
    """The URL with its password replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class RedisCatalog:
    """The catalog port on a Redis (or Valkey) server."""

    def __init__(self, client: redis.Redis, url: str = "redis") -> None:
        self._redis = client
        self._url = url
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._fenced_set = client.register_script(_FENCED_SET)
        self._create_job = client.register_script(_CREATE_JOB)
        self._save_job = client.register_script(_SAVE_JOB)

    @classmethod
    def from_url(cls, url: str) -> RedisCatalog:
        """Connect to ``url`` (nothing is sent until the first call)."""
        client = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5)
        return cls(client, url)

    @property
    def client(self) -> redis.Redis:
        """The underlying redis-py client."""
        return self._redis

    def ping(self) -> None:
        """Raise ``RedisUnavailable`` unless the server answers."""
        self._call(self._redis.ping)

    def put_vault(self, vault: VaultConfig) -> None:
        """Create or replace a vault's configuration."""
        self._call(lambda: self._redis.set(wire.vault_key(vault.name), _dump(vault.to_dict())))

    def get_vault(self, name: str) -> VaultConfig | None:
        """A vault's configuration, or None."""
        raw = self._call(lambda: self._redis.get(wire.vault_key(name)))
        return VaultConfig.from_dict(json.loads(raw)) if raw else None

    def get_vm(self, vault: str, vm_id: str) -> VM | None:
        """One VM of a vault, or None."""
        return next(iter(self._vms(vault, [vm_id])), None)

    def list_vms(self, vault: str) -> list[VM]:
        """Every VM of a vault, sorted by id."""
        ids = sorted(
            str(i) for i in self._call(lambda: self._redis.smembers(wire.vm_index_key(vault)))
        )
        return self._vms(vault, ids) if ids else []

    def put_vm(self, vault: str, vm: VM) -> None:
        """Create or replace a VM's provider properties and index it (one round trip)."""
        record = _dump(vm.properties_dict())

        def write() -> None:
            pipe = self._redis.pipeline(transaction=True)
            pipe.set(wire.vm_key(vault, vm.id), record)
            pipe.sadd(wire.vm_index_key(vault), vm.id)
            pipe.execute()

        self._call(write)

    def put_vm_state(self, vault: str, vm: VM, fence: Fence | None = None) -> None:
        """Replace a VM's state, checking the fence atomically."""
        key = wire.vm_state_key(vault, vm.id)
        keys = [_fence_key(fence, key), key]
        args = [_token(fence), _dump(vm.state_dict())]
        if not self._call(lambda: self._fenced_set(keys=keys, args=args)):
            raise LeaseLost(vm.id)

    def _vms(self, vault: str, ids: list[str]) -> list[VM]:
        keys = [wire.vm_key(vault, i) for i in ids] + [wire.vm_state_key(vault, i) for i in ids]
        raws = self._call(lambda: self._redis.mget(keys))
        properties, states = raws[: len(ids)], raws[len(ids) :]
        return [
            VM.from_records(json.loads(p), json.loads(s) if s else None)
            for p, s in zip(properties, states, strict=True)
            if p
        ]

    def create_job(self, job: Job) -> bool:
        """Store a new job unless its id exists, and index it by queue time (one round trip)."""
        keys = [wire.job_key(job.id), wire.job_index_key(job.vault)]
        args: list[str | float] = [_dump(job.to_dict()), job.queued_at.timestamp(), job.id]
        return bool(self._call(lambda: self._create_job(keys=keys, args=args)))

    def get_job(self, job_id: str) -> Job | None:
        """One job, or None."""
        raw = self._call(lambda: self._redis.get(wire.job_key(job_id)))
        return Job.from_dict(json.loads(raw)) if raw else None

    def save_job(self, job: Job, fence: Fence | None = None) -> None:
        """Replace a job, checking the fence; a job no longer running also frees its lease."""
        key = wire.job_key(job.id)
        lease = wire.lock_key(job.vault, job.item)
        keys = [_fence_key(fence, key), key, wire.IN_PROGRESS_KEY, lease]
        running = "1" if job.status == JobStatus.IN_PROGRESS else "0"
        args = [_token(fence), _dump(job.to_dict()), job.id, running]
        if not self._call(lambda: self._save_job(keys=keys, args=args)):
            raise LeaseLost(job.item_name)

    def list_jobs(self, vault: str, since: datetime | None = None) -> list[Job]:
        """The jobs of a vault, newest first."""
        low = since.timestamp() if since else "-inf"
        ids = [
            str(i)
            for i in self._call(
                lambda: self._redis.zrevrangebyscore(wire.job_index_key(vault), "+inf", low)
            )
        ]
        jobs: list[Job] = []
        for start in range(0, len(ids), 500):
            keys = [wire.job_key(i) for i in ids[start : start + 500]]
            raws = self._call(partial(self._redis.mget, keys))
            jobs.extend(Job.from_dict(json.loads(raw)) for raw in raws if raw)
        return jobs

    def acquire_lock(self, vault: str, item: str, holder: str, ttl_seconds: float) -> LockResult:
        """Take the lease without blocking; bump the fencing token on success."""
        keys = [wire.lock_key(vault, item), wire.fence_key(vault, item)]
        ok, token, current = self._call(
            lambda: self._acquire(keys=keys, args=[holder, _ms(ttl_seconds)])
        )
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
        holder = self._call(lambda: self._redis.get(wire.lock_key(vault, item)))
        return str(holder) if holder else None

    def invalidate_fence(self, vault: str, item: str) -> None:
        """Make every token issued so far stale."""
        self._call(lambda: self._redis.incr(wire.fence_key(vault, item)))

    def schedule_retry(self, job_id: str, at: datetime) -> None:
        """Put a job in the durable retry set."""
        self._call(lambda: self._redis.zadd(wire.RETRY_SET_KEY, {job_id: at.timestamp()}))

    def due_retries(self, now: datetime, limit: int = 100) -> list[str]:
        """Job ids due at ``now``, oldest first."""
        due = self._call(
            lambda: self._redis.zrangebyscore(
                wire.RETRY_SET_KEY, "-inf", now.timestamp(), start=0, num=limit
            )
        )
        return [str(job_id) for job_id in due]

    def remove_retry(self, job_id: str) -> bool:
        """Take a job out of the retry set."""
        return bool(self._call(lambda: self._redis.zrem(wire.RETRY_SET_KEY, job_id)))

    def in_progress(self) -> list[str]:
        """Ids of jobs recorded as running."""
        return sorted(
            str(i) for i in self._call(lambda: self._redis.smembers(wire.IN_PROGRESS_KEY))
        )

    def _call(self, operation: Callable[[], T]) -> T:
        with translate_redis_errors(self._url):
            return operation()


@contextmanager
def translate_redis_errors(url: str) -> Iterator[None]:
    """Turn redis-py's connection and authentication errors into ``RedisUnavailable``."""
    try:
        yield
    except redis.AuthenticationError as exc:
        detail = f"{redact(url)}: authentication failed ({exc})"
        raise RedisUnavailable(detail=detail) from exc
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            detail = f"{redact(url)}: authentication failed ({exc})"
            raise RedisUnavailable(detail=detail) from exc
        raise
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise RedisUnavailable(detail=f"{redact(url)}: {exc}") from exc


def _dump(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), sort_keys=True)


def _fence_key(fence: Fence | None, record_key: str) -> str:
    """The fencing counter to check; unfenced writes pass the record's own key (unused)."""
    return wire.fence_key(fence.vault, fence.item) if fence else record_key


def _token(fence: Fence | None) -> str:
    """The token a fenced script compares; '' means unfenced."""
    return str(fence.token) if fence else ""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
