"""The benchmarks still run: each one, tiny, as the README gives it, leaving nothing behind.

Their figures are not checked (they are measurements on a shared machine, not tests); only
that each runs to its report and cleans up its work directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO
from tests.libvirt.host import missing as libvirt_missing

TINY = {
    "control_plane": ["--vms", "4", "--runs", "1"],
    "scheduler": ["--items", "200", "--policies", "5", "--due", "100", "--runs", "1"],
    "backup_job": ["--size-gib", "0.03", "--runs", "1"],
    "incremental": ["--size-gib", "0.1", "--fill-percent", "20", "--runs", "1"],
    "vault_throughput": ["--size-gib", "0.125", "--runs", "1"],
    "job_list": ["--jobs", "2000", "--sample", "200", "--runs", "1", "--repeats", "2"],
    "submission": ["--vms", "300", "--small", "50", "--calls", "5", "--runs", "1"],
    "libvirt_backup": ["--size-gib", "0.05", "--fill-percent", "20", "--runs", "1"],
}
# What the last lines of each report say.
REPORTS = {
    "control_plane": "Register overhead, one",
    "scheduler": "ticks, 100 due",
    "backup_job": "Backup job, submit -> final",
    "incremental": "incremental, tracked",
    "vault_throughput": "full backup",
    "job_list": "newest 50, Failed",
    "submission": "backup_now: 300 VMs / 50 VMs",
    "libvirt_backup": "incremental, libvirt",
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_a_benchmark_runs_tiny_to_its_report_and_leaves_no_work_directory(
    name: str, tmp_path: Path
) -> None:
    if name == "libvirt_backup" and (reason := libvirt_missing()):
        pytest.skip(reason)
    # Without a given server each benchmark starts an embedded one of its own.
    env = {k: v for k, v in os.environ.items() if k != "BACKUP_JOBS_REDIS_URL"}
    result = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", *TINY[name], "--dir", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert REPORTS[name] in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_the_readme_gives_the_command_of_every_benchmark() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Benchmarks\n", 1)[1].split("\n## ", 1)[0]
    modules = [
        p.stem
        for p in (REPO / "benchmarks").glob("*.py")
        if "def main(" in p.read_text() and p.stem != "__init__"
    ]

    assert sorted(m for m in modules if f"python -m benchmarks.{m}" not in section) == []
