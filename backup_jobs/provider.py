"""The provider port: the adapter to the machines being protected (DESIGN §7).

Providers raise ``ProviderError`` subclasses, which are not user-facing: the use-case that
called them maps each to the catalog error for its operation (a failed listing is a
``DiscoveryInternalError``, a slow install an ``InstallAgentTimeout``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from backup_jobs.models import VM


class ProviderError(Exception):
    """Raised when the provider fails internally (its API, its agent, its storage)."""


class ProviderTimeout(ProviderError):
    """Raised when a provider step did not finish before its deadline."""


class Provider(Protocol):
    """Lists and acts on the VMs of one fleet."""

    def list_vms(self) -> list[VM]:
        """Every VM of the fleet, with the properties registration checks."""
        ...

    def get_vm(self, vm_id: str) -> VM | None:
        """One VM by ``cloud_service/name``, or None if it is gone."""
        ...

    def install_extension(
        self, vm_id: str, timeout_seconds: float, heartbeat: Callable[[], None]
    ) -> None:
        """Install the backup extension through the VM agent; ``ProviderTimeout`` past the deadline.

        ``heartbeat`` is called at least every second while the install runs, so the caller can
        keep its lease and notice cancellation.
        """
        ...
