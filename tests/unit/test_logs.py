"""Structured log lines: one per event, ids first, values quoted so that a parser gets them back."""

from __future__ import annotations

import io
import json
import logging
import shlex
import sys
from typing import Any

import pytest

from backup_jobs import logs
from backup_jobs.errors import ConfigurationError
from backup_jobs.settings import Settings


def _line(log_format: str, event: str, **fields: Any) -> str:
    """What ``processors(log_format)`` makes of one event."""
    record: Any = {"event": event, **fields}
    for processor in logs.processors(log_format):
        record = processor(None, "warning", record)
    assert isinstance(record, str)
    return record


AWKWARD = {
    "job": "j-1",
    "item": "cs-app/app 01",
    "reason": 'said "no" = refused',
    "detail": "two\nlines",
}


def test_logfmt_puts_time_level_event_and_ids_first_and_quotes_spaces_quotes_and_equals() -> None:
    line = _line("logfmt", "attempt_failed", code="VMNotRunning", attempt=2, **AWKWARD)

    assert line.startswith("ts=20") and line.split(" ", 3)[1:3] == [
        "level=warning",
        "event=attempt_failed",
    ]
    assert ' job=j-1 item="cs-app/app 01" attempt=2 code=VMNotRunning ' in line
    assert ' reason="said \\"no\\" = refused" ' in line
    # One line per event: a newline in a value is escaped.
    assert line.endswith(" detail=two\\nlines") and "\n" not in line
    parsed = dict(part.split("=", 1) for part in shlex.split(line.rsplit(" detail=", 1)[0]))
    assert parsed["item"] == "cs-app/app 01" and parsed["reason"] == 'said "no" = refused'


def test_json_lines_keep_every_value_as_given() -> None:
    line = _line("json", "attempt_failed", code="VMNotRunning", attempt=2, **AWKWARD)

    event = json.loads(line)
    assert "\n" not in line
    assert {k: event[k] for k in AWKWARD} == AWKWARD
    assert event["event"] == "attempt_failed" and event["attempt"] == 2
    assert event["level"] == "warning" and event["ts"].endswith("Z")


@pytest.mark.parametrize("log_format", ["logfmt", "json"])
def test_configured_loggers_write_one_line_per_event_to_standard_error(
    log_format: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "__stderr__", err)
    logger = logging.getLogger(logs.ROOT_LOGGER)
    saved = (logger.handlers, logger.propagate, logger.level)
    try:
        logs.configure(log_format)
        logs.get_logger("worker", job="j-9", attempt=1).info("job_completed", status="Completed")
    finally:
        logger.handlers, logger.propagate, logger.level = saved
    [line] = err.getvalue().splitlines()
    assert ("job=j-9" in line) if log_format == "logfmt" else json.loads(line)["job"] == "j-9"


def test_the_log_format_setting_takes_logfmt_or_json_only() -> None:
    assert Settings.from_env({}).log_format == "logfmt"
    assert Settings.from_env({"BACKUP_JOBS_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(ConfigurationError, match=r"BACKUP_JOBS_LOG_FORMAT.*logfmt, json"):
        Settings.from_env({"BACKUP_JOBS_LOG_FORMAT": "text"})
