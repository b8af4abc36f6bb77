"""Registration checks, name resolution and discovery, on in-memory adapters."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from backup_jobs import errors, inventory, jobs, wire
from backup_jobs.context import JobContext
from backup_jobs.models import (
    VM,
    Disk,
    JobStatus,
    Operation,
    PowerState,
    RegistrationState,
    VaultConfig,
)
from backup_jobs.provider import ProviderStorageError, Unreadable
from backup_jobs.settings import Settings
from backup_jobs.testing import FrozenClock, MemoryCatalog, MemoryProvider

VAULT = VaultConfig("v", "r1", "local", "/fleet")
HEALTHY = VM("web01", "cs1", "r1", agent_version="2.7.0.0")


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"region": "r2"}, errors.RegionMismatch),
        ({"power_state": PowerState.STOPPED}, errors.VMNotRunning),
        ({"data_disks": tuple(Disk(f"d{i}", 1) for i in range(6))}, errors.DataDiskLimitExceeded),
        ({"storage_tier": "Premium"}, errors.UnsupportedConfiguration),
        ({"nics": 2}, errors.UnsupportedConfiguration),
        ({"load_balancer": True}, errors.UnsupportedConfiguration),
        ({"agent_version": None}, errors.VMAgentNotInstalled),
        ({"agent_version": "2.6.1198.717"}, errors.GuestAgentCertificateNotFound),
    ],
)
def test_each_unregistrable_vm_gets_its_seed_error(
    changes: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        inventory.check_registrable(replace(HEALTHY, **changes), VAULT, max_data_disks=5)


def test_unsupported_configuration_names_everything_found() -> None:
    vm = replace(HEALTHY, storage_tier="Premium", nics=3, load_balancer=True)

    with pytest.raises(errors.UnsupportedConfiguration) as raised:
        inventory.check_registrable(vm, VAULT, max_data_disks=5)

    assert "premium storage, multiple NICs (3), load balancer" in raised.value.message


def test_five_data_disks_and_the_minimum_agent_are_accepted() -> None:
    vm = replace(
        HEALTHY, data_disks=tuple(Disk(f"d{i}", 1) for i in range(5)), agent_version="2.6.1198.718"
    )

    inventory.check_registrable(vm, VAULT, max_data_disks=5)


def test_version_comparison_is_numeric_not_textual() -> None:
    assert inventory.version_tuple("2.10.0.0") > inventory.version_tuple("2.9.9999.9999")


def test_resolve_accepts_unique_bare_names_and_refuses_ambiguous_ones() -> None:
    vms = [HEALTHY, VM("db01", "cs1", "r1"), VM("db01", "cs2", "r1")]

    assert inventory.resolve_vm(vms, "web01") is HEALTHY
    assert inventory.resolve_vm(vms, "cs2/db01").cloud_service == "cs2"
    with pytest.raises(errors.AmbiguousVMName, match="cs1/db01, cs2/db01"):
        inventory.resolve_vm(vms, "db01")
    with pytest.raises(errors.VMNotFoundInInventory, match="Did you mean: web01"):
        inventory.resolve_vm(vms, "web1")


def test_deleted_vms_do_not_resolve() -> None:
    with pytest.raises(errors.VMNotFoundInInventory):
        inventory.resolve_vm([replace(HEALTHY, deleted=True)], "web01")


def _context(
    catalog: MemoryCatalog, provider: MemoryProvider, operation: Operation, item: str
) -> JobContext:
    clock = FrozenClock(datetime(2026, 1, 1, tzinfo=UTC))
    job = jobs.new_job("v", operation, item, item, 3, clock)
    catalog.create_job(job, clock.now())
    started = jobs.begin_attempt(catalog, job.id, 1, "t", 60, 900, clock)
    assert started is not None
    return JobContext(
        started.job,
        started.fence,
        VAULT,
        catalog,
        provider,
        Settings(),
        lambda: None,
        started_vm=started.vm,
    )


def test_discovery_keeps_registration_state_and_marks_vanished_vms_deleted() -> None:
    catalog, provider = MemoryCatalog(), MemoryProvider([HEALTHY, VM("gone", "cs1", "r1")])
    catalog.put_vm("v", HEALTHY)
    catalog.put_vm_state("v", replace(HEALTHY, registration=RegistrationState.REGISTERED))
    del provider.vms["cs1/gone"]
    catalog.put_vm("v", VM("gone", "cs1", "r1"))

    result = inventory.discover(_context(catalog, provider, Operation.DISCOVERY, "vault"))

    assert result == {"vms": 1, "new": 0, "deleted": 1, "skipped": 0}
    assert catalog.get_vm("v", "cs1/web01").registration == RegistrationState.REGISTERED  # type: ignore[union-attr]
    assert catalog.get_vm("v", "cs1/gone").deleted  # type: ignore[union-attr]


def test_provider_failure_during_discovery_is_a_discovery_internal_error() -> None:
    provider = MemoryProvider([HEALTHY])
    provider.fail_listing = True

    with pytest.raises(errors.DiscoveryInternalError):
        inventory.discover(_context(MemoryCatalog(), provider, Operation.DISCOVERY, "vault"))


def test_register_installs_the_extension_and_the_vm_is_registered_with_the_job_s_end() -> None:
    catalog, provider = MemoryCatalog(), MemoryProvider([HEALTHY])
    catalog.put_vm("v", HEALTHY)
    ctx = _context(catalog, provider, Operation.REGISTER, HEALTHY.id)

    result = inventory.register(ctx)
    running = catalog.get_vm("v", HEALTHY.id)
    done = jobs.complete(
        catalog, jobs.Started(ctx.job, ctx.fence), result, ctx.clock, (), ctx.settled[0]
    )

    assert provider.installed == [HEALTHY.id]
    assert running is not None and running.registration == RegistrationState.REGISTERING
    assert done.status == JobStatus.COMPLETED
    registered = catalog.get_vm("v", HEALTHY.id)
    assert registered is not None and registered.registration == RegistrationState.REGISTERED
    assert registered.last_job_id == ctx.job.id


class _CountingCatalog(MemoryCatalog):
    """Counts the VM reads made outside an attempt's start."""

    def __init__(self) -> None:
        super().__init__()
        self.vm_reads = 0

    def get_vm(self, vault: str, vm_id: str) -> VM | None:
        self.vm_reads += 1
        return super().get_vm(vault, vm_id)


def test_register_uses_the_vm_record_its_start_read_and_reads_none_of_its_own() -> None:
    catalog, provider = _CountingCatalog(), MemoryProvider([HEALTHY])
    catalog.put_vm("v", HEALTHY)
    catalog.put_vm_state("v", replace(HEALTHY, registration=RegistrationState.REGISTERED))
    ctx = _context(catalog, provider, Operation.REGISTER, HEALTHY.id)
    reads = catalog.vm_reads

    with pytest.raises(errors.AlreadyRegistered):
        inventory.register(ctx)

    assert ctx.started_vm is not None and catalog.vm_reads == reads
    assert provider.installed == []


def test_an_attempt_on_the_vault_reads_no_vm_at_its_start() -> None:
    ctx = _context(MemoryCatalog(), MemoryProvider([]), Operation.DISCOVERY, "vault")

    assert ctx.started_vm is None


def test_a_register_fenced_out_at_its_end_leaves_the_vm_state_to_the_reaper() -> None:
    catalog, provider = MemoryCatalog(), MemoryProvider([HEALTHY])
    catalog.put_vm("v", HEALTHY)
    ctx = _context(catalog, provider, Operation.REGISTER, HEALTHY.id)
    result = inventory.register(ctx)
    catalog.invalidate_fence("v", HEALTHY.id)  # the reaper took the attempt over

    jobs.complete(catalog, jobs.Started(ctx.job, ctx.fence), result, ctx.clock, (), ctx.settled[0])

    record = catalog.get_vm("v", HEALTHY.id)
    assert record is not None and record.registration == RegistrationState.REGISTERING
    assert catalog.get_job(ctx.job.id).status == JobStatus.IN_PROGRESS  # type: ignore[union-attr]


def test_register_timeout_is_install_agent_timeout_and_rolls_the_vm_back() -> None:
    catalog, provider = MemoryCatalog(), MemoryProvider([HEALTHY])
    catalog.put_vm("v", HEALTHY)
    provider.install_hangs = True
    ctx = _context(catalog, provider, Operation.REGISTER, HEALTHY.id)

    with pytest.raises(errors.InstallAgentTimeout) as raised:
        inventory.register(ctx)
    inventory.register_failed(catalog, ctx.job, ctx.fence, raised.value)

    record = catalog.get_vm("v", HEALTHY.id)
    assert record is not None and record.registration == RegistrationState.NOT_REGISTERED
    assert record.last_error is not None and record.last_error["code"] == "InstallAgentTimeout"
    assert ctx.job.status == JobStatus.IN_PROGRESS


def test_retry_of_a_register_that_already_succeeded_completes_instead_of_failing() -> None:
    catalog, provider = MemoryCatalog(), MemoryProvider([HEALTHY])
    catalog.put_vm("v", HEALTHY)
    ctx = _context(catalog, provider, Operation.REGISTER, HEALTHY.id)
    inventory.register(ctx)
    # Recorded Registered by this job, which is not recorded Completed (as an older version,
    # which wrote the two apart, left a worker that died between them).
    catalog.put_vm_state("v", ctx.settled[0], ctx.fence)

    again = inventory.register(replace(ctx, started_vm=None))  # read now, as a retry's start

    assert again["registration"] == "Registered"
    assert provider.installed == [HEALTHY.id]
    catalog.release_lock("v", HEALTHY.id, ctx.job.id)
    other = _context(catalog, provider, Operation.REGISTER, HEALTHY.id)
    with pytest.raises(errors.AlreadyRegistered):
        inventory.register(other)


def test_discovery_skips_a_vm_the_provider_cannot_read_with_a_warning_never_as_deleted() -> None:
    catalog, provider = MemoryCatalog(), MemoryProvider([HEALTHY])
    catalog.put_vm("v", VM("broken", "cs1", "r1"))
    provider.unreadable = [Unreadable("cs1/broken", "/fleet/cs1/broken/vm.json", "field 'nics'")]
    ctx = _context(catalog, provider, Operation.DISCOVERY, "vault")

    result = inventory.discover(ctx)

    assert result == {"vms": 1, "new": 1, "deleted": 0, "skipped": 1}
    assert not catalog.get_vm("v", "cs1/broken").deleted  # type: ignore[union-attr]
    assert ctx.warnings == ["/fleet/cs1/broken/vm.json: field 'nics'; the VM was skipped."]


def test_discovery_rewrites_unreadable_vm_records_from_the_provider() -> None:
    installed = replace(HEALTHY, extension_installed=True)
    catalog, provider = MemoryCatalog(), MemoryProvider([installed, VM("app01", "cs1", "r1")])
    catalog.put_vm("v", installed)
    catalog.records[wire.vm_state_key("v", HEALTHY.id)] = "{garbage"
    catalog.records[wire.vm_key("v", "cs1/app01")] = "[]"
    catalog.put_vm_state("v", VM("app01", "cs1", "r1"))
    ctx = _context(catalog, provider, Operation.DISCOVERY, "vault")

    inventory.discover(ctx)

    listing = catalog.list_vms("v")
    assert listing.problems == []
    assert {vm.id: vm.registration for vm in listing} == {
        "cs1/app01": RegistrationState.NOT_REGISTERED,
        "cs1/web01": RegistrationState.REGISTERED,
    }
    assert any("rewritten as Registered" in warning for warning in ctx.warnings)


def test_register_commits_nothing_once_its_lease_is_gone() -> None:
    catalog, provider = MemoryCatalog(), MemoryProvider([HEALTHY])
    catalog.put_vm("v", HEALTHY)
    ctx = _context(catalog, provider, Operation.REGISTER, HEALTHY.id)

    def lease_gone() -> None:
        raise errors.LeaseLost(HEALTHY.id)

    with pytest.raises(errors.LeaseLost):
        inventory.register(replace(ctx, guard=lease_gone))

    assert provider.installed == []


def test_register_maps_a_full_fleet_disk_to_a_retryable_fleet_storage_error() -> None:
    catalog = MemoryCatalog()
    catalog.put_vm("v", HEALTHY)

    class FullDisk(MemoryProvider):
        def install_extension(self, *args: object) -> None:
            raise ProviderStorageError("/fleet/cs1/web01/vm.json.tmp: No space left on device")

    ctx = _context(catalog, FullDisk([HEALTHY]), Operation.REGISTER, HEALTHY.id)
    with pytest.raises(errors.FleetStorageError) as raised:
        inventory.register(ctx)

    assert raised.value.retryable and "No space left on device" in raised.value.message
    assert "vm.json.tmp" in raised.value.message


def test_a_provider_minimum_agent_version_replaces_the_seeds_and_is_named() -> None:
    qemu_ga = replace(HEALTHY, agent_version="7.2.15")

    inventory.check_registrable(qemu_ga, VAULT, max_data_disks=5, min_agent_version="2.5")
    with pytest.raises(errors.GuestAgentCertificateNotFound) as raised:
        inventory.check_registrable(qemu_ga, VAULT, max_data_disks=5, min_agent_version="8.0")

    assert "VM agent 7.2.15 is older than 8.0" in raised.value.message
    assert "(8.0 or higher)" in raised.value.recommended_action
