"""The Restore job: write a recovery point's disks out of the vault (DESIGN §3, §8).

Two ways, as the seed's portal offers them: into a directory (``target``, which must lie
inside the worker's allowed restore root: no ``..``, no symlink leading out, no existing
file overwritten unless asked), or as a new VM of the fleet (``as_new_vm``), which is then
discovered and registered like any other. The job holds the source VM's lease, so a backup of
that VM meanwhile fails ``OperationInProgress`` (or waits for its retry), and the other way
round. Every chunk is verified as it is read; images are sparse where the source was.

Sub-tasks: ``Transfer data from vault`` (bytes, deadline ``RestoreTimeout``), then for a new
VM ``Create VM``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backup_jobs.backups import vault_path
from backup_jobs.context import JobContext
from backup_jobs.errors import (
    BackupJobsError,
    InvalidRestoreTarget,
    RecoveryPointNotFound,
    RestoreTimeout,
)
from backup_jobs.models import VM, SubTask
from backup_jobs.provider import CommitGuard, ProviderConflict, ProviderError
from backup_jobs.steps import ByteProgress, step
from backup_jobs.vault import Manifest, RestoreRequest, Vault, restore

TRANSFER = "Transfer data from vault"
CREATE_VM = "Create VM"
# Job properties a Restore job carries (set by the client).
POINT = "recovery_point_id"
TARGET = "target"
OVERWRITE = "overwrite"
AS_NEW_VM = "as_new_vm"
# What to do when the target's file system refuses the restored images.
TARGET_STORAGE_ACTION = (
    "Free space on (or fix the permissions of) the target's file system, or choose another "
    "target, then start the restore again."
)
NEW_VM_EXISTS_ACTION = "Choose another name for the new VM, or delete the one the fleet has."
NEW_VM_NAME_ACTION = "Choose a valid name for the new VM (`--as-new-vm NAME`)."
# A new VM's name and cloud service each become a folder of the fleet; Azure allows 64.
NEW_VM_NAME_MAX = 64


def check_target_text(target: object) -> str:
    """A restore target as given, checked as text: a non-empty path without ``..``.

    What a client can check; whether it lies inside the restore root is the worker's to say
    (``restore_target``): the root is the worker's setting, and the worker may be elsewhere.
    """
    if not isinstance(target, str | Path):
        raise TypeError(f"a restore target is a path (str or Path), not {target!r}")
    text = str(target)
    if not text.strip() or "\0" in text:
        raise InvalidRestoreTarget(repr(text), "the target is empty or holds a NUL byte")
    if ".." in Path(text).parts:
        raise InvalidRestoreTarget(text, "'..' is not accepted in a restore target")
    return text


def restore_target(target: str | Path, root: Path) -> Path:
    """Where a restore writes: ``target`` inside ``root`` (a relative one is taken under it).

    ``InvalidRestoreTarget`` for ``..`` anywhere, or a path (symlinks followed) leading out.
    """
    path = Path(check_target_text(target))
    absolute = path if path.is_absolute() else root / path
    resolved = absolute.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise InvalidRestoreTarget(
            str(target),
            f"{resolved} is outside the allowed restore root {root.resolve()} "
            "(BACKUP_JOBS_RESTORE_ROOT of the worker)",
        )
    return absolute


def new_vm_id(name: str, source: str) -> str:
    """The id of a VM restored as ``name``: ``cloud_service/name``, else in the source's."""
    parts = name.split("/")
    if len(parts) == 1:
        parts = [source.split("/", 1)[0], name]
    if len(parts) != 2 or not all(_vm_name_part(part) for part in parts):
        raise InvalidRestoreTarget(
            repr(name),
            "a new VM is named NAME or CLOUD_SERVICE/NAME, each of letters, digits, '-', '_' "
            f"and '.', not starting with '.', at most {NEW_VM_NAME_MAX} characters",
            NEW_VM_NAME_ACTION,
        )
    return "/".join(parts)


def _vm_name_part(part: str) -> bool:
    return (
        0 < len(part) <= NEW_VM_NAME_MAX
        and not part.startswith(".")
        and all(c.isalnum() or c in "-_." for c in part)
    )


def run_restore(ctx: JobContext) -> dict[str, Any]:
    """Restore the job's recovery point into its target, or as a new VM."""
    props = ctx.job.properties
    point = str(props[POINT])
    vault, manifest = _point(ctx, point)
    new_vm = props.get(AS_NEW_VM)
    ctx.subtasks[:] = [SubTask(TRANSFER), *([SubTask(CREATE_VM)] if new_vm else [])]
    if not new_vm:
        target = restore_target(str(props[TARGET]), ctx.settings.restore_root)
        files = _transfer(ctx, vault, manifest, target, ctx.settings.restore_root)
        return _result(manifest, files, target=str(target))
    vm_id = new_vm_id(str(new_vm), ctx.job.item)
    if ctx.provider.get_vm(vm_id) is not None:
        raise InvalidRestoreTarget(vm_id, "the fleet has a VM of this name", NEW_VM_EXISTS_ACTION)
    try:
        staging = ctx.provider.restore_staging(ctx.job.id)
    except ProviderError as exc:
        raise InvalidRestoreTarget(vm_id, str(exc), TARGET_STORAGE_ACTION) from exc
    try:
        files = _transfer(ctx, vault, manifest, staging, staging)
        created = _create_vm(ctx, vm_id, manifest, staging)
    finally:
        with contextlib.suppress(ProviderError, OSError):
            ctx.provider.discard_staging(ctx.job.id)
    namesakes = sorted(
        vm.id
        for vm in ctx.catalog.find_vms(ctx.vault.name, created.name)
        if vm.id != created.id and not vm.deleted
    )
    if namesakes:
        ctx.warnings.append(
            f"{created.id} shares its name with {', '.join(namesakes)}: the bare name "
            f"{created.name} is ambiguous from now on; name each as cloud_service/name"
        )
    return _result(manifest, files, new_vm=created.id)


def _point(ctx: JobContext, point: str) -> tuple[Vault, Manifest]:
    """The vault and the recovery point's manifest; it must be a point of the job's VM."""
    vault = Vault.open(vault_path(ctx))
    manifest = vault.manifest(point)
    if manifest.vm != ctx.job.item:
        raise RecoveryPointNotFound(point, f"it is a recovery point of {manifest.vm}")
    return vault, manifest


def _transfer(
    ctx: JobContext, vault: Vault, manifest: Manifest, target: Path, root: Path
) -> list[Path]:
    request = RestoreRequest(
        manifest.id,
        target,
        root,
        overwrite=bool(ctx.job.properties.get(OVERWRITE)),
        progress=ByteProgress(ctx, 0, ctx.settings.timeouts.restore_seconds, _timeout(ctx)),
        should_cancel=ctx.should_cancel,
    )
    with step(ctx, 0):
        try:
            return restore(vault, request)
        except OSError as exc:
            where = Path(exc.filename or "")
            if exc.filename and where.is_relative_to(target):
                detail = f"{where}: {exc.strerror}"
                raise InvalidRestoreTarget(str(target), detail, TARGET_STORAGE_ACTION) from exc
            raise


def _create_vm(ctx: JobContext, vm_id: str, manifest: Manifest, staging: Path) -> VM:
    template = ctx.catalog.get_vm(ctx.vault.name, ctx.job.item) or ctx.provider.get_vm(ctx.job.item)
    if template is None:
        raise InvalidRestoreTarget(vm_id, f"the properties of {ctx.job.item} are not known")
    origin = {"vm": manifest.vm, "recovery_point_id": manifest.id, "job_id": ctx.job.id}
    guard = CommitGuard(ctx.fence.token, ctx.guard, ctx.fence.vault)
    with step(ctx, 1):
        try:
            return ctx.provider.create_restored_vm(vm_id, template, staging, guard, origin)
        except ProviderConflict as exc:
            raise InvalidRestoreTarget(vm_id, str(exc), NEW_VM_EXISTS_ACTION) from exc
        except ProviderError as exc:
            raise InvalidRestoreTarget(vm_id, str(exc), TARGET_STORAGE_ACTION) from exc


def _timeout(ctx: JobContext) -> Callable[[int, int], BackupJobsError]:
    def timeout(done: int, total: int) -> BackupJobsError:
        seconds = ctx.settings.timeouts.restore_seconds
        return RestoreTimeout(ctx.job.item, f"{done} of {total} bytes in {seconds} s")

    return timeout


def _result(manifest: Manifest, files: list[Path], **where: str) -> dict[str, Any]:
    return {
        POINT: manifest.id,
        "consistency": manifest.consistency,
        "restored_bytes": manifest.size_bytes,
        "disks": len(files),
        "files": [str(path) for path in files],
        **where,
    }
