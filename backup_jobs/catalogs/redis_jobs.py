"""The Redis catalog's job records: create, save, the jobs page and history retention.

Creating and saving a job are one Lua script each that also keeps every index the job's status
implies (``catalogs.scripts``): the ticks' indexes, the jobs page's (``joblist``: the vault's,
by status, by operation, by item, all scored by queue time) and the retention index (final
jobs by end time). A page is one read-only script (walk the smallest index newest first,
keep what the others hold) and one MGET; a count is one ZCOUNT. Retention deletes a job and
every entry in one script, only if its record is still the final one it read.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import Any

import redis

from backup_jobs import wire
from backup_jobs.catalog import ALL_JOBS, Fence, LockResult, VMRead
from backup_jobs.catalogs import scripts
from backup_jobs.catalogs.records import collect, decode_record, dump, vms_listing
from backup_jobs.catalogs.redis_base import text, typed_records
from backup_jobs.catalogs.redis_indexes import RedisIndexes
from backup_jobs.errors import CorruptRecord, LeaseLost
from backup_jobs.joblist import (
    MAX_PAGE_SIZE,
    SCAN_BUDGET,
    JobQuery,
    Position,
    encode_cursor,
    ended_score,
    listing_keys,
    status_keys,
)
from backup_jobs.models import VM, Job, JobPage, JobStatus, Listing, Operation, Problem

_STATUSES = list(JobStatus)
# The KEYS number (Lua, from 1) of the first status index in SAVE_JOB.
_FIRST_STATUS_KEY = 12


class RedisJobs(RedisIndexes):
    """Job records and the indexes that follow from them (a mixin of ``RedisCatalog``)."""

    def create_job(self, job: Job, check_at: datetime) -> bool:
        """Store a new job unless its id exists; index it by queue time and for the sweep."""
        key = wire.job_key(job.id)
        keys = [key, wire.QUEUED_KEY, *listing_keys(job), wire.TICKS_KEY]
        args: list[str | float] = [
            dump(job.to_dict()),
            job.queued_at.timestamp(),
            job.id,
            check_at.timestamp(),
            wire.INDEX_REPAIR_STARTED,
        ]
        created = self._call(lambda: self._script(scripts.CREATE_JOB)(keys=keys, args=args), key)
        return bool(self._scripted(created, "create job"))

    def get_job(self, job_id: str) -> Job | None:
        """One job, or None; ``CorruptRecord`` if its record is unreadable."""
        key = wire.job_key(job_id)
        raw = self._call(lambda: self._redis.get(key), key)
        return decode_record(key, text(raw), Job.from_dict) if raw else None

    def save_job(
        self,
        job: Job,
        fence: Fence | None = None,
        *,
        expect: JobStatus | None = None,
        check_at: datetime | None = None,
        vm_state: VM | None = None,
    ) -> bool:
        """Replace a job and its index entries (and ``vm_state``) in one script; ``LeaseLost``
        if fenced out."""
        if job.status == JobStatus.QUEUED and check_at is None:
            raise ValueError("saving a Queued job needs check_at")
        keys, args = _save_job_call(job, fence, expect, check_at, vm_state)
        run = partial(self._script(scripts.SAVE_JOB), keys=keys, args=args)
        written = self._scripted(self._call(run, keys[1]), "save job", extra=1)
        if written == 0:
            raise LeaseLost(job.item_name)
        return bool(written == 1)

    def start_attempt(
        self, job: Job, ttl_seconds: float, *, expect: JobStatus, read_vm: bool = False
    ) -> LockResult:
        """Take the item's lease and save the started job with its new token (and read the
        VM's two records, if asked), in one script."""
        fence = Fence(job.vault, job.item, 0)  # the counter's key; the token is issued there
        keys, args = _save_job_call(job, fence, expect, None, None)
        reads = [wire.vm_key(job.vault, job.item), wire.vm_state_key(job.vault, job.item)]
        reads = reads if read_vm else []
        args[0] = ""
        args += [int(time.time() * 1000), max(1, int(ttl_seconds * 1000)), len(reads)]
        run = partial(self._script(scripts.START_JOB), keys=keys + reads, args=args)
        reply = self._call(run, keys[1])
        if int(reply[0]) == 1:
            end = 2 + 2 * len(reads)
            self._replaced(reply[end:], "start job")
            vm = _vm_read(job, *typed_records(reads, reply[2:end], "start job"))
            return LockResult(True, int(reply[1]), job.id, vm if read_vm else None)
        if int(reply[0]) == -1:  # its status changed meanwhile: nothing taken
            return LockResult(False, holder=job.id)
        return LockResult(False, holder=text(reply[1]) or None)

    # --- the jobs page -----------------------------------------------------------------------

    def list_jobs(self, vault: str, query: JobQuery = ALL_JOBS) -> JobPage:
        """A page of the jobs ``query`` asks for, newest first (every match if no limit)."""
        if query.limit is not None:
            return self._page(vault, query, query.limit)
        everything = JobPage()
        after = query.after
        while True:
            page = self._page(vault, replace(query, after=after), MAX_PAGE_SIZE)
            everything.extend(page)
            everything.problems.extend(page.problems)
            if page.next_cursor is None:
                return everything
            after = page.position

    def _page(self, vault: str, query: JobQuery, limit: int) -> _RedisPage:
        keys = query.indexes(vault)
        after = query.after
        args = [
            _score(query.since.timestamp() if query.since else None),
            _score(query.until.timestamp() if query.until else None),
            _score(after.score if after else None),
            after.job_id if after else "",
            limit,
            SCAN_BUDGET,
        ]
        reply, replaced = self._read_script(scripts.PAGE, keys, args, "list jobs")
        more, last_score, last_member, *members = reply
        page = _RedisPage(problems=replaced + self._drop_undecodable(keys, members, "list jobs"))
        if more == 1:
            page.position = Position(float(last_score), text(last_member))
            page.next_cursor = encode_cursor(page.position)
        ids = [m.decode() for m in members if _utf8(m)]
        job_keys = [wire.job_key(job_id) for job_id in ids]
        if job_keys:
            raws, wrong = self._read_records(job_keys, "list jobs")
            page.problems.extend(wrong.values())
            found: Listing[Job] = Listing()
            for key, raw in zip(job_keys, raws, strict=True):
                if raw:  # None: deleted since the script read the index
                    collect(found, key, raw, Job.from_dict, "list jobs")
            page.extend(job for job in found if job.vault == vault and query.matches(job))
            page.problems.extend(found.problems)
        return page

    def count_jobs(
        self,
        vault: str,
        *,
        status: JobStatus | None = None,
        operation: Operation | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """How many jobs match, by ZCOUNT on the one index a single filter names."""
        query = JobQuery(status=status, operation=operation)
        args = [
            _score(since.timestamp() if since else None),
            _score(until.timestamp() if until else None),
        ]
        count, _ = self._read_script(scripts.COUNT, query.indexes(vault), args, "count jobs")
        return int(count)

    def _read_script(
        self, source: str, keys: list[str], args: list[Any], by: str
    ) -> tuple[Any, list[Problem]]:
        """Run a read-only script over job indexes, its reply undecoded (members are bytes);
        an index of the wrong type is replaced (a problem) and the script run again."""
        run = partial(self._eval_undecoded, self._script(source), keys, args)
        try:
            return self._call(run, keys[0]), []
        except CorruptRecord:
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.type(key)
            problems: list[Problem] = []
            for key, kind in zip(keys, self._call(pipe.execute), strict=True):
                if text(kind) not in ("zset", "none"):
                    problems.extend(self._replace_index(key, by))
            return self._call(run, keys[0]), problems

    def _eval_undecoded(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return self._redis.execute_command(*command, NEVER_DECODE=True)  # type: ignore[no-untyped-call]
        except redis.exceptions.NoScriptError:  # a restarted server: load it again
            self._redis.script_load(script.script)
            return self._redis.execute_command(*command, NEVER_DECODE=True)  # type: ignore[no-untyped-call]

    def _drop_undecodable(self, keys: list[str], members: list[bytes], by: str) -> list[Problem]:
        """Remove members that are not UTF-8 (no id this service writes) from the indexes."""
        bad = [member for member in members if not _utf8(member)]
        if not bad:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.zrem(key, *bad)
        removed = self._call(pipe.execute)
        shown = ", ".join(repr(member) for member in bad[:3])
        reason = (
            f"{len(bad)} member(s) not UTF-8 ({shown}): removed, since no id this service "
            "writes can be one"
        )
        return [self._noted(key, reason, by) for key, n in zip(keys, removed, strict=True) if n]

    # --- history retention -------------------------------------------------------------------

    def expire_jobs(self, ended_before: datetime, limit: int) -> Listing[str]:
        """Delete up to ``limit`` final jobs that ended before ``ended_before``."""
        by = "expire job history"
        command = ("ZRANGEBYSCORE", wire.ENDED_KEY, "-inf", f"({ended_before.timestamp()!r}")
        due = self._index_members(wire.ENDED_KEY, by, *command, "LIMIT", 0, limit)
        deleted: Listing[str] = Listing(problems=due.problems)
        if not due:
            return deleted
        keys = [wire.job_key(job_id) for job_id in due]
        raws, wrong = self._read_records(keys, by)
        deleted.problems.extend(wrong.values())
        pipe = self._redis.pipeline(transaction=False)
        tried: list[str | None] = []  # per command: the job a DELETE_JOB deletes, else None
        for job_id, key, raw in zip(due, keys, raws, strict=True):
            job = self._final_job(key, raw, deleted.problems, by)
            if job is None or raw is None:  # gone, unreadable or not final: drop the entry
                pipe.zrem(wire.ENDED_KEY, job_id)
                tried.append(None)
                continue
            indexes = [*listing_keys(job), *status_keys(job.vault), wire.ENDED_KEY]
            self._script(scripts.DELETE_JOB)(keys=[key, *indexes], args=[raw, job_id], client=pipe)
            tried.append(job_id)
        results = self._call(partial(pipe.execute, raise_on_error=False))
        deleted.extend(job for job, n in zip(tried, results, strict=True) if job and n == 1)
        return deleted

    @staticmethod
    def _final_job(key: str, raw: str | None, problems: list[Problem], by: str) -> Job | None:
        if raw is None:
            return None
        try:
            job = decode_record(key, raw, Job.from_dict)
        except CorruptRecord as exc:
            problems.append(Problem(key, exc.detail, by))
            return None
        return job if job.status.is_final else None


class _RedisPage(JobPage):
    """A page with the position its cursor encodes (paging on without decoding it)."""

    position: Position | None = None


def _vm_read(job: Job, raws: list[str | None], wrong: dict[str, Problem]) -> VMRead:
    """The job's VM from its two records (properties, state) as a start read them."""
    found = vms_listing(job.vault, [(job.item, raws[0], raws[1])] if raws and not wrong else [])
    found.problems[:0] = wrong.values()
    return VMRead.of(found)


def _utf8(member: bytes) -> bool:
    try:
        member.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _save_job_call(
    job: Job,
    fence: Fence | None,
    expect: JobStatus | None,
    check_at: datetime | None,
    vm_state: VM | None,
) -> tuple[list[str], list[str | int]]:
    """The KEYS and ARGV of SAVE_JOB (and, but for two more arguments, of START_JOB)."""
    key = wire.job_key(job.id)
    keys = [
        wire.fence_key(fence.vault, fence.item) if fence else key,
        key,
        wire.IN_PROGRESS_KEY,
        wire.lock_key(job.vault, job.item),
        wire.RETRY_SET_KEY,
        wire.QUEUED_KEY,
        wire.job_index_key(job.vault),
        wire.jobs_by_operation_key(job.vault, job.operation.value),
        wire.jobs_by_item_key(job.vault, job.item),
        wire.ENDED_KEY,
        wire.vm_state_key(job.vault, vm_state.id) if vm_state else key,
        *status_keys(job.vault),
        wire.TICKS_KEY,
    ]
    retry_at = job.next_retry_at if job.status == JobStatus.WAITING_TO_RETRY else None
    args: list[str | int] = [
        str(fence.token) if fence else "",
        dump(job.to_dict()),
        job.id,
        "1" if job.status.is_running else "0",
        expect.value if expect else "",
        _score(retry_at.timestamp() if retry_at else None),
        _score(check_at.timestamp() if check_at and job.status == JobStatus.QUEUED else None),
        _score(job.queued_at.timestamp()),
        _score(ended_score(job)),
        str(_FIRST_STATUS_KEY + _STATUSES.index(job.status)),
        dump(vm_state.state_dict()) if vm_state else "",
        wire.INDEX_REPAIR_STARTED,
    ]
    return keys, args


def _score(value: float | None) -> str:
    """A sorted-set score as the scripts take it; '' for none."""
    return "" if value is None else repr(value)
