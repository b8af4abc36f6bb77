"""The README's "Using it" examples, run in order exactly as written, against `backup-jobs up`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.harness import REPO
from tests.up import Up, stack_env


def _using_it_blocks() -> tuple[list[str], str, list[str]]:
    """The first shell block's lines (without `backup-jobs up` and comments), the Python
    block, and the protection block's lines (the fleet block shows a syntax, not a script)."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Using it\n", 1)[1].split("\n## ", 1)[0]
    shells = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    python = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    protection = [block for block in shells if "policy create" in block]
    assert shells and python and protection, "the Using it section lost one of its blocks"
    return _commands(shells[0]), python.group(1), _commands(protection[0])


def _commands(block: str) -> list[str]:
    return [
        line
        for line in block.splitlines()
        if line.strip()
        and not line.lstrip().startswith("#")
        and line.split()[:2] != ["backup-jobs", "up"]
    ]


def _run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_readme_using_it_examples_run_in_order_as_written(tmp_path: Path) -> None:
    lines, python, protection = _using_it_blocks()
    data = tmp_path / "data"
    env = stack_env(data)
    up = Up(env, tmp_path, "up", "--no-flower")  # the examples do not use Flower
    try:
        up.wait_for("Running", 120)
        shell = _run(["bash", "-c", "set -e\n" + "\n".join(lines)], env, tmp_path)
        script = _run([sys.executable, "-c", python], env, tmp_path)
        protected = _run(["bash", "-c", "set -e\n" + "\n".join(protection)], env, tmp_path)
    finally:
        up.stop()

    assert len(lines) >= 6 and any("job show" in line for line in lines)
    assert shell.returncode == 0, shell.stdout + shell.stderr
    assert '"status": "Completed"' in shell.stdout  # the newest job, shown as JSON
    assert script.returncode == 0, script.stdout + script.stderr
    assert "refused remote01 RegionMismatch" in script.stdout
    assert "cs-web/shared01 Completed None" in script.stdout
    assert "cs-db/shared01 Completed None" in script.stdout
    assert protected.returncode == 0, protected.stdout + protected.stderr
    assert "cs-web/web01  nightly  Protected" in protected.stdout
    assert "Transfer data to vault    Completed" in protected.stdout  # the incremental's job
