"""The local provider: fleet files, malformed vm.json, faults consumed as they fire."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backup_jobs.errors import (
    AmbiguousVMName,
    ConfigurationError,
    LeaseLost,
    VMNotFoundInInventory,
)
from backup_jobs.models import PowerState
from backup_jobs.provider import CommitGuard, ProviderError, ProviderFenced, ProviderTimeout
from backup_jobs.providers.local import MAX_DISK_BYTES, LocalFleet, LocalProvider, agent_version
from backup_jobs.providers.local_demo import DEMO_VMS, create_demo_fleet
from backup_jobs.providers.local_faults import Fault

GUARD = CommitGuard(1, lambda: None, "v")


def test_demo_fleet_has_a_vm_for_every_seed_row_with_sparse_disks(tmp_path: Path) -> None:
    fleet = create_demo_fleet(tmp_path, "r1")
    vms = {vm.id: vm for vm in LocalProvider(fleet).list_vms().vms}

    assert len(vms) == len(DEMO_VMS)
    assert vms["cs-app/stopped01"].power_state == PowerState.STOPPED
    assert len(vms["cs-db/disks06"].data_disks) == 6
    assert vms["cs-far/remote01"].region != "r1"
    assert {vms["cs-web/shared01"].name, vms["cs-db/shared01"].name} == {"shared01"}
    image = Path(vms["cs-app/app01"].os_disk.path)
    assert image.stat().st_size == 64 << 20
    assert image.stat().st_blocks * 512 < 1 << 20  # sparse
    assert image.read_bytes()[:12] == b"cs-app/app01"


@pytest.mark.parametrize(
    ("mangle", "expected"),
    [
        (lambda d: d.pop("region"), "field 'region' is missing"),
        (lambda d: d.update(nics="two"), "field 'nics' has the wrong type"),
        (lambda d: d.update(power_state="Paused"), "'power_state' must be Running or Stopped"),
        (lambda d: d.update(agent_version="garbage"), "field 'agent_version' is 'garbage'"),
        (lambda d: d.update(agent_version="2.6.x"), "2 to 4 dot-separated integers"),
    ],
)
def test_malformed_vm_json_is_skipped_by_the_listing_naming_the_file_and_the_field(
    tmp_path: Path, mangle, expected: str
) -> None:  # type: ignore[no-untyped-def]
    fleet = create_demo_fleet(tmp_path, "r1")
    path = tmp_path / "cs-app" / "app01" / "vm.json"
    data = json.loads(path.read_text())
    mangle(data)
    path.write_text(json.dumps(data))

    inventory = LocalProvider(fleet).list_vms()
    with pytest.raises(ConfigurationError) as raised:
        fleet.load(path)

    [bad] = inventory.unreadable
    assert bad.vm_id == "cs-app/app01" and bad.where == str(path) and expected in bad.reason
    assert len(inventory.vms) == len(DEMO_VMS) - 1
    assert str(path) in raised.value.message and expected in raised.value.message


def test_unparseable_vm_json_and_a_missing_disk_image_are_named_not_fatal(tmp_path: Path) -> None:
    fleet = create_demo_fleet(tmp_path, "r1")
    (tmp_path / "cs-app" / "app01" / "vm.json").write_text("{not json")
    (tmp_path / "cs-web" / "web01" / "os.img").unlink()

    inventory = LocalProvider(fleet).list_vms()

    reasons = {bad.vm_id: bad.reason for bad in inventory.unreadable}
    assert "cannot be read as JSON" in reasons["cs-app/app01"]
    assert "os.img is missing" in reasons["cs-web/web01"]
    assert len(inventory.vms) == len(DEMO_VMS) - 2


def test_faults_fire_for_their_vm_and_count_down(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path)
    fleet.faults.add(Fault("install-agent-timeout", vm="cs/a", times=2))

    assert fleet.faults.consume("install-agent-timeout", "cs/b") is None
    assert fleet.faults.consume("install-agent-timeout", "cs/a") is not None
    assert fleet.faults.armed()[0].times == 1
    assert fleet.faults.consume("install-agent-timeout", "cs/a") is not None
    assert fleet.faults.armed() == []


def test_unknown_fault_kind_lists_the_accepted_kinds(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="discovery-internal-error"):
        LocalFleet(tmp_path).faults.add(Fault("disk-on-fire"))


@pytest.mark.parametrize(
    ("fault", "named"),
    [
        (Fault("discovery-slow", vm="cs/a"), "not on one VM"),
        (Fault("install-slow", seconds=float("nan")), "seconds nan"),
        (Fault("install-slow", seconds=float("inf")), "seconds inf"),
        (Fault("install-slow", seconds=-1.0), "seconds -1.0"),
        (Fault("install-slow", seconds=1e12), "outside 0 to 86400"),
        (Fault("install-slow", times=10**12), "times 1000000000000"),
        (Fault("install-slow", times=0), "times 0"),
    ],
)
def test_a_fault_out_of_range_is_refused_naming_the_value(
    tmp_path: Path, fault: Fault, named: str
) -> None:
    faults = LocalFleet(tmp_path).faults
    with pytest.raises(ConfigurationError, match=re.escape(named)):
        faults.add(fault)
    assert faults.armed() == []


def test_injected_discovery_error_and_install_hang(tmp_path: Path) -> None:
    fleet = create_demo_fleet(tmp_path, "r1")
    provider = LocalProvider(fleet)
    fleet.faults.add(Fault("discovery-internal-error"))

    with pytest.raises(ProviderError):
        provider.list_vms()
    assert provider.list_vms().vms
    with pytest.raises(ProviderTimeout):
        provider.install_extension("cs-app/hung01", 0.3, lambda: None, GUARD)
    provider.install_extension("cs-app/hung01", 0.3, lambda: None, GUARD)
    assert fleet.read("cs-app/hung01")["extension"]["installed"] is True


def test_an_install_is_committed_only_if_the_guard_allows_and_the_token_is_not_older(
    tmp_path: Path,
) -> None:
    fleet = create_demo_fleet(tmp_path, "r1")
    provider = LocalProvider(fleet)

    def lost() -> None:
        raise LeaseLost("cs-app/app01")

    def install(token: int, vault: str = "v1", check: Callable[[], None] = lambda: None) -> None:
        provider.install_extension(
            "cs-app/app01", 5, lambda: None, CommitGuard(token, check, vault)
        )

    with pytest.raises(LeaseLost):
        install(7, check=lost)
    assert fleet.read("cs-app/app01")["extension"]["installed"] is False
    install(7)
    with pytest.raises(ProviderFenced):  # a frozen worker with an older token resumes
        install(6)
    install(2, "v2")  # another vault counts its own tokens: not fenced by v1's
    with pytest.raises(ProviderFenced):
        install(1, "v2")
    assert fleet.read("cs-app/app01")["extension"]["fencing_tokens"] == {"v1": 7, "v2": 2}


def test_admin_verbs_change_the_vm(tmp_path: Path) -> None:
    fleet = create_demo_fleet(tmp_path, "r1")

    fleet.update("cs-app/app01", power_state="Stopped", agent_version=None)
    fleet.add_data_disks("cs-app/app01", 2)
    fleet.delete_vm("cs-web/web01")

    vm = LocalProvider(fleet).get_vm("cs-app/app01")
    assert vm is not None and vm.power_state == PowerState.STOPPED and vm.agent_version is None
    assert len(vm.data_disks) == 2
    assert LocalProvider(fleet).get_vm("cs-web/web01") is None
    with pytest.raises(VMNotFoundInInventory):
        fleet.read("cs-web/web01")


def test_missing_fleet_directory_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="fleet create-demo"):
        LocalProvider(LocalFleet(tmp_path / "none")).list_vms()


@pytest.mark.parametrize("version", ["2.6", "2.6.1198", "2.6.1198.718", "10.0.0.1"])
def test_an_agent_version_is_two_to_four_dot_separated_integers(version: str) -> None:
    assert agent_version(version) == version


@pytest.mark.parametrize(
    "version", ["garbage", "2", "1.2.3.4.5", "2.6.x", "2..6", " 2.6", "٢.٦", "1" * 40 + ".2"]
)
def test_anything_else_is_refused_as_an_agent_version(version: str) -> None:
    with pytest.raises(ConfigurationError, match="2 to 4 dot-separated integers"):
        agent_version(version)


@pytest.mark.parametrize("size_bytes", [0, -1, MAX_DISK_BYTES + 1, 99999999999999 << 20])
def test_a_disk_size_out_of_range_is_refused_before_any_file_is_made(
    tmp_path: Path, size_bytes: int
) -> None:
    fleet = create_demo_fleet(tmp_path, "r1")
    before = sorted((tmp_path / "cs-app" / "app01").iterdir())

    with pytest.raises(ConfigurationError, match="out of range"):
        fleet.add_data_disks("cs-app/app01", 1, size_bytes)

    assert sorted((tmp_path / "cs-app" / "app01").iterdir()) == before


def test_disks_added_before_a_failed_one_are_removed_and_vm_json_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = create_demo_fleet(tmp_path, "r1")
    folder = tmp_path / "cs-app" / "app01"
    before = (sorted(folder.iterdir()), (folder / "vm.json").read_text())
    real = LocalFleet._add_disk
    calls = []

    def second_fails(self: LocalFleet, data: dict[str, Any], *args: Any) -> None:
        calls.append(args)
        if len(calls) == 2:
            raise ConfigurationError(detail="disk full")
        real(self, data, *args)

    monkeypatch.setattr(LocalFleet, "_add_disk", second_fails)

    with pytest.raises(ConfigurationError, match="disk full"):
        fleet.add_data_disks("cs-app/app01", 3)

    assert (sorted(folder.iterdir()), (folder / "vm.json").read_text()) == before


def test_fleet_verbs_take_a_bare_name_that_is_unique_in_the_fleet(tmp_path: Path) -> None:
    fleet = create_demo_fleet(tmp_path, "r1")

    stopped = fleet.update("app01", power_state="Stopped")
    fleet.add_data_disks("web01", 1)
    deleted = fleet.delete_vm("noagent01")

    assert (stopped["cloud_service"], stopped["power_state"]) == ("cs-app", "Stopped")
    assert len(fleet.read("cs-web/web01")["disks"]) == 2
    assert deleted == "cs-app/noagent01" and not (tmp_path / "cs-app" / "noagent01").exists()


def test_a_bare_name_in_two_cloud_services_is_refused_naming_the_choices(tmp_path: Path) -> None:
    fleet = create_demo_fleet(tmp_path, "r1")

    with pytest.raises(AmbiguousVMName, match="cs-db/shared01, cs-web/shared01"):
        fleet.update("shared01", power_state="Stopped")


@pytest.mark.parametrize("name", ["app1", "cs-app/app1", "nosuch", "cs-app/../cs-app/app01"])
def test_an_unknown_fleet_vm_advises_fleet_list_not_discovery(tmp_path: Path, name: str) -> None:
    fleet = create_demo_fleet(tmp_path, "r1")

    with pytest.raises(VMNotFoundInInventory) as raised:
        fleet.update(name, power_state="Stopped")

    assert raised.value.recommended_action == "List the fleet's VMs with `backup-jobs fleet list`."
    assert f"No VM with this name is known to the fleet {tmp_path}." in raised.value.message


def test_an_unknown_fleet_vm_suggests_close_names(tmp_path: Path) -> None:
    fleet = create_demo_fleet(tmp_path, "r1")

    with pytest.raises(VMNotFoundInInventory, match="Did you mean: app01"):
        fleet.delete_vm("app1")


def test_arming_a_fault_needs_an_existing_fleet_and_creates_none(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path / "none")

    with pytest.raises(ConfigurationError, match="fleet create-demo"):
        fleet.arm(Fault("discovery-slow"))

    assert not (tmp_path / "none").exists()


def test_arming_a_fault_for_an_unknown_vm_is_refused(tmp_path: Path) -> None:
    fleet = create_demo_fleet(tmp_path, "r1")

    with pytest.raises(VMNotFoundInInventory, match="nosuch"):
        fleet.arm(Fault("install-slow", vm="nosuch"))

    assert fleet.faults.armed() == [Fault("install-agent-timeout", "cs-app/hung01")]


def test_a_fault_armed_for_a_bare_name_is_kept_for_the_vms_id(tmp_path: Path) -> None:
    fleet = create_demo_fleet(tmp_path, "r1")

    armed = fleet.arm(Fault("install-slow", vm="app01", seconds=1.0))

    assert armed.vm == "cs-app/app01" and armed in fleet.faults.armed()
