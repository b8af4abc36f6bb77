"""The ``libvirt`` provider: the domains of a libvirt URI as the fleet (DESIGN §7).

- Discovery: every domain of ``BACKUP_JOBS_LIBVIRT_URI``; the cloud service is the domain's
  backup-jobs metadata or its name's prefix (``libvirt_domains``); power state; disks from the
  domain XML (the first is the OS disk); the NIC count.
- VM agent: the QEMU guest agent on channel ``org.qemu.guest_agent.0``. No channel: no agent
  (Register fails ``VMAgentNotInstalled``). A channel whose agent has answered ``guest-info``
  reports that version; a channel that has not (yet) answered reports ``unknown``, and the
  install then waits for a ``guest-ping`` answer until the install timeout
  (``InstallAgentTimeout``). The registration marker is kept in the domain's metadata.
- Backup: ``libvirt_backup`` (freeze, pull-mode backup job, checkpoints, stopped domains).
- Restore as a new VM: the staged raw images become qcow2 images under the images directory
  (``BACKUP_JOBS_LIBVIRT_IMAGES_DIR``) and a new persistent domain is defined over them.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from backup_jobs.models import AGENT_VERSION_UNKNOWN, VM, Disk, PowerState
from backup_jobs.provider import (
    CommitGuard,
    Inventory,
    ProviderConflict,
    ProviderError,
    ProviderFenced,
    ProviderStorageError,
    ProviderTimeout,
    Snapshot,
    Unreadable,
)
from backup_jobs.providers.libvirt_api import AgentNoAnswer, AgentNotConfigured, Libvirt
from backup_jobs.providers.libvirt_backup import LibvirtBackups, convert
from backup_jobs.providers.libvirt_domains import (
    DEFAULT_MEMORY_MIB,
    DEFAULT_VCPUS,
    METADATA_PREFIX,
    METADATA_URI,
    BackupMeta,
    DomainDisk,
    group_of,
    installed,
    meta_xml,
    new_domain_xml,
    parse_domain,
    parse_meta,
)
from backup_jobs.vault.source import ImageReader

STAGING = ".staging"
# A guest agent that answers at all answers guest-info within this; discovery waits no longer.
AGENT_QUERY_TIMEOUT_SECONDS = 2
# How often the install asks the agent again while it waits for an answer.
AGENT_RETRY_SECONDS = 0.5


class LibvirtProvider:
    """The provider port over the domains of one libvirt URI."""

    def __init__(
        self,
        uri: str,
        region: str,
        images_dir: Path,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api = Libvirt(uri)
        self.region = region
        self.images_dir = images_dir
        self._sleep = sleep
        self._backups = LibvirtBackups(self.api, self._domain_name)

    # --- discovery ---------------------------------------------------------------------

    def list_vms(self) -> Inventory:
        """Every domain; one that cannot be read is named, not fatal."""
        inventory = Inventory([])
        for name in self.api.domain_names():
            try:
                inventory.vms.append(self._to_vm(name))
            except ProviderError as exc:
                inventory.unreadable.append(Unreadable(None, name, str(exc)))
        return inventory

    def get_vm(self, vm_id: str) -> VM | None:
        """The domain of ``cloud_service/name``, or None if there is none (in that group)."""
        group, _, name = vm_id.partition("/")
        if not name or not self.api.exists(name):
            return None
        vm = self._to_vm(name)
        return vm if vm.cloud_service == group else None

    def _domain_name(self, vm_id: str) -> str:
        vm = self.get_vm(vm_id)
        if vm is None:
            raise ProviderError(f"no domain {vm_id} at {self.api.uri}")
        return vm.name

    def _meta(self, name: str) -> BackupMeta:
        return parse_meta(self.api.metadata(name, METADATA_URI))

    def _to_vm(self, name: str) -> VM:
        view = parse_domain(self.api.xml(name))
        meta = self._meta(name)
        running = self.api.is_running(name)
        disks = [Disk(d.target, self._capacity(name, d), d.path) for d in view.disks]
        return VM(
            name=name,
            cloud_service=group_of(name, meta),
            region=meta.region or self.region,
            power_state=PowerState.RUNNING if running else PowerState.STOPPED,
            os_type=meta.os_type or "Linux",
            agent_version=self._agent_version(name, running, view.agent_channel, meta),
            nics=view.nics,
            os_disk=disks[0] if disks else Disk("os", 0),
            data_disks=tuple(disks[1:]),
            extension_installed=meta.extension is not None,
        )

    def _capacity(self, name: str, disk: DomainDisk) -> int:
        try:
            return self.api.capacity(name, disk.target)
        except ProviderError:  # a stopped domain's missing image: its size is unknown
            return 0

    def _agent_version(
        self, name: str, running: bool, channel: bool, meta: BackupMeta
    ) -> str | None:
        """The agent's version: asked when it is connected, else the last one recorded."""
        if not channel:
            return None
        recorded = meta.extension.agent_version if meta.extension else None
        if running:
            with contextlib.suppress(ProviderError):
                info = self.api.agent(name, "guest-info", AGENT_QUERY_TIMEOUT_SECONDS)
                if isinstance(info, dict) and info.get("version"):
                    return str(info["version"])
        return recorded or AGENT_VERSION_UNKNOWN

    # --- registration ------------------------------------------------------------------

    def install_extension(
        self,
        vm_id: str,
        timeout_seconds: float,
        heartbeat: Callable[[], None],
        guard: CommitGuard,
    ) -> None:
        """Wait for the guest agent to answer ``guest-ping``, then record the marker."""
        name = self._domain_name(vm_id)
        deadline = time.monotonic() + timeout_seconds
        while True:
            heartbeat()
            try:
                self.api.agent(name, "guest-ping", max(1, int(deadline - time.monotonic())))
                break
            except AgentNotConfigured as exc:
                raise ProviderError(f"{vm_id} has no guest agent channel") from exc
            except AgentNoAnswer as exc:
                if time.monotonic() >= deadline:
                    raise ProviderTimeout(
                        f"the guest agent of {vm_id} did not answer within {timeout_seconds} s"
                    ) from exc
            self._sleep(min(AGENT_RETRY_SECONDS, max(0.0, deadline - time.monotonic())))
        info = self.api.agent(name, "guest-info", AGENT_QUERY_TIMEOUT_SECONDS)
        version = str(info.get("version")) if isinstance(info, dict) else None
        guard.check()
        meta = self._meta(name)
        seen = meta.extension.tokens.get(guard.scope, 0) if meta.extension else 0
        if seen > guard.token:
            raise ProviderFenced(f"{vm_id}: token {guard.token} of vault {guard.scope} < {seen}")
        updated = installed(meta, version, guard.scope, guard.token)
        self.api.set_metadata(name, meta_xml(updated), METADATA_PREFIX, METADATA_URI)

    # --- backup --------------------------------------------------------------------------

    def take_snapshot(
        self,
        vm_id: str,
        timeout_seconds: float,
        heartbeat: Callable[[], None],
        guard: CommitGuard,
    ) -> Snapshot:
        """Freeze through the agent if it answers, start a pull backup job, thaw."""
        heartbeat()
        return self._backups.take(vm_id, guard)

    def open_disk(self, snapshot: Snapshot, disk: str) -> ImageReader:
        """A reader of one disk as the snapshot saw it (an NBD export, or an image file)."""
        return self._backups.open_disk(snapshot, disk)

    def changed_extents(
        self, snapshot: Snapshot, disk: str, since: str
    ) -> list[tuple[int, int]] | None:
        """The dirty blocks since checkpoint ``since``, if the backup job is incremental from it."""
        return self._backups.changed(snapshot, disk, since)

    def release_snapshot(self, snapshot: Snapshot) -> None:
        """End the backup job."""
        self._backups.release(snapshot)

    # --- restore as a new VM -------------------------------------------------------------

    def restore_staging(self, key: str) -> Path:
        """An empty folder under the images directory for the restored raw images."""
        folder = self.images_dir / STAGING / key
        shutil.rmtree(folder, ignore_errors=True)
        try:
            folder.mkdir(parents=True)
        except OSError as exc:
            raise ProviderStorageError(f"{folder}: {exc.strerror}") from exc
        return folder

    def discard_staging(self, key: str) -> None:
        """Remove a staging folder (idempotent)."""
        shutil.rmtree(self.images_dir / STAGING / key, ignore_errors=True)

    def create_restored_vm(
        self, vm_id: str, template: VM, staging: Path, guard: CommitGuard, origin: dict[str, str]
    ) -> VM:
        """Convert the staged images to qcow2 and define a domain over them."""
        group, _, name = vm_id.partition("/")
        if self.api.exists(name):
            raise ProviderConflict(f"{self.api.uri} has a domain {name} already")
        folder = self.images_dir / name
        disks = self._place_disks(template, staging, folder)
        memory_kib, vcpus = self._size_of(template.name)
        guard.check()
        try:
            self.api.define(new_domain_xml(name, disks, memory_kib, vcpus))
        except ProviderError:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        meta = BackupMeta(group, template.region, template.os_type, None, origin)
        self.api.set_metadata(name, meta_xml(meta), METADATA_PREFIX, METADATA_URI)
        return self._to_vm(name)

    def _place_disks(self, template: VM, staging: Path, folder: Path) -> list[DomainDisk]:
        """Each staged ``<disk>.img`` as ``<folder>/<disk>.qcow2`` (checkpoints need qcow2)."""
        if folder.exists():
            raise ProviderConflict(f"{folder} exists already")
        folder.mkdir(parents=True)
        disks = []
        try:
            for disk in (template.os_disk, *template.data_disks):
                target = folder / f"{disk.name}.qcow2"
                convert(staging / f"{disk.name}.img", "raw", target, "qcow2")
                disks.append(DomainDisk(disk.name, str(target), "qcow2"))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return disks

    def _size_of(self, source: str) -> tuple[int, int]:
        """The memory (KiB) and vCPUs of the source domain if it is still there, else defaults."""
        if self.api.exists(source):
            view = parse_domain(self.api.inactive_xml(source))
            return view.memory_kib, view.vcpus
        return DEFAULT_MEMORY_MIB * 1024, DEFAULT_VCPUS
