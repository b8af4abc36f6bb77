"""What the Redis catalog's mixins share: the client, error translation and their scripts.

``RedisCatalog`` provides ``_call`` (every Redis call runs inside it, so that errors are
translated, ``catalogs.redis_errors``); the mixins (protection records, indexes) declare it here
so that each can be read and type-checked alone.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import redis

from backup_jobs.models import Problem

T = TypeVar("T")


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
        """MGET of record keys; a nil whose key exists with another Redis type is a problem."""
        raws = self._call(partial(self._redis.mget, keys))
        missing = [key for key, raw in zip(keys, raws, strict=True) if raw is None]
        wrong: dict[str, Problem] = {}
        if missing:
            pipe = self._redis.pipeline(transaction=False)
            for key in missing:
                pipe.type(key)
            for key, kind in zip(missing, self._call(pipe.execute), strict=True):
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
