"""Fixtures of the libvirt provider's tests: one host (daemons, scratch folder) per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.libvirt import guest
from tests.libvirt.host import Host, libvirt_host


@pytest.fixture(scope="session")
def host() -> Iterator[Host]:
    with libvirt_host() as found:
        yield found


@pytest.fixture(scope="session")
def agent_guest(host: Host) -> Iterator[guest.Guest]:
    """The session's small Linux guest with a responding agent (booted once, ≈ 7 s under TCG)."""
    reason = guest.missing()
    if reason:
        pytest.skip(reason)
    booted = guest.start_agent_guest(host, host.folder / "agent-guest")
    yield booted
    host.remove(booted.domain)
