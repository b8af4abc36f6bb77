"""The ``Client``'s verbs for stopping protection and maintaining the vault (a mixin).

Each returns a job handle: ``stop_protection`` (a StopProtection or DeleteBackupData job),
``resume_protection`` (a ConfigureProtection job), ``prune``, ``verify`` and
``collect_garbage`` (Prune, Verify, GarbageCollect jobs on the vault). What the job would refuse
anyway (an unknown VM, an item that is not protected or not stopped, an unknown policy) is
refused here, before any job exists.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from backup_jobs import maintenance, protection
from backup_jobs.client_base import ClientBase
from backup_jobs.errors import (
    STOPPED_ACTION,
    AmbiguousVMName,
    NotProtected,
    ProtectionNotStopped,
    VMNotFoundInInventory,
)
from backup_jobs.items import ProtectedItem, ProtectionState
from backup_jobs.models import Operation

if TYPE_CHECKING:
    from backup_jobs.client import JobHandle


class MaintenanceVerbs(ClientBase):
    """Stop, resume, prune, verify, collect garbage (mixed into ``Client``)."""

    def stop_protection(self, vm: str, keep_data: bool = True) -> JobHandle:
        """Stop protecting a VM: keep every recovery point (``keep_data``), or delete them all
        and forget the item (the next two GC runs free the space)."""
        if not isinstance(keep_data, bool):
            raise TypeError(f"keep_data is True or False, not {keep_data!r}")
        item = self._item(vm)
        if keep_data and item.state == ProtectionState.STOPPED:
            raise NotProtected(
                item.vm_id, f"protection: {item.state.value} already", STOPPED_ACTION
            )
        operation = Operation.STOP_PROTECTION if keep_data else Operation.DELETE_BACKUP_DATA
        self._record_vault()
        return self._submit(operation, item.vm_id, item.vm_id)

    def resume_protection(self, vm: str, policy: str) -> JobHandle:
        """Put a VM whose protection is stopped back under ``policy``; its next backup builds
        on its newest recovery point."""
        self.policy(policy)
        item = self._item(vm)
        if item.state != ProtectionState.STOPPED:
            raise ProtectionNotStopped(item.vm_id, f"protection: {item.state.value}")
        vm_record = self.catalog.get_vm(self.vault.name, item.vm_id)
        if vm_record is None or vm_record.deleted:
            raise VMNotFoundInInventory(item.vm_id, " to the provider any more: it was deleted.")
        protection.check_protectable(vm_record, self.vault)
        self._record_vault()
        properties = {protection.POLICY: policy, protection.BACKUP_NOW: False, "resume": True}
        return self._submit(Operation.CONFIGURE_PROTECTION, item.vm_id, item.vm_id, properties)

    def prune(self, vm: str | None = None, dry_run: bool = False) -> JobHandle:
        """Apply each protected item's retention (one VM's with ``vm``); ``dry_run`` changes
        nothing and the job's properties list what would be kept and removed, per VM."""
        if not isinstance(dry_run, bool):
            raise TypeError(f"dry_run is True or False, not {dry_run!r}")
        properties = {maintenance.VM: self._vm_id(vm), maintenance.DRY_RUN: dry_run}
        return self._maintain(Operation.PRUNE, maintenance.PRUNE_ITEM, properties)

    def verify(self, vm: str | None = None) -> JobHandle:
        """Re-read and re-hash the vault's chunks (only those of ``vm``'s points) and mark each
        recovery point Verified or Broken."""
        properties = {maintenance.VM: self._vm_id(vm)}
        return self._maintain(Operation.VERIFY, maintenance.VERIFY_ITEM, properties)

    def collect_garbage(self) -> JobHandle:
        """One run of the vault's two-run GC (a chunk is freed by the second run that finds it
        unreferenced)."""
        return self._maintain(Operation.GARBAGE_COLLECT, maintenance.GC_ITEM, {})

    def _maintain(self, operation: Operation, item: str, properties: dict[str, Any]) -> JobHandle:
        self._record_vault()
        shown = {k: v for k, v in properties.items() if v is not None}
        return self._submit(operation, item, self.vault.name, {**shown, "trigger": "on demand"})

    def _vm_id(self, name: str | None) -> str | None:
        """The id of the VM named ``name`` (None: every VM)."""
        return None if name is None else self._resolve(name)

    def _item(self, name: str) -> ProtectedItem:
        """The protected item of the VM named ``name``; ``NotProtected`` if it has none."""
        vm_id = self._resolve(name)
        item = self.catalog.get_item(self.vault.name, vm_id)
        if item is None:
            raise NotProtected(vm_id, "protection: no policy")
        return item

    def _resolve(self, name: str) -> str:
        """A VM id from ``cloud_service/name`` or a unique bare name, among the vault's VMs,
        deleted ones included (a deleted VM keeps its points and its item), and its items."""
        if not isinstance(name, str):
            raise TypeError(f"a VM name is text, not {name!r}")
        known = [vm.id for vm in self.catalog.find_vms(self.vault.name, name)]
        if len(known) == 1:  # looked up directly, O(1) in the vault's size
            return known[0]
        if len(known) > 1:
            raise AmbiguousVMName(name, ", ".join(known))
        # Not a VM the vault knows: an item left without its VM record, or unknown.
        ids = {vm.id for vm in self.catalog.list_vms(self.vault.name)}
        ids.update(item.vm_id for item in self.catalog.list_items(self.vault.name))
        matches = [name] if name in ids else [i for i in ids if i.split("/", 1)[-1] == name]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise AmbiguousVMName(name, ", ".join(sorted(matches)))
        close = difflib.get_close_matches(name, sorted(ids | {i.split("/", 1)[-1] for i in ids}))
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise VMNotFoundInInventory(name or repr(name), f" to the vault.{hint}")
