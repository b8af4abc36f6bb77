"""The architecture, checked: layering, the wire contract, the front door, the Procfile."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import backup_jobs
from backup_jobs import wire
from backup_jobs.models import Operation
from backup_jobs.runtime.processes import process_commands
from backup_jobs.settings import Settings
from tests.harness import REPO

# Domain modules: neither celery nor redis may be imported, even indirectly.
DOMAIN_MODULES = [
    "backup_jobs.errors",
    "backup_jobs.settings",
    "backup_jobs.models",
    "backup_jobs.wire",
    "backup_jobs.clock",
    "backup_jobs.catalog",
    "backup_jobs.provider",
    "backup_jobs.dispatcher",
    "backup_jobs.heartbeat",
    "backup_jobs.jobs",
    "backup_jobs.ticks",
    "backup_jobs.inventory",
    "backup_jobs.operations",
    "backup_jobs.maintenance",
    "backup_jobs.maintenance_ticks",
    "backup_jobs.stopping",
    "backup_jobs.client",
    "backup_jobs.client_maintenance",
    "backup_jobs.testing",
    "backup_jobs.timeparse",
    "backup_jobs.logs",
    "backup_jobs.providers.local",
    "backup_jobs.providers.local_demo",
    "backup_jobs.providers.libvirt",
    "backup_jobs",
    "backup_jobs.vault",
]


def test_domain_modules_import_neither_celery_nor_redis() -> None:
    code = (
        "import sys\n"
        f"for name in {DOMAIN_MODULES!r}: __import__(name)\n"
        "top = {m.split('.')[0] for m in sys.modules}\n"
        "print(','.join(sorted(top & {'celery', 'redis', 'kombu', 'workers'})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == ""


# Production wiring: what runs on every machine, with or without the embedded server.
WIRING_FILES = [
    REPO / "backup_jobs" / "client.py",
    REPO / "backup_jobs" / "connection.py",
    *sorted((REPO / "workers").glob("*.py")),
]
WIRING_MODULES = ["backup_jobs.client", "backup_jobs.connection", "workers", "workers.root"]


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, lazy imports inside functions included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_production_wiring_imports_nothing_of_the_embedded_server_code() -> None:
    offenders = [
        f"{path.relative_to(REPO)}: {module}"
        for path in WIRING_FILES
        for module in sorted(_imported_modules(path))
        if module.startswith("backup_jobs.runtime")
    ]

    assert offenders == []


def test_the_worker_app_and_the_client_load_without_the_runtime_package() -> None:
    code = (
        "import sys\n"
        f"for name in {WIRING_MODULES!r}: __import__(name)\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('backup_jobs.runtime'))))\n"
    )
    # The worker app resolves its URL at import (nothing is sent): give it one.
    env = {**os.environ, "BACKUP_JOBS_REDIS_URL": "redis://127.0.0.1:1/0"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=REPO
    )

    assert result.stdout.strip() == ""


def test_backup_jobs_never_imports_workers() -> None:
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "backup_jobs").rglob("*.py")
        if "from workers" in path.read_text() or "import workers" in path.read_text()
    ]

    assert offenders == []


def test_wire_names_are_pinned() -> None:
    assert [wire.task_name(op) for op in Operation] == [
        "backup_jobs.discovery",
        "backup_jobs.register",
        "backup_jobs.configure_protection",
        "backup_jobs.backup",
        "backup_jobs.restore",
        "backup_jobs.stop_protection",
        "backup_jobs.delete_backup_data",
        "backup_jobs.prune",
        "backup_jobs.verify",
        "backup_jobs.garbage_collect",
    ]
    assert [wire.OPERATION_QUEUES[op] for op in Operation] == [
        "control",
        "control",
        "control",
        "backup",
        "backup",
        "control",
        "control",
        "maintenance",
        "maintenance",
        "maintenance",
    ]
    assert wire.TASK_START_MAINTENANCE == "backup_jobs.tick.start_maintenance"
    assert wire.vault_index_key() == "bj:vaults"
    assert wire.recovery_point_key("v", "rp") == "bj:rp:v:rp"
    assert wire.recovery_points_key("v", "cs/n") == "bj:rps:v:cs/n"
    assert wire.TASK_DISPATCH_BACKUPS == "backup_jobs.tick.dispatch_backups"
    assert wire.SCHEDULE_KEY == "bj:schedule"
    assert wire.item_key("v", "cs/n") == "bj:item:v:cs/n"
    assert wire.policy_key("v", "p") == "bj:policy:v:p"
    assert wire.TASK_DISPATCH_RETRIES == "backup_jobs.tick.dispatch_retries"
    assert wire.TASK_REAP == "backup_jobs.tick.reap_lost_jobs"
    assert wire.TASK_SWEEP_QUEUED == "backup_jobs.tick.sweep_queued"
    assert wire.TASK_REPAIR_INDEXES == "backup_jobs.tick.repair_job_indexes"
    assert wire.INDEX_REPAIR_STARTED == "job-index-repair"
    assert wire.QUEUES == ("control", "backup", "maintenance")
    assert wire.QUEUE_TICKS == "ticks"
    assert wire.job_key("j") == "bj:job:j"
    assert wire.vm_key("v", "cs/n") == "bj:vm:v:cs/n"
    assert wire.vm_state_key("v", "cs/n") == "bj:vmstate:v:cs/n"
    assert wire.vm_name_key("v", "n") == "bj:vm-name:v:n"
    assert wire.lock_key("v", "cs/n") == "bj:lock:v:cs/n"
    assert wire.fence_key("v", "cs/n") == "bj:fence:v:cs/n"
    assert wire.RETRY_SET_KEY == "bj:retries"
    assert wire.QUEUED_KEY == "bj:queued"
    assert wire.PROBLEMS_KEY == "bj:problems"
    assert wire.job_index_key("v") == "bj:jobs:v"
    assert wire.jobs_by_status_key("v", "Failed") == "bj:jobs-by-status:v:Failed"
    assert wire.jobs_by_operation_key("v", "Backup") == "bj:jobs-by-operation:v:Backup"
    assert wire.jobs_by_item_key("v", "cs/n") == "bj:jobs-by-item:v:cs/n"
    assert wire.ENDED_KEY == "bj:jobs-ended"
    assert wire.TASK_EXPIRE_HISTORY == "backup_jobs.tick.expire_job_history"


def test_front_door_all_is_sorted_and_complete() -> None:
    assert backup_jobs.__all__ == sorted(backup_jobs.__all__)
    assert all(hasattr(backup_jobs, name) for name in backup_jobs.__all__)
    assert "Client" in backup_jobs.__all__
    assert set(backup_jobs._MODULE_OF) == set(backup_jobs.__all__)  # each lazy name has a home
    assert set(dir(backup_jobs)) >= set(backup_jobs.__all__)
    assert not {"Any", "importlib", "TYPE_CHECKING"} & set(dir(backup_jobs))


def test_procfile_runs_the_same_processes_as_backup_jobs_up() -> None:
    procfile = dict(
        line.split(": ", 1) for line in (REPO / "Procfile").read_text().splitlines() if line.strip()
    )
    commands = process_commands(Settings.from_env({}))

    assert set(procfile) == {"server", *commands}
    for name, command in commands.items():
        shown = procfile[name].split()
        if "workers" not in command:  # a backup-jobs command (the exporter)
            assert shown == ["backup-jobs", *command[command.index("backup_jobs") + 1 :]]
            continue
        celery_args = command[command.index("workers") + 1 :]
        assert shown[:3] == ["celery", "-A", "workers"]
        assert shown[3] == celery_args[0]
        # Same options; `up` adds a unique --hostname so that several machines never clash.
        options = {arg.split("=")[0] for arg in celery_args if arg.startswith("--")} - {
            "--hostname"
        }
        assert options == {arg.split("=")[0] for arg in shown if arg.startswith("--")}


# Use-cases talk to ports only (DESIGN §10): never to an adapter, Celery, redis or runtime/.
# Every top-level module of backup_jobs is domain (use cases, ports, values) but these: the
# production wiring (``Client.from_env`` builds the Redis catalog and Celery dispatcher),
# finding the server (``connection``) and the in-memory fakes shipped for tests (``testing``).
WIRING = {"client.py", "connection.py", "testing.py", "__main__.py"}
USE_CASES = sorted(
    str(path.relative_to(REPO))
    for path in (REPO / "backup_jobs").glob("*.py")
    if path.name not in WIRING
)
ADAPTERS = (
    "backup_jobs.catalogs",
    "backup_jobs.providers",
    "backup_jobs.dispatchers",
    "backup_jobs.runtime",
    "celery",
    "kombu",
    "redis",
    "workers",
)


def _imports(path: str) -> set[str]:
    tree = ast.parse((REPO / path).read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", USE_CASES)
def test_use_cases_import_ports_never_adapters(path: str) -> None:
    offenders = [
        name
        for name in _imports(path)
        if any(name == a or name.startswith(a + ".") for a in ADAPTERS)
    ]

    assert offenders == []


def test_every_tick_beat_sends_is_one_the_tick_consumer_runs_under_the_same_name() -> None:
    # `health` and the exporter read the tick lag of exactly these names in ``bj:ticks``.
    source = (REPO / "workers" / "ticks.py").read_text()
    ast_ticks = next(
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and node.target.id == "TICKS"
    )
    assert isinstance(ast_ticks, ast.Dict)
    names = [key.value for key in ast_ticks.keys if isinstance(key, ast.Constant)]
    assert names == list(wire.BEAT_TICKS)


def test_importing_the_vault_loads_no_client_catalog_or_models() -> None:
    # A vault backup runs in a process of its own; the front door imports lazily so that it
    # does not pay for the client side (~0.2 s of every such process).
    code = (
        "import sys\n"
        "import backup_jobs.vault\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('backup_jobs')"
        " and not m.startswith(('backup_jobs.vault', 'backup_jobs.errors')))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )

    assert result.stdout.strip() == "backup_jobs"


def test_front_door_names_come_from_their_modules() -> None:
    from backup_jobs import client, errors, models, settings

    assert backup_jobs.Client is client.Client
    assert backup_jobs.WorkerLost is errors.WorkerLost
    assert backup_jobs.VM is models.VM
    assert backup_jobs.Settings is settings.Settings
    with pytest.raises(AttributeError):
        _ = backup_jobs.NoSuchName  # type: ignore[attr-defined]
