"""Flower's SIGTERM, made to stop it every time (``workers/flowerconfig.py`` installs it).

Flower's own handler calls ``sys.exit(0)`` wherever the signal lands. When it lands inside a
weakref callback (Python runs those on the way out of many operations), the ``SystemExit`` is
printed as "Exception ignored" and dropped: Flower keeps running, and whoever stopped it waits
(seen in CI: ``up``, or a test, waiting 20 s for a Flower that had logged "shutting down").
This handler raises nothing where the signal lands: it asks the event loop to exit, which it
does between callbacks; Flower's ``start`` returns, and its exit hook saves the task history.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from types import FrameType

logger = logging.getLogger(__name__)


def install() -> None:
    """Replace Flower's SIGTERM handler; Flower installs it after reading its config file."""
    import flower.command

    flower.command.sigterm_handler = stop_soon


def stop_soon(signum: int, frame: FrameType | None) -> None:
    """Stop Flower's event loop from a signal handler, safely wherever the signal landed."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        sys.exit(0)  # not serving yet: nothing to save, and no loop to ask
    loop.call_soon_threadsafe(_exit)


def _exit() -> None:
    logger.info("SIGTERM: stopping, saving the task history")  # here, not in the handler
    raise SystemExit(0)  # the loop lets SystemExit through: Flower's start() returns
