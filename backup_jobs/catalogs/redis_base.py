"""What the Redis catalog's mixins share: the client, error translation and their scripts.

``RedisCatalog`` provides ``_call`` (every Redis call runs inside it, so that errors are
translated, ``catalogs.redis_errors``); the mixins (protection records, indexes) declare it here
so that each can be read and type-checked alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import redis

T = TypeVar("T")


class RedisBase:
    """The client and the helpers every part of the Redis catalog uses."""

    _redis: redis.Redis

    def _call(self, operation: Callable[[], T], key: str | None = None) -> T:
        raise NotImplementedError  # provided by RedisCatalog

    def _script(self, source: str) -> Any:
        """A Lua script registered once per catalog."""
        cache: dict[str, Any] = self.__dict__.setdefault("_scripts", {})
        if source not in cache:
            cache[source] = self._redis.register_script(source)
        return cache[source]


def text(raw: str | bytes) -> str:
    """A reply as text (the client decodes already; this satisfies the type checker)."""
    return raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
