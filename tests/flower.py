"""Flower for the tests, started as ``backup-jobs up`` starts it, with basic auth."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from backup_jobs.runtime import embedded, processes
from tests.harness import Cluster, eventually
from tests.up import http_status

AUTH = ("admin", "s3cret")


def get_json(url: str, auth: tuple[str, str] | None = None) -> Any:
    """The JSON Flower answers at ``url``, logged in with ``auth`` if given."""
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


@contextmanager
def running_flower(cluster: Cluster, data_dir: Path, port: int | None = None) -> Iterator[str]:
    """Flower on ``cluster`` with its state in ``data_dir``, until the block ends; its URL.

    It is stopped with SIGTERM, as ``up`` stops it, so it saves its state on the way out.
    """
    port = port or embedded.free_port()
    env = {
        **cluster.child_env(),
        "BACKUP_JOBS_FLOWER_USER": AUTH[0],
        "BACKUP_JOBS_FLOWER_PASSWORD": AUTH[1],
        "BACKUP_JOBS_FLOWER_PORT": str(port),
        "BACKUP_JOBS_DATA_DIR": str(data_dir),
    }
    command = processes.process_commands(cluster.settings())["flower"]
    with open(data_dir / "flower.log", "ab") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: http_status(base), 60)
        eventually(lambda: get_json(f"{base}/api/workers?refresh=1", AUTH), 30, 0.5)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()  # fail, but leave no Flower behind
            process.wait()
            raise


def progress_of(base: str, task_id: str) -> dict[str, Any] | None:
    """The task as Flower shows it while its transfer is under way (between 1 and 99 %)."""
    task = get_json(f"{base}/api/task/info/{task_id}", AUTH) if _known(base, task_id) else {}
    shown = re.match(r"Transfer data to vault (\d+)% \(", str(task.get("result")))
    return task if task.get("state") == "PROGRESS" and shown and 0 < int(shown[1]) < 100 else None


def _known(base: str, task_id: str) -> bool:
    try:
        get_json(f"{base}/api/task/info/{task_id}", AUTH)
    except urllib.error.HTTPError:
        return False
    return True
