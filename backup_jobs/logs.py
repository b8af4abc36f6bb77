"""Structured logs: events named as past-tense facts, with their ids bound once, one line each.

The worker, the tick consumer and beat call ``configure`` once (``workers/signals.py``); then
``get_logger(name)`` loggers render each event as one ``logfmt`` or JSON line (the setting
``BACKUP_JOBS_LOG_FORMAT``) with its time (UTC) and level, written to the process's standard
error (its log file under ``up``), beside Celery's own lines.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from backup_jobs.settings import DEFAULT_LOG_FORMAT

# Fields first on every line, in this order; the rest follow as bound or given.
KEY_ORDER = ["ts", "level", "event", "job", "item", "attempt", "task"]
# A logger with its fields bound (``get_logger``): ``.info(event, **fields)`` and the like.
EventLog = structlog.stdlib.BoundLogger
# The stdlib logger every structured event goes through.
ROOT_LOGGER = "backup_jobs"


def renderer(log_format: str = DEFAULT_LOG_FORMAT) -> structlog.typing.Processor:
    """The processor that turns an event into its line: logfmt (values with spaces, quotes or
    equals signs quoted, quotes and newlines escaped) or one JSON object."""
    if log_format == "json":
        return structlog.processors.JSONRenderer(sort_keys=False)
    return structlog.processors.LogfmtRenderer(key_order=KEY_ORDER, drop_missing=True)


def processors(log_format: str = DEFAULT_LOG_FORMAT) -> list[structlog.typing.Processor]:
    """Every step from a logged event to its line."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        structlog.processors.format_exc_info,
        renderer(log_format),
    ]


def configure(log_format: str = DEFAULT_LOG_FORMAT) -> None:
    """Render structured events in ``log_format`` to standard error, one line each.

    The events go through the stdlib logger ``backup_jobs`` (not propagated: Celery's prefix
    would break a JSON line) with a handler on the real standard error, which Celery does not
    redirect.
    """
    structlog.configure(
        processors=processors(log_format),
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.__stderr__)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger(ROOT_LOGGER)
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def get_logger(name: str, **bound: Any) -> EventLog:
    """A structured logger of ``backup_jobs.<name>`` with ``bound`` fields on every event."""
    logger = structlog.stdlib.get_logger(f"{ROOT_LOGGER}.{name}")
    return logger.bind(**bound) if bound else logger
