"""Is each process of the stack up? Every one is asked in its own terms, as a user would.

The server answers PING with its password (``embedded.start`` waits for that); the job
worker and the tick consumer answer a Celery control ping sent to their node names; beat has
recorded its pid in Redis (``bj:beat``); Flower answers HTTP on its port.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import redis

from backup_jobs import wire
from backup_jobs.connection import ssl_options
from backup_jobs.dispatchers.celery import CeleryDispatcher
from backup_jobs.settings import Settings

# How long one control ping waits for its answer.
PING_TIMEOUT_SECONDS = 0.5
# How long one HTTP request to Flower may take.
HTTP_TIMEOUT_SECONDS = 1.0
# Where to reach a server listening on every interface.
WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 - not a bind


class Probes:
    """The questions ``up`` asks its processes; one Redis client and one Celery sender."""

    def __init__(self, settings: Settings, redis_url: str) -> None:
        self._redis = redis.Redis.from_url(
            redis_url,
            socket_connect_timeout=1,
            socket_timeout=2,
            **ssl_options(settings, redis_url),
        )
        self._celery = CeleryDispatcher.from_url(settings, redis_url)

    def worker(self, node: str) -> bool:
        """True once the Celery node answers a control ping."""
        return node in self._celery.answering([node], PING_TIMEOUT_SECONDS)

    def beat(self, pid: int) -> bool:
        """True once beat process ``pid`` has recorded itself in ``bj:beat``."""
        try:
            raw = self._redis.get(wire.BEAT_KEY)
            record = json.loads(raw) if raw else {}
        except (redis.RedisError, ValueError):
            return False
        return isinstance(record, dict) and str(record.get("pid")) == str(pid)

    def close(self) -> None:
        """Release the connections."""
        self._redis.close()
        self._celery.close()


def flower_url(settings: Settings) -> str:
    """Where Flower answers on this machine."""
    host = WILDCARDS.get(settings.flower_address, settings.flower_address)
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.flower_port}"


def answers_http(url: str) -> bool:
    """True if ``url`` answers at all (any HTTP status, 401 included)."""
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_SECONDS):  # noqa: S310 - loopback
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
