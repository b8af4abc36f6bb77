"""The Redis catalog's indexes: derived data, repaired from the records rather than trusted.

An index only says where to look; the records are the truth. The job indexes (the in-progress
set, the retry and queued sorted sets the ticks read, and each vault's job index) can always be
rebuilt from the job records, so trouble in one is repaired and never strands a job:

- **An index key of the wrong Redis type** (``SET bj:queued garbage``) is replaced by an empty
  one of the right type by whichever script or read meets it first. The scripts that save and
  create jobs catch a write's WRONGTYPE, replace the key and write again, so such a save never
  fails half-way (and asks no type while every index is fine).
  A problem names the key (``backup-jobs problem list``), and a repair pass is asked for at once.
- **The repair pass** (``restore_job_indexes``, run by the index-repair tick) SCANs every job
  record and puts back each entry its status implies that its index lacks
  (``records.index_entries``): Queued jobs due for the sweep at once (it re-sends their message;
  a duplicate is harmless), InProgress ones for the reaper (which checks the lease),
  WaitingToRetry ones at their next retry; and every job into the jobs page's indexes (its
  vault's, its status's, operation's and item's) and, once final, the retention index
  (``records.listing_entries``). A status
  entry is put back only if the record still holds what the pass read, so a job saved meanwhile
  keeps the indexes of that save. A pass costs O(job records): the tick runs one an hour, and at
  once when a script asked (``ticks.INDEX_REPAIR_EVERY_SECONDS``).
- **A member that is not UTF-8** cannot be an id this service wrote (ids are text): reads take
  members undecoded, remove such a member and record a problem naming the index.
- **A record key of the wrong Redis type** reads as nil in an MGET. Only for those nils a TYPE
  is asked (one pipelined round trip), and a key that exists is named in the listing's problems
  rather than taken for an absent record.

Problems the catalog records itself are the ones where it changed data it found bad (a replaced
key, a removed member); the ones it only skipped are for its caller to record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

from backup_jobs import wire
from backup_jobs.catalogs import scripts
from backup_jobs.catalogs.records import decode_record, index_entries, listing_entries
from backup_jobs.catalogs.redis_base import RedisBase, text
from backup_jobs.errors import CorruptRecord
from backup_jobs.models import Job, Listing, Problem

# Keys a SCAN of the repair pass looks at per round trip (of any kind: SCAN filters after).
REPAIR_PAGE = 1000
_SETS = frozenset({wire.IN_PROGRESS_KEY})


class RedisIndexes(RedisBase):
    """The indexes the ticks work from, and what keeps every index readable (a mixin)."""

    # --- the ticks' indexes ------------------------------------------------------------------

    def due_retries(self, now: datetime, limit: int = 100) -> Listing[str]:
        """Job ids due at ``now``, oldest first."""
        return self._due(wire.RETRY_SET_KEY, now, limit, "due retries")

    def due_queued(self, now: datetime, limit: int = 100) -> Listing[str]:
        """Queued job ids whose sweep check is due, oldest first."""
        return self._due(wire.QUEUED_KEY, now, limit, "due queued jobs")

    def in_progress(self) -> Listing[str]:
        """Ids of jobs recorded as running."""
        key = wire.IN_PROGRESS_KEY
        found = self._index_members(key, "in-progress jobs", "SMEMBERS", key)
        return Listing(sorted(found), found.problems)

    def mark_sent(self, sent: Mapping[str, datetime]) -> None:
        """Push the sweep's check of queued jobs back (those still queued), in one ZADD XX."""
        later = {job_id: check_at.timestamp() for job_id, check_at in sent.items()}
        if later:
            index = wire.QUEUED_KEY
            self._index_write(index, partial(self._redis.zadd, index, later, xx=True))

    def postpone(self, index: str, job_id: str, until: datetime) -> None:
        """Move a job's entry in a sorted index to ``until``, if it is there (a set: nothing)."""
        if _job_index_type(index) == "zset":
            later = {job_id: until.timestamp()}
            self._index_write(index, partial(self._redis.zadd, index, later, xx=True))

    def drop_from_index(self, index: str, job_id: str) -> None:
        """Drop a job id from one index the ticks read (its record is gone)."""
        if _job_index_type(index) == "set":
            self._index_write(index, partial(self._redis.srem, index, job_id))
        else:
            self._index_write(index, partial(self._redis.zrem, index, job_id))

    def _due(self, key: str, now: datetime, limit: int, by: str) -> Listing[str]:
        command = ("ZRANGEBYSCORE", key, "-inf", now.timestamp(), "LIMIT", 0, limit)
        return self._index_members(key, by, *command)

    # --- the repair pass ---------------------------------------------------------------------

    def restore_job_indexes(self, now: datetime) -> Listing[str]:
        """Put back every index entry a job record implies and its index lacks (one pass).

        The ids put back; job records that cannot be read are the listing's problems.
        """
        restored: Listing[str] = Listing()
        cursor = 0
        while True:
            cursor, keys = self._call(
                partial(self._redis.scan, cursor, match=wire.job_key("*"), count=REPAIR_PAGE)
            )
            if keys:
                self._restore_page(sorted(text(k) for k in keys), now, restored)
            if not cursor:
                return Listing(sorted(set(restored)), restored.problems)

    def _restore_page(self, keys: list[str], now: datetime, restored: Listing[str]) -> None:
        by = "repair job indexes"
        raws, wrong = self._read_records(keys, by)
        restored.problems.extend(wrong.values())
        pipe = self._redis.pipeline(transaction=False)
        ids: list[str] = []
        for key, raw in zip(keys, raws, strict=True):
            if raw is None:
                continue
            try:
                job = decode_record(key, raw, Job.from_dict)
            except CorruptRecord as exc:
                restored.problems.append(Problem(key, exc.detail, by))
                continue
            for index, score in [*listing_entries(job), *index_entries(job, now)]:
                args = [raw, "" if score is None else repr(score), job.id]
                self._script(scripts.RESTORE_ENTRY)(keys=[key, index], args=args, client=pipe)
                ids.append(job.id)
        # An entry a failed command could not put back is left to the next pass.
        added = self._call(partial(pipe.execute, raise_on_error=False))
        restored.extend(job_id for job_id, n in zip(ids, added, strict=True) if n == 1)

    # --- reading indexes and records ---------------------------------------------------------

    def _index_members(self, key: str, by: str, *command: Any) -> Listing[str]:
        """The members a command reads from a job index; one of the wrong type is replaced."""
        try:
            return self._members(key, _job_index_type(key), by, *command)
        except CorruptRecord:
            return Listing(problems=self._replace_index(key, by))

    def _members(self, key: str, kind: str, by: str, *command: Any) -> Listing[str]:
        """The members a command reads from an index of type ``kind`` (``CorruptRecord`` if it
        has another).

        Read undecoded: a member that is not UTF-8 is removed and named in a problem.
        """
        raw = self._call(partial(self._redis.execute_command, *command, NEVER_DECODE=True), key)
        found: Listing[str] = Listing()
        bad: list[bytes] = []
        for member in raw:
            try:
                found.append(member.decode("utf-8"))
            except UnicodeDecodeError:
                bad.append(member)
        if bad:
            remove = self._redis.srem if kind == "set" else self._redis.zrem
            self._call(partial(remove, key, *bad), key)
            shown = ", ".join(repr(member) for member in bad[:3])
            reason = (
                f"{len(bad)} member(s) not UTF-8 ({shown}): removed, since no id this service "
                "writes can be one"
            )
            found.problems.append(self._noted(key, reason, by))
        return found

    def _index_write(self, key: str, operation: Callable[[], object]) -> None:
        """Write to a job index; one of the wrong type is replaced (nothing to write to then)."""
        try:
            self._call(operation, key)
        except CorruptRecord:
            self._replace_index(key, "write index")

    def _replace_index(self, key: str, by: str) -> list[Problem]:
        """Replace a job index of the wrong type; the problem recorded, if it still was one."""
        keys = [key, wire.TICKS_KEY]
        args = [_job_index_type(key), wire.INDEX_REPAIR_STARTED]
        replaced = self._call(lambda: self._script(scripts.REPLACE_INDEX)(keys=keys, args=args))
        return self._replaced(replaced, by)

    def _scripted(self, result: Any, by: str, extra: int = 0) -> int:
        """The status a job script returned; a problem recorded for each index it replaced
        (listed after the status and ``extra`` other values)."""
        if not isinstance(result, list):
            return int(result)
        self._replaced(result[1 + extra :], by)
        return int(result[0])

    def _replaced(self, replaced: list[Any], by: str) -> list[Problem]:
        """Record a problem for each (key, type, wanted type) triple a script returned."""
        triples = zip(replaced[::3], replaced[1::3], replaced[2::3], strict=True)
        return [
            self._noted(
                text(key),
                f"it was a Redis {text(kind)}, not a {text(want)}: replaced by an empty one; "
                "the job index repair puts back the entries it held from the job records",
                by,
            )
            for key, kind, want in triples
        ]

    def _noted(self, key: str, reason: str, by: str) -> Problem:
        problem = Problem(key, reason, by, datetime.now(UTC))
        self.record_problem(problem)
        return problem


def _job_index_type(key: str) -> str:
    """The Redis type of a job index (``ValueError`` for any other key)."""
    if key in _SETS:
        return "set"
    if key in (wire.RETRY_SET_KEY, wire.QUEUED_KEY, wire.ENDED_KEY) or key.startswith(
        wire.JOB_LISTING_PREFIXES
    ):
        return "zset"
    raise ValueError(f"not a job index: {key}")
