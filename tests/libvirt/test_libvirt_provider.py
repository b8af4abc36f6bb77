"""The libvirt provider against real QEMU domains (no OS inside) on the session's libvirt host.

The use-cases (register, backup) run on it with a memory catalog and a real vault, as
tests/unit/test_backups.py runs them on the local provider. Blocks change under the running
domains through QEMU's own qemu-io (``Host.write``): there is no guest OS to write them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backup_jobs import errors
from backup_jobs.backups import run_backup
from backup_jobs.inventory import check_registrable, register
from backup_jobs.models import AGENT_VERSION_UNKNOWN, Operation, PowerState, VaultConfig
from backup_jobs.provider import CommitGuard
from backup_jobs.vault import RestoreRequest, Vault, restore
from tests.libvirt.host import URI, Host, virsh
from tests.libvirt.usecases import content, context, libvirt_provider, restored

MiB = 1 << 20
CHUNK = 4 * MiB


@pytest.fixture(scope="module")
def domains(host: Host) -> Iterator[dict[str, str]]:
    """Three no-OS domains: no agent channel, a channel nobody answers, a stopped raw one."""
    made = {
        "bare": host.domain("bare", [host.disk("bare", "64M")]),
        "silent": host.domain("silent", [host.disk("silent", "64M")], channel=True),
        "stopped": host.domain(
            "stopped",
            [host.disk("stopped", "32M"), host.disk("stopped-data", "16M", "raw")],
            start=False,
        ),
    }
    yield made
    for name in made.values():
        host.remove(name)


def test_discovery_lists_the_test_domains_in_their_cloud_service(
    host: Host, domains: dict[str, str], tmp_path: Path
) -> None:
    vms = {vm.name: vm for vm in libvirt_provider(tmp_path).list_vms().vms}

    bare, silent, stopped = (vms[domains[k]] for k in ("bare", "silent", "stopped"))
    assert {bare.cloud_service, silent.cloud_service, stopped.cloud_service} == {host.prefix}
    assert bare.id == f"{host.prefix}/{host.prefix}.bare" and bare.region == "r1"
    assert (bare.power_state, stopped.power_state) == (PowerState.RUNNING, PowerState.STOPPED)
    assert bare.os_disk.name == "vda" and bare.os_disk.size_bytes == 64 * MiB
    assert [(d.name, d.size_bytes) for d in stopped.data_disks] == [("vdb", 16 * MiB)]
    assert bare.nics == 1
    assert bare.agent_version is None and silent.agent_version == AGENT_VERSION_UNKNOWN


def test_register_of_a_domain_without_agent_channel_fails_with_vm_agent_not_installed(
    domains: dict[str, str], tmp_path: Path
) -> None:
    vm = libvirt_provider(tmp_path).get_vm(f"{domains['bare'].split('.')[0]}/{domains['bare']}")
    assert vm is not None

    with pytest.raises(errors.VMAgentNotInstalled):
        check_registrable(vm, VaultConfig("v", "r1", "libvirt", URI), 5)


def test_register_of_a_domain_whose_agent_never_answers_times_out(
    domains: dict[str, str], tmp_path: Path
) -> None:
    vm_id = f"{domains['silent'].split('.')[0]}/{domains['silent']}"
    ctx = context(tmp_path, vm_id, Operation.REGISTER, install_agent_seconds=1)

    with pytest.raises(errors.InstallAgentTimeout):
        register(ctx)

    vm = ctx.provider.get_vm(vm_id)
    assert vm is not None and not vm.extension_installed


def test_a_running_domain_without_agent_gives_a_crash_consistent_snapshot(
    domains: dict[str, str], tmp_path: Path
) -> None:
    provider = libvirt_provider(tmp_path)
    vm_id = f"{domains['bare'].split('.')[0]}/{domains['bare']}"

    snapshot = provider.take_snapshot(vm_id, 60, lambda: None, CommitGuard(1, lambda: None, "v"))
    try:
        assert snapshot.consistency == "CrashConsistent" and snapshot.warnings == ()
        assert snapshot.freeze_seconds is None
        assert [d.name for d in snapshot.disks] == ["vda"] and snapshot.disks[0].tracking
    finally:
        provider.release_snapshot(snapshot)
    assert virsh("domstate", domains["bare"]).strip() == "running"


def test_full_then_incremental_reads_only_changed_blocks_and_each_point_restores(
    host: Host, domains: dict[str, str], tmp_path: Path
) -> None:
    name = domains["silent"]
    vm_id = f"{name.split('.')[0]}/{name}"
    image = host.folder / "silent.qcow2"
    host.write(name, 0x5A, 1 * MiB, 3 * MiB)
    host.write(name, 0x33, 40 * MiB, 2 * MiB)
    first = run_backup(context(tmp_path, vm_id))
    at_first = content(image)
    host.write(name, 0x61, 20 * MiB, 128 << 10)
    second = run_backup(context(tmp_path, vm_id))
    at_second = content(image)

    # The agent channel is there but silent: the freeze fails, the point is crash consistent.
    assert first["consistency"] == second["consistency"] == "CrashConsistent"
    assert first["chunks_read"] == 2 and second["chunks_read"] == 1
    assert virsh("domstate", name).strip() == "running"
    assert restored(tmp_path, first["recovery_point_id"]) == at_first
    assert restored(tmp_path, second["recovery_point_id"]) == at_second != at_first


def test_a_backup_whose_checkpoint_is_gone_reads_the_whole_disk(
    host: Host, domains: dict[str, str], tmp_path: Path
) -> None:
    name = domains["silent"]
    vm_id = f"{name.split('.')[0]}/{name}"
    host.write(name, 0x44, 8 * MiB, MiB)
    run_backup(context(tmp_path, vm_id))
    for checkpoint in virsh("checkpoint-list", name, "--name").split():
        virsh("checkpoint-delete", name, checkpoint)
    host.write(name, 0x45, 12 * MiB, MiB)

    again = run_backup(context(tmp_path, vm_id))

    assert again["chunks_read"] >= 2  # both written chunks read again, not just the changed one
    assert restored(tmp_path, again["recovery_point_id"]) == content(host.folder / "silent.qcow2")


def test_a_stopped_domain_is_read_from_its_image_files_crash_consistent(
    host: Host, domains: dict[str, str], tmp_path: Path
) -> None:
    name = domains["stopped"]
    data = host.folder / "stopped-data.raw"
    with data.open("r+b") as image:
        image.seek(5 * MiB)
        image.write(b"\x7f" * MiB)
    provider = libvirt_provider(tmp_path)
    vm_id = f"{name.split('.')[0]}/{name}"

    snapshot = provider.take_snapshot(vm_id, 60, lambda: None, CommitGuard(1, lambda: None, "v"))
    try:
        reader = provider.open_disk(snapshot, "vdb")
        assert reader.pread(MiB, 5 * MiB) == b"\x7f" * MiB
        reader.close()
        assert snapshot.consistency == "CrashConsistent"
        assert provider.changed_extents(snapshot, "vda", "anything") is None
    finally:
        provider.release_snapshot(snapshot)


def test_restore_as_a_new_vm_defines_a_domain_over_the_restored_disks(
    host: Host, domains: dict[str, str], tmp_path: Path
) -> None:
    name = domains["silent"]
    vm_id = f"{name.split('.')[0]}/{name}"
    host.write(name, 0x11, 2 * MiB, MiB)
    ctx = context(tmp_path, vm_id)
    point = run_backup(ctx)["recovery_point_id"]
    provider = libvirt_provider(tmp_path)
    template = provider.get_vm(vm_id)
    assert template is not None
    staging = provider.restore_staging("job-1")
    restore(Vault.open(tmp_path / "vault"), RestoreRequest(point, staging, staging))
    new_id = f"restored/{host.prefix}.copy"
    host.domains.append(f"{host.prefix}.copy")

    created = provider.create_restored_vm(
        new_id, template, staging, CommitGuard(1, lambda: None, "v"), {"recovery_point": point}
    )
    provider.discard_staging("job-1")

    assert created.id == new_id and created.power_state == PowerState.STOPPED
    assert created.agent_version == AGENT_VERSION_UNKNOWN  # the new domain has an agent channel
    image = Path(created.os_disk.path)
    assert image.suffix == ".qcow2" and content(image) == content(host.folder / "silent.qcow2")
