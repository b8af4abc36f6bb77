"""Fixtures of the libvirt provider's tests: one host (daemons, scratch folder) per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.libvirt.host import Host, libvirt_host


@pytest.fixture(scope="session")
def host() -> Iterator[Host]:
    with libvirt_host() as found:
        yield found
