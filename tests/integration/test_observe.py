"""Metrics, logs and health against real workers: what an operator's tools would see."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from backup_jobs.catalogs.redis import RedisCatalog
from backup_jobs.client import Client
from backup_jobs.items import ProtectionState
from backup_jobs.models import JobStatus, utcnow
from backup_jobs.policies import Retention, ScheduleKind, make_policy
from backup_jobs.runtime import embedded
from backup_jobs.runtime.exporter import CatalogCollector
from tests.harness import Cluster, demo_fleet, eventually, own_cluster, protected, run_cli

POLICY = make_policy("nightly", ScheduleKind.DAILY, times=["03:00"], retention=Retention(7))
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(url: str) -> Samples:
    """Every sample the exporter gives, by name and sorted labels."""
    collector = CatalogCollector(lambda: RedisCatalog.from_url(url), utcnow)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_scrape_after_a_backup_and_a_failed_register_matches_the_catalog(
    cluster: Cluster, tmp_path: Path
) -> None:
    _, client = protected(cluster, tmp_path, ["cs-app/app01"], POLICY, data_bytes=1 << 20)
    backup = client.backup_now("cs-app/app01").wait(60)
    assert backup.status == JobStatus.COMPLETED
    failed = client.register(["cs-db/disks06"])[0].wait(30)
    assert failed.status == JobStatus.FAILED

    samples = _scrape(cluster.redis_url)
    catalog, v = client.catalog, client.vault.name

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted({"vault": v, **labels}.items())))]

    points = list(catalog.recovery_points(v, "cs-app/app01"))
    assert samples[("backup_jobs_up", ())] == 1
    assert value("backup_jobs_protected_items", state=ProtectionState.PROTECTED.value) == 1
    assert value("backup_jobs_recovery_points", vm="cs-app/app01") == len(points) == 1
    assert value("backup_jobs_recovery_point_bytes", vm="cs-app/app01") == points[0].size_bytes
    for status in (JobStatus.COMPLETED, JobStatus.FAILED):
        assert value("backup_jobs_jobs", status=status.value) == catalog.count_jobs(
            v, status=status
        )
    assert value("backup_jobs_jobs", status="Failed") == 1
    assert value("backup_jobs_jobs_by_operation", operation="Backup") == 1
    assert value("backup_jobs_jobs_unfinished", operation="Backup", status="Queued") == 0
    assert (
        value("backup_jobs_job_duration_seconds_gcount", operation="Backup", status="Completed")
        == 1
    )
    assert (
        value("backup_jobs_job_duration_seconds_gsum", operation="Backup", status="Completed")
        == backup.duration_seconds
    )
    assert (
        value("backup_jobs_job_duration_seconds_gcount", operation="Register", status="Failed") == 1
    )
    assert value("backup_jobs_recent_jobs_retried", operation="Backup") == 0
    age = value("backup_jobs_last_good_backup_age_seconds", vm="cs-app/app01")
    assert 0 <= age <= (utcnow() - points[0].created_at).total_seconds()
    stored, logical = (
        value("backup_jobs_vault_stored_bytes"),
        value("backup_jobs_vault_logical_bytes"),
    )
    assert stored > 0 and logical == points[0].size_bytes
    assert value("backup_jobs_vault_dedup_ratio") == logical / stored
    assert value("backup_jobs_vault_chunks") > 0
    assert samples[("backup_jobs_tick_age_seconds", (("tick", "dispatch-due-retries"),))] < 30
    assert samples[("backup_jobs_retries_waiting", ())] >= 0


def test_the_exporter_process_answers_scrapes_and_says_up(cluster: Cluster, tmp_path: Path) -> None:
    port = embedded.free_port()
    env = {**cluster.child_env(), "BACKUP_JOBS_EXPORTER_PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "backup_jobs", "exporter"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def scrape() -> str | None:
            try:
                url = f"http://127.0.0.1:{port}/metrics"
                with urllib.request.urlopen(url, timeout=5) as response:
                    return str(response.read().decode())
            except OSError:
                return None

        text = eventually(scrape, 30, 0.2)
    finally:
        process.terminate()
        process.wait(10)
    assert "backup_jobs_up 1.0" in text and "# TYPE backup_jobs_jobs gauge" in text


def _events(log: str, job_id: str, json_lines: bool) -> list[dict[str, str]]:
    """The structured events of one job in a worker log."""
    found = []
    for line in log.splitlines():
        if json_lines:
            if not line.startswith("{"):
                continue
            event = json.loads(line)
        else:
            if "event=" not in line:
                continue
            event = dict(part.split("=", 1) for part in shlex.split(line) if "=" in part)
        if event.get("job") == job_id:
            found.append(event)
    return found


def _register_and_fail(client: Client) -> tuple[str, str]:
    """A completed discovery and a failed register: their job ids."""
    discovery = client.discover().wait(30)
    assert discovery.status == JobStatus.COMPLETED
    failed = client.register(["cs-db/disks06"])[0].wait(30)
    assert failed.status == JobStatus.FAILED and failed.error
    return discovery.id, failed.id


def _assert_events(log: str, done: str, failed: str, json_lines: bool, code: str) -> None:
    started, completed = _events(log, done, json_lines)
    assert started["event"] == "attempt_started" and started["operation"] == "Discovery"
    assert str(started["attempt"]) == "1" and started["task"]
    assert completed["event"] == "job_completed" and completed["status"] == "Completed"
    assert completed["item"] == started["item"] and completed["level"] == "info"
    first, last = _events(log, failed, json_lines)
    assert first["event"] == "attempt_started" and first["item"] == "cs-db/disks06"
    assert last["event"] == "attempt_failed" and last["code"] == code
    assert last["level"] == "warning" and last["status"] == "Failed"


def test_the_worker_logs_attempts_as_logfmt_events_with_ids_bound(
    cluster: Cluster, tmp_path: Path
) -> None:
    demo_fleet(tmp_path)
    client = cluster.client(tmp_path / "fleet")
    done, failed = _register_and_fail(client)
    code = str((client.job(failed).error or {})["code"])
    eventually(lambda: _events(cluster.log("worker"), failed, False)[1:], 10)
    _assert_events(cluster.log("worker"), done, failed, False, code)


def test_the_worker_logs_json_lines_when_told(scratch_url: str, tmp_path: Path) -> None:
    with own_cluster(scratch_url, tmp_path, BACKUP_JOBS_LOG_FORMAT="json") as own:
        own.start("worker")
        own.wait_ready("worker")
        demo_fleet(tmp_path)
        client = own.client(tmp_path / "fleet")
        done, failed = _register_and_fail(client)
        code = str((client.job(failed).error or {})["code"])
        eventually(lambda: _events(own.log("worker"), failed, True)[1:], 10)
        _assert_events(own.log("worker"), done, failed, True, code)


def test_health_passes_against_the_running_cluster(cluster: Cluster) -> None:
    result = run_cli("health", "--json", env=cluster.child_env(), timeout=30)

    report = json.loads(result.stdout)
    assert result.returncode == 0, [c for c in report["checks"] if not c["ok"]]
    assert report["healthy"] is True
    assert [c["name"] for c in report["checks"]] == [
        "redis",
        "workers",
        "tick-consumer",
        "beat",
        "tick-lag",
        "retries",
        "queued",
    ]
    assert all(c["ok"] for c in report["checks"])


def test_health_fails_naming_the_checks_without_workers_ticks_or_beat(
    scratch_url: str, tmp_path: Path
) -> None:
    env = Cluster(scratch_url, tmp_path, {}).child_env()
    result = run_cli("health", env=env, timeout=30, cwd=tmp_path)

    assert result.returncode == 1, result.stdout
    lines = {line.split()[1]: line.split()[0] for line in result.stdout.splitlines()}
    assert lines["redis"] == "ok"
    assert lines["tick-consumer"] == lines["beat"] == lines["tick-lag"] == "FAIL"
    assert "is not running" in result.stdout
