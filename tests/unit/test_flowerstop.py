"""Flower's SIGTERM stops its loop even when it lands inside a weakref callback."""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import weakref
from pathlib import Path

import flower.command
import pytest

# Loaded from its file: importing the ``workers`` package builds the Celery app, which needs a
# server (this module itself needs none).
_SPEC = importlib.util.spec_from_file_location(
    "flowerstop", Path(__file__).resolve().parents[2] / "workers" / "flowerstop.py"
)
assert _SPEC is not None and _SPEC.loader is not None
flowerstop = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(flowerstop)


class _Thing:
    pass


def _deliver_inside_a_weakref_callback() -> None:
    """Run the handler where Python ignores exceptions: a weakref's callback."""
    thing = _Thing()
    ref = weakref.ref(thing, lambda _: flower.command.sigterm_handler(signal.SIGTERM, None))
    del thing  # the callback runs here
    assert ref() is None


def test_a_sigterm_landing_in_a_weakref_callback_still_stops_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(flower.command, "sigterm_handler", flower.command.sigterm_handler)
    flowerstop.install()
    loop = asyncio.new_event_loop()
    stopped_by_the_guard = []
    loop.call_soon(_deliver_inside_a_weakref_callback)
    loop.call_later(5, lambda: (stopped_by_the_guard.append(True), loop.stop()))
    try:
        with pytest.raises(SystemExit):
            loop.run_forever()
    finally:
        loop.close()

    assert not stopped_by_the_guard


def test_a_sigterm_before_the_loop_runs_exits_at_once() -> None:
    with pytest.raises(SystemExit):
        flowerstop.stop_soon(signal.SIGTERM, None)
