"""Stopping, resuming and maintaining through the Python API (memory adapters): what each verb
submits, and the clear refusals of garbage input before any job exists."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from backup_jobs import Client, errors
from backup_jobs.items import ProtectedItem, ProtectionState
from backup_jobs.models import VM, Operation, RegistrationState
from backup_jobs.policies import Retention, ScheduleKind, make_policy
from backup_jobs.settings import Settings
from backup_jobs.testing import FrozenClock, MemoryCatalog, RecordingDispatcher

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def client(tmp_path: Path) -> Client:
    catalog = MemoryCatalog()
    settings = Settings(vault="v", region="r1", fleet_dir=tmp_path, vault_dir=tmp_path / "vault")
    catalog.put_policy(
        "v", make_policy("nightly", ScheduleKind.DAILY, times=["22:00"], retention=Retention(7))
    )
    registered = RegistrationState.REGISTERED
    for vm in (
        VM("web01", "cs1", "r1", registration=registered),
        VM("db01", "cs1", "r1", registration=registered),
        VM("gone01", "cs1", "r1", deleted=True, registration=registered),
    ):
        catalog.put_vm("v", vm)
        catalog.put_vm_state("v", vm)
    for vm_id, state in (
        ("cs1/web01", ProtectionState.PROTECTED),
        ("cs1/gone01", ProtectionState.ERROR),
        ("cs1/db01", ProtectionState.STOPPED),
    ):
        catalog.put_item(ProtectedItem("v", vm_id, "nightly", state))
    return Client(settings, catalog, RecordingDispatcher(), FrozenClock(T0))


def test_stop_keeping_data_is_a_stop_protection_job_and_deleting_it_a_delete_job(
    client: Client,
) -> None:
    kept = client.stop_protection("web01").job()
    deleted = client.stop_protection("cs1/gone01", keep_data=False).job()  # a deleted VM too

    assert (kept.operation, kept.item) == (Operation.STOP_PROTECTION, "cs1/web01")
    assert (deleted.operation, deleted.item) == (Operation.DELETE_BACKUP_DATA, "cs1/gone01")


def test_maintenance_jobs_hold_their_own_vault_lease_items_and_name_the_vm_they_are_for(
    client: Client,
) -> None:
    prune = client.prune("web01", dry_run=True).job()
    verify = client.verify().job()
    gc = client.collect_garbage().job()

    assert [j.item for j in (prune, verify, gc)] == ["vault:prune", "vault:verify", "vault:gc"]
    assert [j.item_name for j in (prune, verify, gc)] == ["v", "v", "v"]
    assert prune.properties == {"vm": "cs1/web01", "dry_run": True, "trigger": "on demand"}
    assert "vm" not in verify.properties and "vm_name" not in gc.properties


def test_resume_puts_a_stopped_item_back_under_a_policy(client: Client) -> None:
    job = client.resume_protection("db01", "nightly").job()

    assert job.operation == Operation.CONFIGURE_PROTECTION and job.item == "cs1/db01"
    assert job.properties["policy"] == "nightly" and job.properties["backup_now"] is False


@pytest.mark.parametrize(
    ("call", "error", "named"),
    [
        (lambda c: c.stop_protection("nosuch01"), errors.VMNotFoundInInventory, "nosuch01"),
        (lambda c: c.stop_protection(""), errors.VMNotFoundInInventory, "''"),
        (lambda c: c.prune(""), errors.VMNotFoundInInventory, "''"),
        (lambda c: c.verify("web0"), errors.VMNotFoundInInventory, "web01"),
        (lambda c: c.stop_protection("db01"), errors.NotProtected, "ProtectionStopped"),
        (lambda c: c.resume_protection("web01", "nightly"), errors.ProtectionNotStopped, "web01"),
        (lambda c: c.resume_protection("db01", "nightlx"), errors.PolicyNotFound, "nightly"),
        (lambda c: c.resume_protection("gone01", "nightly"), errors.ProtectionNotStopped, "gone"),
    ],
    ids=[
        "unknown-vm",
        "empty-vm",
        "prune-empty-vm",
        "verify-typo",
        "stop-stopped",
        "resume-protected",
        "resume-unknown-policy",
        "resume-error-state",
    ],
)
def test_garbage_input_is_refused_naming_the_item_and_what_to_do(
    client: Client, call: object, error: type[errors.BackupJobsError], named: str
) -> None:
    with pytest.raises(error) as raised:
        call(client)  # type: ignore[operator]

    assert named in raised.value.message
    assert raised.value.recommended_action
    assert client.jobs() == []


def test_an_item_without_protection_cannot_be_stopped(client: Client) -> None:
    client.catalog.remove_item("v", "cs1/web01")

    with pytest.raises(errors.NotProtected, match="cs1/web01"):
        client.stop_protection("web01", keep_data=False)
    with pytest.raises(TypeError):
        client.stop_protection("db01", keep_data="yes")  # type: ignore[arg-type]


def test_a_bare_name_two_cloud_services_share_is_refused_with_both_choices(
    client: Client,
) -> None:
    client.catalog.put_vm("v", VM("web01", "cs2", "r1"))

    with pytest.raises(errors.AmbiguousVMName) as raised:
        client.verify("web01")

    assert "cs1/web01, cs2/web01" in raised.value.message
    assert client.verify("cs2/web01").job().properties["vm"] == "cs2/web01"
