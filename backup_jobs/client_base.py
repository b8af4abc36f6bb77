"""What the ``Client``'s mixins (``client_maintenance``, ``client_restore``) rely on.

The ``Client`` provides each of these; declaring them once here lets the mixins be typed
without importing the ``Client`` (which imports them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from backup_jobs.catalog import Catalog
from backup_jobs.models import VM, Listing, Operation, VaultConfig
from backup_jobs.policies import Policy
from backup_jobs.settings import Settings

if TYPE_CHECKING:
    from backup_jobs.client import JobHandle


class ClientBase:
    """The collaborators and the Client's own verbs a mixin may use."""

    catalog: Catalog
    vault: VaultConfig
    settings: Settings

    def _submit(
        self,
        operation: Operation,
        item: str,
        item_name: str,
        properties: dict[str, Any] | None = None,
    ) -> JobHandle:
        raise NotImplementedError  # provided by Client

    def _record_vault(self) -> None:
        raise NotImplementedError  # provided by Client

    def policy(self, name: str) -> Policy:
        raise NotImplementedError  # provided by Client

    def vms(self, registrable: bool = False, include_deleted: bool = False) -> Listing[VM]:
        raise NotImplementedError  # provided by Client
