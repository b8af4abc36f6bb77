"""What the Redis catalog's mixins share: the client, error translation and their scripts.

``RedisCatalog`` provides ``_call`` (every Redis call runs inside it, so that errors are
translated, ``catalogs.redis_errors``); the mixins (protection records, indexes) declare it here
so that each can be read and type-checked alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import redis

from backup_jobs.models import Problem

T = TypeVar("T")
# Up to this many records are read with their types in the same round trip (a lookup of one
# VM reads two, and a missing one is the usual case: a VM's state before its registration).
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

        The types of the nils are asked in a second round trip, or in the same one for a few
        keys (``TYPED_READ_MAX``).
        """
        pipe = self._redis.pipeline(transaction=False)
        pipe.mget(keys)
        if len(keys) <= TYPED_READ_MAX:
            for key in keys:
                pipe.type(key)
        raws, *kinds = self._call(pipe.execute)
        missing = [key for key, raw in zip(keys, raws, strict=True) if raw is None]
        if missing and not kinds:
            pipe = self._redis.pipeline(transaction=False)
            for key in missing:
                pipe.type(key)
            kinds = self._call(pipe.execute)
        elif missing:
            kinds = [kind for raw, kind in zip(raws, kinds, strict=True) if raw is None]
        wrong: dict[str, Problem] = {}
        if missing:
            for key, kind in zip(missing, kinds, strict=True):
                if text(kind) != "none":
                    reason = f"it is a Redis {text(kind)}, not a string holding a JSON record"
                    wrong[key] = Problem(key, reason, by)
        return [text(raw) if raw is not None else None for raw in raws], wrong

    def _script(self, source: str) -> Any:
        """A Lua script registered once per catalog."""
        cache: dict[str, Any] = self.__dict__.setdefault("_scripts", {})
        if source not in cache:
            cache[source] = self._redis.register_script(source)
        return cache[source]


def text(raw: str | bytes) -> str:
    """A reply as text (the client decodes already; this satisfies the type checker)."""
    return raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
