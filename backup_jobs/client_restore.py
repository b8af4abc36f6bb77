"""The ``Client``'s verbs for recovery points and restores (a mixin).

``recovery_points`` and ``recovery_point`` read the catalog's mirror of a VM's points (a VM
deleted from the fleet keeps its points and is found by name too); ``restore`` starts a Restore
job into a directory under the restore root, or as a new VM of the fleet. What the job would
refuse anyway (an unknown point, a target with ``..``, a new VM's name taken) is refused
here, before any job exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from backup_jobs import inventory, restores, wire
from backup_jobs.client_base import ClientBase
from backup_jobs.errors import CorruptRecord, InvalidRestoreTarget, RecoveryPointNotFound
from backup_jobs.items import RecoveryPointRecord
from backup_jobs.models import Listing, Operation

if TYPE_CHECKING:
    from backup_jobs.client import JobHandle

# ``recovery_point`` and ``restore`` take this for a VM's newest point.
LATEST_POINT = "latest"


def _points_action(vm: str) -> str:
    return f"List its recovery points with `backup-jobs recovery-point list {vm}`."


class RestoreVerbs(ClientBase):
    """Recovery points and restores (mixed into ``Client``)."""

    def recovery_points(self, vm: str) -> Listing[RecoveryPointRecord]:
        """A VM's recovery points, newest first (the catalog's mirror of the vault).

        A VM deleted from the fleet keeps its points: it is found by name too.
        """
        return self.catalog.recovery_points(self.vault.name, self._vm_with_points(vm))

    def recovery_point(self, vm: str, point: str) -> RecoveryPointRecord:
        """One recovery point of a VM by id (``latest``: its newest); ``RecoveryPointNotFound``."""
        if not isinstance(point, str):
            raise TypeError(f"a recovery point id is text, not {point!r}")
        points = self.recovery_points(vm)
        if point.strip().lower() == LATEST_POINT and len(points):
            return points[0]
        found = next((p for p in points if p.id == point), None)
        unreadable = wire.recovery_point_key(self.vault.name, point)
        for problem in points.problems:
            if found is None and problem.key == unreadable:
                raise CorruptRecord(problem.key, problem.reason)
        if found is None:
            newest = ", ".join(p.id for p in points[:3]) or "none yet"
            raise RecoveryPointNotFound(
                repr(point) if not point.strip() else point,
                f"{vm} has no such point; its newest: {newest}",
                _points_action(vm),
            )
        return found

    def restore(
        self,
        vm: str,
        point: str,
        target: str | Path | None = None,
        *,
        as_new_vm: str | None = None,
        overwrite: bool = False,
    ) -> JobHandle:
        """Start a Restore job: the point's disks into ``target``, or as a new VM of the fleet.

        ``target`` must lie inside the restore root of the worker that runs the job (its
        ``BACKUP_JOBS_RESTORE_ROOT``; a relative one is taken under it): the job fails with
        ``InvalidRestoreTarget`` otherwise, writing nothing. Existing files are overwritten only
        with ``overwrite``.
        ``as_new_vm`` (``NAME`` or ``CLOUD_SERVICE/NAME``) creates a VM instead, which is then
        discovered and registered like any other. ``point`` may be ``latest``.
        """
        if (target is None) == (as_new_vm is None):
            raise TypeError("restore takes a target directory or as_new_vm, exactly one of them")
        if not isinstance(overwrite, bool):
            raise TypeError(f"overwrite is True or False, not {overwrite!r}")
        vm_id = self._vm_with_points(vm)
        rp = self.recovery_point(vm_id, point)
        properties: dict[str, Any] = {restores.POINT: rp.id, "consistency": rp.consistency}
        if as_new_vm is not None:
            new_id = restores.new_vm_id(as_new_vm, vm_id)
            if any(not known.deleted for known in self.catalog.find_vms(self.vault.name, new_id)):
                raise InvalidRestoreTarget(
                    new_id, "the vault knows a VM of this name", restores.NEW_VM_EXISTS_ACTION
                )
            properties[restores.AS_NEW_VM] = new_id
        else:
            where = restores.check_target_text(target)  # the worker checks it against its root
            properties.update({restores.TARGET: str(where), restores.OVERWRITE: overwrite})
        self._record_vault()
        return self._submit(Operation.RESTORE, vm_id, vm_id, properties)

    def _vm_with_points(self, vm: str) -> str:
        """The id of the VM called ``vm``, deleted ones included (their points remain)."""
        if not isinstance(vm, str):
            raise TypeError(f"a VM name is text, not {vm!r}")
        return inventory.find_vm(self.catalog, self.vault.name, vm, include_deleted=True).id
