"""Redis errors translated into the catalog's, once, for every adapter that talks to Redis.

redis-py raises connection errors, authentication errors and ``ResponseError`` replies; the
last covers both a server that refuses writes for a while (``MISCONF`` when its AOF disk is
full, ``OOM``, ``READONLY`` on a replica) and a wrong setting (``DB index is out of range``).
Each becomes ``RedisUnavailable`` (retry once Redis is fixed) or ``ConfigurationError`` (fix
``BACKUP_JOBS_REDIS_URL``), raised from the original; never a traceback for the user.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis

from backup_jobs.errors import (
    BackupJobsError,
    ConfigurationError,
    CorruptRecord,
    InternalError,
    RedisUnavailable,
)
from backup_jobs.settings import redact_url as redact

URL_VARIABLE = "BACKUP_JOBS_REDIS_URL"

# Replies of a server that is up but refuses writes (or all commands) for a while.
REFUSALS = {
    "MISCONF": "it cannot persist (is the disk of its data dir full?)",
    "OOM": "it is out of memory (maxmemory reached)",
    "READONLY": "it is a read-only replica; point BACKUP_JOBS_REDIS_URL at the primary",
    "NOREPLICAS": "it has too few replicas to accept writes",
    "MASTERDOWN": "it lost its primary",
    "LOADING": "it is still loading its data",
    "BUSY": "a script is blocking it",
    "TRYAGAIN": "it asks to try again",
    "CLUSTERDOWN": "its cluster is down",
}


# What to do about the refusals a user can fix; the others pass by themselves.
REFUSAL_ACTIONS = {
    "MISCONF": "Free space on the disk of the server's data dir (for the embedded server, the "
    "disk of BACKUP_JOBS_DATA_DIR); writes resume by themselves, and so do workers and beat.",
    "OOM": "Raise the server's maxmemory or free memory on its machine; writes resume by "
    "themselves.",
    "READONLY": "Point BACKUP_JOBS_REDIS_URL at the primary, not at a replica.",
    "NOREPLICAS": "Bring the server's replicas back, or lower its min-replicas-to-write; "
    "writes resume by themselves.",
}
# Refusals of writes only: the server still answers reads (and counts as reachable).
WRITE_REFUSALS = frozenset(REFUSAL_ACTIONS)

# What every error of Python's ssl module names (``[SSL: ...]``, ``(_ssl.c:1006)``).
TLS_MARK = "ssl"
TLS_ACTION = (
    "Check BACKUP_JOBS_REDIS_CA_FILE: it must hold the CA that signed the server's certificate, "
    "whose names must include the host of BACKUP_JOBS_REDIS_URL. If the server asks for "
    "client certificates, set BACKUP_JOBS_REDIS_CERT_FILE and BACKUP_JOBS_REDIS_KEY_FILE to a "
    "certificate and key signed by a CA the server trusts."
)

_RETRY_LATER = "Retry in a moment; the server is busy or restarting and recovers by itself."


def reply_code(exc: BaseException) -> str:
    """The error code of a Redis reply (``MISCONF``, ``OOM``, ...); redis-py strips some."""
    code = getattr(exc, "status_code", None)
    return str(code) if code else (str(exc).split(" ", 1)[0] if str(exc) else "")


def refusal(exc: BaseException) -> str | None:
    """Why the server refused, if ``exc`` is a refusal reply; else None."""
    return REFUSALS.get(reply_code(exc))


def translate(url: str, exc: Exception, key: str | None = None) -> BackupJobsError:
    """The catalog error for a redis-py exception met on ``url`` (reading ``key``, if one)."""
    where = redact(url)
    text = str(exc)
    code = reply_code(exc)
    if isinstance(exc, redis.AuthenticationError) or code in ("NOAUTH", "WRONGPASS"):
        return RedisUnavailable(detail=f"{where}: authentication failed ({text})")
    if isinstance(exc, redis.ConnectionError) and TLS_MARK in text.lower():
        return RedisUnavailable(
            detail=f"{where}: the TLS handshake failed ({text})", action=TLS_ACTION
        )
    if code != "LOADING" and isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return RedisUnavailable(detail=f"{where}: {text}")
    return _reply_error(where, text, code, key)


def _reply_error(where: str, text: str, code: str, key: str | None) -> BackupJobsError:
    """The catalog error for an error reply of the server."""
    why = REFUSALS.get(code)
    if why is not None:
        reply = text if text.startswith(code) else f"{code} {text}"
        return RedisUnavailable(
            detail=f"{where}: the server refused the command: {why} ({reply})",
            action=REFUSAL_ACTIONS.get(code, _RETRY_LATER),
        )
    if "DB index is out of range" in text or "invalid DB index" in text:
        return ConfigurationError(
            detail=f"{URL_VARIABLE}={where} names a database the server does not have ({text})"
        )
    if code == "NOPERM":
        return RedisUnavailable(detail=f"{where}: the Redis user lacks a permission ({text})")
    if code == "WRONGTYPE":
        return CorruptRecord(key or "", f"a key has the wrong Redis type ({text})")
    return InternalError(detail=f"Redis at {where} answered: {text}")


@contextmanager
def translated(url: str, key: str | None = None) -> Iterator[None]:
    """Run a block, turning every redis-py error into the catalog's."""
    try:
        yield
    except redis.RedisError as exc:
        raise translate(url, exc, key) from exc
