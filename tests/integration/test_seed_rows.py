"""Every Discovery and Register row of the seed's troubleshooting table, on real workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from backup_jobs import errors
from backup_jobs.models import JobStatus, RegistrationState
from backup_jobs.providers.local_demo import DEMO_VMS
from backup_jobs.providers.local_faults import Fault
from tests.harness import SESSION_ENV, Cluster, demo_fleet, discovered, wait_for_status

REGISTER_ROWS = [
    (
        "cs-app/stopped01",
        "VMNotRunning",
        "Please check if the VM is in the Running state",
        "Start the virtual machine",
    ),
    (
        "cs-db/disks06",
        "DataDiskLimitExceeded",
        "Backup supports up to 5 data disks",
        "Detach data disks until the VM has at most 5, then retry the register operation.",
    ),
    (
        "cs-db/premium01",
        "UnsupportedConfiguration",
        "premium storage",
        "Remove the unsupported configuration.",
    ),
    (
        "cs-app/multinic01",
        "UnsupportedConfiguration",
        "multiple NICs",
        "Remove the unsupported configuration.",
    ),
    (
        "cs-web/lb01",
        "UnsupportedConfiguration",
        "load balancer",
        "Remove the unsupported configuration.",
    ),
    (
        "cs-app/noagent01",
        "VMAgentNotInstalled",
        "the VM agent is a pre-requisite",
        "Check that the VM agent is installed",
    ),
    (
        "cs-app/oldagent01",
        "GuestAgentCertificateNotFound",
        "VM Guest Agent Certificate not found (VM agent 2.6.1000.0 is older than 2.6.1198.718)",
        "Install the latest VM agent (2.6.1198.718 or higher).",
    ),
    (
        "cs-app/hung01",
        "InstallAgentTimeout",
        "Registration failed with Install Agent operation timeout",
        "Check whether the operating system version",
    ),
]


@pytest.mark.parametrize(
    ("vm", "code", "message", "action"), REGISTER_ROWS, ids=[r[0] for r in REGISTER_ROWS]
)
def test_register_row_fails_with_the_seed_error_and_its_action(
    cluster: Cluster, tmp_path: Path, vm: str, code: str, message: str, action: str
) -> None:
    demo_fleet(tmp_path)
    client = cluster.client(tmp_path / "fleet")
    assert client.discover().wait(30).status == JobStatus.COMPLETED

    [handle] = client.register([vm])
    job = handle.wait(30)

    assert job.status == JobStatus.FAILED
    assert job.error is not None
    assert job.error["code"] == code
    assert job.error["message"].startswith(f"{vm}: ")
    assert message in job.error["message"]
    assert job.error["recommended_action"].startswith(action)
    assert job.error["retryable"] is False
    assert job.attempt == 1
    record = {v.id: v for v in client.vms()}[vm]
    assert record.registration == RegistrationState.NOT_REGISTERED
    assert record.last_error is not None and record.last_error["code"] == code
    assert client.catalog.lock_holder(client.vault.name, vm) is None


def test_healthy_vms_register_and_the_extension_is_recorded_in_vm_json(
    cluster: Cluster, tmp_path: Path
) -> None:
    fleet, client = discovered(cluster, tmp_path)

    handles = client.register(["cs-web/web01", "app01"])
    jobs = [h.wait(30) for h in handles]

    assert [j.status for j in jobs] == [JobStatus.COMPLETED, JobStatus.COMPLETED]
    assert [j.item_name for j in jobs] == ["cs-web/web01", "cs-app/app01"]
    registered = {v.id for v in client.vms() if v.registration == RegistrationState.REGISTERED}
    assert registered == {"cs-web/web01", "cs-app/app01"}
    assert fleet.read("cs-web/web01")["extension"]["installed"] is True
    assert fleet.read("cs-app/noagent01")["extension"]["installed"] is False


def test_discovery_internal_error_fails_the_attempt_then_retries_after_the_delay(
    cluster: Cluster, tmp_path: Path
) -> None:
    fleet = demo_fleet(tmp_path)
    fleet.faults.add(Fault("discovery-internal-error", times=1))
    client = cluster.client(tmp_path / "fleet")

    handle = client.discover()
    waiting = wait_for_status(handle, JobStatus.WAITING_TO_RETRY)
    job = handle.wait(30)

    assert waiting.attempt == 1
    assert waiting.next_retry_at is not None
    assert waiting.error is not None and waiting.error["code"] == "DiscoveryInternalError"
    assert (
        "Failed to discover new items - Backup encountered an internal error"
        in waiting.error["message"]
    )
    assert waiting.error["recommended_action"] == "Retry the discovery process after 15 minutes."
    assert waiting.error["retryable"] is True
    assert job.status == JobStatus.COMPLETED
    assert job.attempt == 2
    assert [a.status for a in job.attempts] == [JobStatus.FAILED, JobStatus.COMPLETED]
    assert (
        job.attempts[0].error is not None
        and job.attempts[0].error["code"] == "DiscoveryInternalError"
    )
    delay = SESSION_ENV["BACKUP_JOBS_RETRY_DELAY_SECONDS"]  # not before the retry delay
    assert (job.attempts[1].started_at - job.attempts[0].ended_at).total_seconds() >= int(delay)  # type: ignore[operator]
    assert len(set(job.celery_task_ids)) == 2
    assert len(client.vms()) == 13


def test_discovery_that_keeps_failing_stops_after_max_attempts(
    cluster: Cluster, tmp_path: Path
) -> None:
    fleet = demo_fleet(tmp_path)
    fleet.faults.add(Fault("discovery-internal-error", times=None))
    client = cluster.client(tmp_path / "fleet")

    job = client.discover().wait(60)

    assert job.status == JobStatus.FAILED
    assert job.attempt == job.max_attempts == 3
    assert job.error is not None and job.error["code"] == "DiscoveryInternalError"
    assert client.catalog.due_retries(job.ended_at) == []  # type: ignore[arg-type]


def test_discovery_marks_vms_gone_from_the_fleet_deleted_and_keeps_them(
    cluster: Cluster, tmp_path: Path
) -> None:
    fleet, client = discovered(cluster, tmp_path)
    client.register(["cs-app/app01"])[0].wait(30)

    fleet.delete_vm("cs-app/app01")
    fleet.create_vm("cs-new", "fresh01", "local-1")
    job = client.discover().wait(30)

    assert job.properties["deleted"] == 1 and job.properties["new"] == 1
    everything = {v.id: v for v in client.vms(include_deleted=True)}
    assert everything["cs-app/app01"].deleted
    assert everything["cs-app/app01"].registration == RegistrationState.REGISTERED
    assert "cs-app/app01" not in {v.id for v in client.vms()}
    assert "cs-new/fresh01" in {v.id for v in client.vms(registrable=True)}


def test_registrable_lists_only_unregistered_vms_of_the_vaults_region(
    cluster: Cluster, tmp_path: Path
) -> None:
    _, client = discovered(cluster, tmp_path)
    client.register(["cs-web/web01"])[0].wait(30)

    names = {v.id for v in client.vms(registrable=True)}

    assert "cs-web/web01" not in names
    assert "cs-far/remote01" not in names
    assert "cs-app/app01" in names


def test_bare_name_shared_by_two_cloud_services_is_refused_with_the_choices(
    cluster: Cluster, tmp_path: Path
) -> None:
    _, client = discovered(cluster, tmp_path)

    batch = client.register(["shared01"])

    with pytest.raises(errors.AmbiguousVMName) as raised:
        batch.raise_refused()
    assert "cs-db/shared01, cs-web/shared01" in str(raised.value)
    assert batch == [] and client.jobs(operation="register") == []


def test_unknown_name_is_refused_with_close_matches_and_the_other_vms_go_on(
    cluster: Cluster, tmp_path: Path
) -> None:
    _, client = discovered(cluster, tmp_path)

    batch = client.register(["cs-app/app01", "web001"])

    [refusal] = batch.refused
    assert refusal.name == "web001" and "Did you mean: web01" in refusal.error.message
    assert [job.item for job in client.jobs(operation="register")] == ["cs-app/app01"]
    assert batch[0].wait(30).status == JobStatus.COMPLETED


def test_vm_in_another_region_and_registered_vm_are_refused_at_submission(
    cluster: Cluster, tmp_path: Path
) -> None:
    _, client = discovered(cluster, tmp_path)
    client.register(["cs-app/app01"])[0].wait(30)

    with pytest.raises(errors.RegionMismatch):
        client.register(["remote01"]).raise_refused()
    with pytest.raises(errors.AlreadyRegistered):
        client.register(["cs-app/app01"]).raise_refused()


def test_missing_fleet_directory_fails_discovery_naming_the_directory(
    cluster: Cluster, tmp_path: Path
) -> None:
    client = cluster.client(tmp_path / "nowhere")

    job = client.discover().wait(30)

    assert job.status == JobStatus.FAILED
    assert job.error is not None and job.error["code"] == "ConfigurationError"
    assert str(tmp_path / "nowhere") in job.error["message"]
    assert "fleet create-demo" in job.error["message"]


def test_a_malformed_vm_json_is_skipped_with_a_warning_naming_the_file_and_field(
    cluster: Cluster, tmp_path: Path
) -> None:
    fleet = demo_fleet(tmp_path)
    path = fleet.root / "cs-app" / "app01" / "vm.json"
    good = path.read_text()
    client = cluster.client(tmp_path / "fleet")
    assert client.discover().wait(30).status == JobStatus.COMPLETED
    path.write_text(good.replace('"nics": 1', '"nics": "one"'))

    job = client.discover().wait(30)

    assert job.status == JobStatus.COMPLETED_WITH_WARNINGS
    [warning] = job.warnings
    assert str(path) in warning and "'nics'" in warning
    assert job.properties["skipped"] == 1 and job.properties["deleted"] == 0
    vms = {vm.id: vm for vm in client.vms()}
    assert len(vms) == len(DEMO_VMS) and not vms["cs-app/app01"].deleted
