"""The CLI driven as a user drives it: subprocesses, real server, real workers."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from backup_jobs.runtime import embedded
from tests.harness import REPO, Cluster, eventually, run_cli


def _env(cluster: Cluster, tmp_path: Path) -> dict[str, str]:
    return {
        **cluster.child_env(),
        "BACKUP_JOBS_VAULT": f"cli-{uuid.uuid4().hex[:8]}",
        "BACKUP_JOBS_FLEET_DIR": str(tmp_path / "fleet"),
        "BACKUP_JOBS_REGION": "local-1",
    }


def _discovered_env(cluster: Cluster, tmp_path: Path) -> dict[str, str]:
    env = _env(cluster, tmp_path)
    assert run_cli("fleet", "create-demo", env=env).returncode == 0
    assert run_cli("vm", "discover", "--wait", env=env).returncode == 0
    return env


def _wait_completed(job_id: str, env: dict[str, str]) -> None:
    """Follow a job with `job show` until it is Completed (fails after 30 s)."""

    def completed() -> bool:
        shown = run_cli("job", "show", job_id, "--json", env=env)
        return bool(json.loads(shown.stdout)["status"] == "Completed")

    eventually(completed, 30, 0.5)


def test_seed_register_rows_reproduce_from_the_cli_with_exit_codes_and_json(
    cluster: Cluster, tmp_path: Path
) -> None:
    env = _env(cluster, tmp_path)
    assert run_cli("fleet", "create-demo", env=env).returncode == 0
    assert run_cli("fleet", "stop", "cs-app/app01", env=env).returncode == 0
    assert run_cli("fleet", "add-disks", "cs-web/web01", "--count", "6", env=env).returncode == 0
    discovered = run_cli("vm", "discover", "--wait", env=env)
    assert discovered.returncode == 0, discovered.stderr

    stopped = run_cli("vm", "register", "cs-app/app01", "--wait", "--json", env=env)
    disks = run_cli("vm", "register", "cs-web/web01", "--wait", env=env)
    listing = run_cli("vm", "list", env=env)

    assert stopped.returncode == 8
    [job] = json.loads(stopped.stdout)
    assert job["error"]["code"] == "VMNotRunning"
    assert job["error"]["recommended_action"].startswith("Start the virtual machine")
    assert disks.returncode == 8 and "DataDiskLimitExceeded" in disks.stdout
    assert "error: DataDiskLimitExceeded: cs-web/web01: Number of data disks" in disks.stderr
    assert "what to do: Detach data disks until the VM has at most 5" in disks.stderr
    assert (
        "cs-app/app01" in listing.stdout
        and "VMNotRunning: Start the virtual machine" in listing.stdout
    )

    assert run_cli("fleet", "start", "cs-app/app01", env=env).returncode == 0
    assert run_cli("vm", "discover", "--wait", env=env).returncode == 0
    again = run_cli("vm", "register", "cs-app/app01", "--wait", env=env)
    assert again.returncode == 0, again.stderr
    listed = run_cli("job", "list", "--operation", "register", "--json", env=env).stdout
    jobs = json.loads(listed)["jobs"]
    assert json.loads(listed)["next_cursor"] is None
    assert [j["status"] for j in jobs] == ["Completed", "Failed", "Failed"]
    failed = run_cli(
        "job", "list", "--operation", "REGISTER", "--status", "failed", "--since", "1h", env=env
    )
    assert failed.stdout.count("Register") == 2 and "register" not in failed.stdout
    assert {j["operation"] for j in jobs} == {"Register"}
    quiet = run_cli("job", "list", "--operation", "register", "-q", env=env)
    assert quiet.stdout.splitlines() == [j["id"] for j in jobs]
    shown = run_cli("job", "show", jobs[2]["id"], env=env)
    assert "VMNotRunning" in shown.stdout and "action" in shown.stdout and "#1" in shown.stdout


def test_an_error_without_a_seed_action_still_says_what_to_do(
    cluster: Cluster, tmp_path: Path
) -> None:
    env = _discovered_env(cluster, tmp_path)
    assert run_cli("vm", "register", "cs-app/app01", "--wait", env=env).returncode == 0

    again = run_cli("vm", "register", "cs-app/app01", env=env)

    assert again.returncode == 8
    assert (
        "refused cs-app/app01: AlreadyRegistered: cs-app/app01: The VM is already registered."
        in again.stderr
    )
    assert "  what to do: Nothing to do: the VM is registered" in again.stderr
    assert "Traceback" not in again.stderr


def test_register_with_refused_vms_submits_the_others_and_reports_each_refusal(
    cluster: Cluster, tmp_path: Path
) -> None:
    env = _discovered_env(cluster, tmp_path)

    started = run_cli("vm", "register", "remote01", "cs-app/app01", "nosuch", "--json", env=env)
    out = json.loads(started.stdout)
    _wait_completed(out["job_ids"][0], env)
    waited = run_cli("vm", "register", "app01", "cs-web/web01", "--wait", "--json", env=env)

    assert started.returncode == 3  # not found is more severe than invalid input
    assert len(out["job_ids"]) == 1
    assert [(r["name"], r["error"]["code"]) for r in out["refused"]] == [
        ("remote01", "RegionMismatch"),
        ("nosuch", "VMNotFoundInInventory"),
    ]
    assert "refused remote01: RegionMismatch: cs-far/remote01:" in started.stderr
    assert "refused nosuch: VMNotFoundInInventory: nosuch:" in started.stderr
    assert started.stderr.count("what to do:") == 2 and "Traceback" not in started.stderr
    assert waited.returncode == 8
    assert [j["item"] for j in json.loads(waited.stdout)] == ["cs-web/web01"]
    assert "refused app01: AlreadyRegistered: cs-app/app01:" in waited.stderr


def test_fault_commands_arm_list_and_clear(cluster: Cluster, tmp_path: Path) -> None:
    env = _env(cluster, tmp_path)
    run_cli("fleet", "create-demo", env=env)
    run_cli("fleet", "fault", "clear", env=env)
    armed = run_cli("fleet", "fault", "set", "discovery-internal-error", "--times", "1", env=env)
    listed = json.loads(run_cli("fleet", "fault", "list", "--json", env=env).stdout)
    waiting = run_cli("vm", "discover", "--json", env=env)
    job_id = json.loads(waiting.stdout)["job_ids"][0]

    def retried() -> dict[str, object] | None:
        job = json.loads(run_cli("job", "show", job_id, "--json", env=env).stdout)
        return job if job["status"] == "Completed" else None

    job = eventually(retried, 60, 0.5)
    assert armed.returncode == 0
    assert listed == [{"kind": "discovery-internal-error", "vm": None, "times": 1, "seconds": 0.0}]
    assert [a["status"] for a in job["attempts"]] == ["Failed", "Completed"]  # type: ignore[index]
    assert json.loads(run_cli("fleet", "fault", "list", "--json", env=env).stdout) == []


def test_unknown_vm_name_prints_close_matches_and_exit_code_3(
    cluster: Cluster, tmp_path: Path
) -> None:
    env = _discovered_env(cluster, tmp_path)

    result = run_cli("vm", "register", "web1", env=env)

    assert result.returncode == 3
    assert "VMNotFoundInInventory" in result.stderr and "Did you mean: web01" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("BACKUP_JOBS_MAX_ATTEMPTS", "many", "a whole number from 1 to 100"),
        ("BACKUP_JOBS_MAX_ATTEMPTS", "1" + "0" * 30, "a whole number from 1 to 100"),
        ("BACKUP_JOBS_TICK_SECONDS", "nan", "a number from 0.2 to 3600"),
        ("BACKUP_JOBS_FLOWER_PORT", "99999", "a whole number from 1 to 65535"),
    ],
)
def test_malformed_setting_names_the_variable_and_accepted_values(
    tmp_path: Path, variable: str, value: str, accepted: str
) -> None:
    env = {**os.environ, variable: value, "BACKUP_JOBS_DATA_DIR": str(tmp_path)}

    result = run_cli("vm", "list", env=env)

    assert result.returncode == 8
    assert f"{variable}={value!r} is not valid; accepted: {accepted}" in result.stderr
    assert "what to do:" in result.stderr and "Traceback" not in result.stderr


def test_a_script_tells_a_usage_error_from_invalid_input_by_the_exit_code(tmp_path: Path) -> None:
    env = {**os.environ, "BACKUP_JOBS_DATA_DIR": str(tmp_path)}

    usage = run_cli("vm", "no-such-verb", env=env)
    invalid = run_cli("vm", "list", env={**env, "BACKUP_JOBS_MAX_ATTEMPTS": "0"})

    assert usage.returncode == 2 and "No such command" in usage.stderr
    assert invalid.returncode == 8 and "ConfigurationError" in invalid.stderr


def test_a_since_too_far_back_is_one_line_not_a_traceback(cluster: Cluster, tmp_path: Path) -> None:
    result = run_cli("job", "list", "--since", "999999d", env=_env(cluster, tmp_path))

    assert result.returncode == 2
    assert "--since" in result.stderr and "too far back" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_jobs_page_pages_with_cursors_and_refuses_garbage_in_one_line(
    cluster: Cluster, tmp_path: Path
) -> None:
    env = _env(cluster, tmp_path)
    started = [run_cli("vm", "discover", "--json", env=env) for _ in range(3)]
    ids = [json.loads(done.stdout)["job_ids"][0] for done in reversed(started)]
    seen: list[str] = []
    cursor: list[str] = []
    for _ in range(3):
        page = run_cli("job", "list", "--item", "vault", "--limit", "2", "-q", *cursor, env=env)
        seen.extend(page.stdout.split())
        cursor = page.stderr.removeprefix("next page: ").split()
        if not cursor:
            break
    refusals = {
        ("--cursor", "garbage"): "--cursor",
        ("--limit", "0"): "--limit",
        ("--status", "nope"): "--status",
        ("--since", "1h", "--until", "2h"): "--until",
    }
    refused = {args: run_cli("job", "list", *args, env=env) for args in refusals}
    unknown = run_cli("job", "list", "--item", "nope01", env=env)
    screen = tmp_path / "watch.out"
    with screen.open("w") as out:
        watching = subprocess.Popen(
            [sys.executable, "-m", "backup_jobs", "job", "list", "--watch", "0.5"],
            env=env,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            # Ctrl-C as in a terminal, even when the suite runs where SIGINT is ignored (nohup &).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
        )
        # Ctrl-C once the page is on the screen, not after a guess at the start-up time.
        eventually(lambda: ids[0] in screen.read_text(), 30, 0.05)
        watching.send_signal(signal.SIGINT)
        _, stopped = watching.communicate(timeout=10)
    watched = screen.read_text()

    assert seen == ids
    for args, option in refusals.items():
        assert refused[args].returncode == 2, refused[args].stderr
        assert option in refused[args].stderr and "Traceback" not in refused[args].stderr
    assert unknown.returncode == 3 and "VMNotFoundInInventory" in unknown.stderr
    assert watching.returncode == 130 and "Stopped watching." in stopped
    assert "Traceback" not in stopped and ids[0] in watched


def test_unreachable_redis_is_one_line_without_the_password(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "BACKUP_JOBS_REDIS_URL": "redis://:hunter2@127.0.0.1:1/0",
        "BACKUP_JOBS_DATA_DIR": str(tmp_path),
    }

    result = run_cli("vm", "list", env=env)

    assert result.returncode == 7
    assert "redis://:***@127.0.0.1:1/0" in result.stderr
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr
    assert "Check that the server is running" in result.stderr


def test_password_protected_redis_without_password_says_authentication_failed(
    tmp_path: Path,
) -> None:
    port = embedded.free_port()
    server = subprocess.Popen(
        [
            str(embedded.server_binary()),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--requirepass",
            "pw",
            "--save",
            "",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        env = {
            **os.environ,
            "BACKUP_JOBS_REDIS_URL": f"redis://127.0.0.1:{port}/0",
            "BACKUP_JOBS_DATA_DIR": str(tmp_path),
        }
        result = run_cli("vm", "list", env=env)
    finally:
        server.terminate()
        server.wait()

    assert result.returncode == 7
    assert "authentication failed" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_fleet_directory_is_a_clear_error_for_fleet_commands(tmp_path: Path) -> None:
    env = {**os.environ, "BACKUP_JOBS_FLEET_DIR": str(tmp_path / "none")}

    result = run_cli("fleet", "list", env=env)

    assert result.returncode == 8
    assert str(tmp_path / "none") in result.stderr and "fleet create-demo" in result.stderr


def _fleet_env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "BACKUP_JOBS_FLEET_DIR": str(tmp_path / "fleet")}
    assert run_cli("fleet", "create-demo", env=env).returncode == 0
    return env


def test_a_huge_disk_size_is_refused_in_one_line_and_leaves_no_file(tmp_path: Path) -> None:
    env = _fleet_env(tmp_path)
    folder = tmp_path / "fleet" / "cs-app" / "app01"
    before = sorted(folder.iterdir())

    result = run_cli("fleet", "add-disks", "cs-app/app01", "--size-mib", "99999999999999", env=env)

    assert result.returncode == 2
    assert "--size-mib" in result.stderr and "Traceback" not in result.stderr
    assert sorted(folder.iterdir()) == before


def test_a_disk_image_the_file_system_refuses_is_one_line_naming_the_path(tmp_path: Path) -> None:
    env = _fleet_env(tmp_path)
    folder = tmp_path / "fleet" / "cs-app" / "app01"
    before = sorted(folder.iterdir())
    one_mib = 1 << 20

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "backup_jobs",
            "fleet",
            "add-disks",
            "cs-app/app01",
            "--size-mib",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        # The file system refuses files over 1 MiB, as a full or limited one would.
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (one_mib, one_mib)),
    )

    assert result.returncode == 8
    assert f"cannot create the disk image {folder / 'data1.img'}" in result.stderr
    assert "what to do: Check the free space" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(folder.iterdir()) == before


def test_a_garbage_agent_version_is_refused_in_one_line(tmp_path: Path) -> None:
    env = _fleet_env(tmp_path)

    result = run_cli("fleet", "install-agent", "cs-app/app01", "--version", "garbage", env=env)
    listed = run_cli("fleet", "list", env=env)

    assert result.returncode == 2
    assert "'garbage' is not valid; accepted: 2 to 4 dot-separated integers" in result.stderr
    assert "Traceback" not in result.stderr
    assert listed.returncode == 0 and "garbage" not in listed.stdout


@pytest.mark.parametrize(
    "verb",
    [
        ("start",),
        ("stop",),
        ("delete",),
        ("install-agent",),
        ("remove-agent",),
        ("add-disks", "--count", "1"),
    ],
)
def test_fleet_verbs_on_an_unknown_vm_advise_fleet_list(tmp_path: Path, verb: tuple[str]) -> None:
    env = _fleet_env(tmp_path)

    result = run_cli("fleet", verb[0], "nosuch", *verb[1:], env=env)

    assert result.returncode == 3
    assert "what to do: List the fleet's VMs with `backup-jobs fleet list`" in result.stderr
    assert "vm discover" not in result.stderr and "Traceback" not in result.stderr


def test_fleet_verbs_take_a_unique_bare_name_and_refuse_an_ambiguous_one(tmp_path: Path) -> None:
    env = _fleet_env(tmp_path)

    stopped = run_cli("fleet", "stop", "app01", env=env)
    ambiguous = run_cli("fleet", "stop", "shared01", env=env)

    assert stopped.returncode == 0 and stopped.stdout.strip() == "cs-app/app01: stopped."
    assert ambiguous.returncode == 8
    assert "cs-db/shared01, cs-web/shared01" in ambiguous.stderr


def test_fault_set_refuses_a_missing_fleet_and_an_unknown_vm(tmp_path: Path) -> None:
    missing = {**os.environ, "BACKUP_JOBS_FLEET_DIR": str(tmp_path / "none")}

    no_fleet = run_cli("fleet", "fault", "set", "discovery-slow", env=missing)
    no_vm = run_cli(
        "fleet", "fault", "set", "install-slow", "--vm", "nosuch", env=_fleet_env(tmp_path)
    )

    assert no_fleet.returncode == 8 and "fleet create-demo" in no_fleet.stderr
    assert not (tmp_path / "none").exists()
    assert no_vm.returncode == 3 and "nosuch" in no_vm.stderr
    assert "Traceback" not in no_fleet.stderr + no_vm.stderr


def test_ctrl_c_during_wait_leaves_the_job_running_and_says_how_to_follow_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    env = _discovered_env(cluster, tmp_path)
    run_cli(
        "fleet", "fault", "set", "install-slow", "--vm", "cs-app/app01", "--seconds", "2", env=env
    )
    client = cluster.client(tmp_path / "fleet", vault=env["BACKUP_JOBS_VAULT"])
    waiting = subprocess.Popen(
        [sys.executable, "-m", "backup_jobs", "vm", "register", "cs-app/app01", "--wait"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Ctrl-C while the job runs (the slow install holds it 2 s), however long start-up took.
    eventually(lambda: client.jobs(operation="Register", status="InProgress"), 30, 0.02)
    waiting.send_signal(signal.SIGINT)
    _, err = waiting.communicate(timeout=30)

    assert waiting.returncode == 130
    assert "Stopped waiting; the jobs go on" in err and "backup-jobs job show" in err
    job_id = err.split("(IDs: ")[1].split(")")[0].strip()
    _wait_completed(job_id, env)


def test_celery_command_works_from_the_checkout_and_from_an_installed_package(
    cluster: Cluster, tmp_path: Path
) -> None:
    env = cluster.child_env()
    args = [str(a) for a in cluster.procs["worker"].args]
    node = args[args.index("--hostname") + 1]  # one destination: the reply ends the wait
    for cwd in (REPO, tmp_path):
        result = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "workers", "inspect", "ping", "-d", node],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "pong" in result.stdout


def test_numbers_that_are_not_finite_or_too_large_are_usage_errors_naming_the_option(
    tmp_path: Path,
) -> None:
    env = _fleet_env(tmp_path)
    image = tmp_path / "fleet" / "cs-app" / "app01" / "os.img"
    before = image.read_bytes()

    results = {
        option: run_cli(*command, env=env)
        for option, command in {
            "--percent": ("fleet", "write", "app01", "--percent", "nan"),
            "--mib": ("fleet", "write", "app01", "--mib", "inf"),
            "--seconds": ("fleet", "fault", "set", "install-slow", "--seconds", "nan"),
        }.items()
    }
    huge = run_cli("fleet", "write", "app01", "--mib", "1e300", env=env)

    for option, result in results.items():
        assert result.returncode == 2, result.stderr
        assert f"Invalid value for '{option}'" in result.stderr and "not a finite" in result.stderr
    assert huge.returncode == 2 and "is not in the range" in huge.stderr
    assert "Traceback" not in "".join(r.stderr for r in [*results.values(), huge])
    assert image.read_bytes() == before
