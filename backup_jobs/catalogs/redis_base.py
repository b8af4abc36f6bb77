"""What the Redis catalog's mixins share: the client, error translation and their scripts.

``RedisCatalog`` provides ``_call`` (every Redis call runs inside it, so that errors are
translated, ``catalogs.redis_errors``); the mixins (protection records, indexes) declare it here
so that each can be read and type-checked alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import redis

from backup_jobs.catalogs import scripts
from backup_jobs.models import Problem

T = TypeVar("T")
# Up to this many records are read with their types in the same round trip, by one read-only
# script (a lookup of one VM reads two, and a missing one is the usual case: a VM's state
# before its registration).
TYPED_READ_MAX = 4


class RedisBase:
    """The client and the helpers every part of the Redis catalog uses."""

    _redis: redis.Redis

    def _call(self, operation: Callable[[], T], key: str | None = None) -> T:
        raise NotImplementedError  # provided by RedisCatalog

    def record_problem(self, problem: Problem) -> None:
        raise NotImplementedError  # provided by RedisCatalog

    def _read_records(
        self, keys: list[str], by: str
    ) -> tuple[list[str | None], dict[str, Problem]]:
        """MGET of record keys; a nil whose key exists with another Redis type is a problem.

        The types of the nils are asked in a second round trip, or in the same one, by a
        script, for a few keys (``TYPED_READ_MAX``).
        """
        if len(keys) <= TYPED_READ_MAX:
            return self._read_few(keys, by)
        raws = self._call(lambda: self._redis.mget(keys))
        missing = [key for key, raw in zip(keys, raws, strict=True) if raw is None]
        kinds: list[Any] = []
        if missing:
            pipe = self._redis.pipeline(transaction=False)
            for key in missing:
                pipe.type(key)
            kinds = self._call(pipe.execute)
        wrong = {
            key: _wrong_type(key, text(kind), by)
            for key, kind in zip(missing, kinds, strict=True)
            if text(kind) != "none"
        }
        return [text(raw) if raw is not None else None for raw in raws], wrong

    def _read_few(self, keys: list[str], by: str) -> tuple[list[str | None], dict[str, Problem]]:
        """``_read_records`` of a few keys in one command (``scripts.READ_RECORDS``)."""
        reply = self._call(lambda: self._script(scripts.READ_RECORDS)(keys=keys))
        return typed_records(keys, reply, by)

    def _script(self, source: str) -> Any:
        """A Lua script registered once per catalog."""
        cache: dict[str, Any] = self.__dict__.setdefault("_scripts", {})
        if source not in cache:
            cache[source] = self._redis.register_script(source)
        return cache[source]


def typed_records(
    keys: list[str], reply: list[Any], by: str
) -> tuple[list[str | None], dict[str, Problem]]:
    """The records of ``keys`` as ``scripts.READ_RECORDS`` replies (each value, then each
    Redis type of a key that is not a string), and the problems of those of the wrong type."""
    raws, kinds = reply[: len(keys)], reply[len(keys) :]
    wrong = {
        key: _wrong_type(key, text(kind), by) for key, kind in zip(keys, kinds, strict=True) if kind
    }
    return [text(raw) if raw is not None else None for raw in raws], wrong


def _wrong_type(key: str, kind: str, by: str) -> Problem:
    """The problem of a record key that holds another Redis type than a string."""
    return Problem(key, f"it is a Redis {kind}, not a string holding a JSON record", by)


def text(raw: str | bytes) -> str:
    """A reply as text (the client decodes already; this satisfies the type checker)."""
    return raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
