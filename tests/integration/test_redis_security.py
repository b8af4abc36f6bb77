"""An external Redis locked down: TLS with client certificates, a password, an ACL user.

Workers, the tick consumer, beat, Flower and the client all talk TLS to a server that
listens on a TLS port only and asks for client certificates; a wrong password, a CA that
did not sign the server's certificate, a missing certificate file or an ACL user's wrong
password is one line from the CLI, naming what to fix, and no job starts.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from backup_jobs import errors
from backup_jobs.catalogs.redis import RedisCatalog
from backup_jobs.client import Client
from backup_jobs.connection import ssl_options
from backup_jobs.models import JobStatus
from backup_jobs.runtime import embedded, processes
from backup_jobs.settings import Settings
from tests.harness import FAST_ENV, Cluster, demo_fleet, eventually, own_cluster, run_cli, with_db
from tests.tls import Pki, make_pki, tls_env, tls_server, tls_server_binary
from tests.up import http_status

PASSWORD = "tls-" + uuid.uuid4().hex
FLOWER_AUTH = ("admin", "s3cret")


@dataclass(frozen=True)
class TlsRedis:
    """The TLS server of this module, its CA, and a CA that did not sign it."""

    url: str
    pki: Pki
    stranger: Pki


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    binary = tls_server_binary()
    if binary is None:
        pytest.skip("no redis-server or valkey-server built with TLS on this machine")
    root = tmp_path_factory.mktemp("tls")
    pki, stranger = make_pki(root / "pki"), make_pki(root / "stranger", "stranger")
    with tls_server(binary, root, pki, PASSWORD) as url:
        yield TlsRedis(url, pki, stranger)


def _with_password(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}"))


def _flower(cluster: Cluster, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Flower as `backup-jobs up` starts it, on loopback; its process and base URL."""
    port = embedded.free_port()
    env = {
        **cluster.child_env(),
        "BACKUP_JOBS_FLOWER_PORT": str(port),
        "BACKUP_JOBS_FLOWER_USER": FLOWER_AUTH[0],
        "BACKUP_JOBS_FLOWER_PASSWORD": FLOWER_AUTH[1],
    }
    command = processes.process_commands(cluster.settings())["flower"]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return process, f"http://127.0.0.1:{port}"


def _tasks(base: str) -> dict[str, Any]:
    request = urllib.request.Request(f"{base}/api/tasks")
    token = base64.b64encode(":".join(FLOWER_AUTH).encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        found: dict[str, Any] = json.loads(response.read())
    return found


def _seen_by_flower(client: Client, base: str) -> dict[str, Any] | None:
    """A discovery's task as Flower shows it, once Flower saw it from sent to succeeded."""
    job = client.discover().wait(30)
    for _ in range(10):
        task = _tasks(base).get(f"{job.id}.1")
        if task and task.get("name") and task.get("state") == "SUCCESS":
            return task
        time.sleep(0.1)
    return None


def test_worker_beat_flower_and_client_run_a_job_over_tls_with_client_certificates(
    tls_redis: TlsRedis, tmp_path: Path
) -> None:
    cluster = Cluster(tls_redis.url, tmp_path, {**FAST_ENV, **tls_env(tls_redis.pki)})
    cluster.start_all()
    flower, base = _flower(cluster, tmp_path / "flower.log")
    try:
        demo_fleet(tmp_path)
        client = cluster.client(tmp_path / "fleet")
        cluster.wait_ready("worker")
        eventually(lambda: http_status(base), 30)
        job = client.discover().wait(30)
        beat = eventually(lambda: client.catalog.client.get("bj:beat"), 20)
        # Flower answers HTTP before its event receiver is connected: a job may run unseen.
        task = eventually(lambda: _seen_by_flower(client, base), 30, 0.1)
    finally:
        flower.terminate()
        flower.wait(20)
        cluster.stop()

    assert job.status == JobStatus.COMPLETED, job.error
    assert len(client.vms()) == 13
    assert beat  # beat wrote its record over TLS
    assert task["name"] == "backup_jobs.discovery" and task["state"] == "SUCCESS"
    assert "CERTIFICATE_VERIFY_FAILED" not in cluster.log("worker")


def _tls_case(name: str) -> Callable[[TlsRedis, Path], dict[str, str]]:
    """The environment of one misconfigured client of the TLS server."""

    def env(server: TlsRedis, tmp_path: Path) -> dict[str, str]:
        good = {"BACKUP_JOBS_REDIS_URL": server.url, **tls_env(server.pki)}
        return {
            "wrong-password": {**good, "BACKUP_JOBS_REDIS_URL": server.url.replace(PASSWORD, "x")},
            "wrong-ca": {**good, "BACKUP_JOBS_REDIS_CA_FILE": str(server.stranger.ca)},
            "missing-cert": {**good, "BACKUP_JOBS_REDIS_CERT_FILE": str(tmp_path / "gone.pem")},
            "no-client-cert": {k: v for k, v in good.items() if "CERT" not in k and "KEY" not in k},
            "foreign-client-cert": {
                **good,
                "BACKUP_JOBS_REDIS_CERT_FILE": str(server.stranger.client_cert),
                "BACKUP_JOBS_REDIS_KEY_FILE": str(server.stranger.client_key),
            },
            "plain-url": {**good, "BACKUP_JOBS_REDIS_URL": server.url.replace("rediss:", "redis:")},
        }[name]

    return env


@pytest.mark.parametrize(
    ("case", "error", "names"),
    [
        ("wrong-password", errors.RedisUnavailable, "BACKUP_JOBS_REDIS_URL"),
        ("wrong-ca", errors.RedisUnavailable, "BACKUP_JOBS_REDIS_CA_FILE"),
        ("missing-cert", errors.ConfigurationError, "BACKUP_JOBS_REDIS_CERT_FILE="),
        ("no-client-cert", errors.RedisUnavailable, "BACKUP_JOBS_REDIS_CERT_FILE"),
        ("foreign-client-cert", errors.RedisUnavailable, "BACKUP_JOBS_REDIS_CERT_FILE"),
        ("plain-url", errors.ConfigurationError, "need a rediss:// BACKUP_JOBS_REDIS_URL"),
    ],
)
def test_a_wrong_password_ca_or_certificate_is_one_line_naming_the_setting_and_nothing_runs(
    tls_redis: TlsRedis,
    tmp_path: Path,
    case: str,
    error: type[errors.BackupJobsError],
    names: str,
) -> None:
    demo_fleet(tmp_path)
    vault = f"t-{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "BACKUP_JOBS_DATA_DIR": str(tmp_path),
        "BACKUP_JOBS_FLEET_DIR": str(tmp_path / "fleet"),
        "BACKUP_JOBS_VAULT": vault,
        **_tls_case(case)(tls_redis, tmp_path),
    }

    result = run_cli("vm", "discover", env=env, timeout=60)

    lines = result.stderr.strip().splitlines()
    assert result.returncode == error().exit_code, result.stderr
    assert lines[0].startswith(f"error: {error.__name__}: "), result.stderr
    assert names in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and PASSWORD not in result.stderr
    settings = Settings.from_env({"BACKUP_JOBS_REDIS_URL": tls_redis.url, **tls_env(tls_redis.pki)})
    catalog = RedisCatalog.from_url(tls_redis.url, ssl_options(settings, tls_redis.url))
    assert catalog.get_vault(vault) is None  # no job, not even the vault's record
    catalog.client.close()


@pytest.fixture
def acl_user(redis_base_url: str) -> Iterator[tuple[str, str]]:
    """A Redis ACL user with a password and every permission on the session's server."""
    admin = redis.Redis.from_url(redis_base_url)
    user, password = f"bj-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    # The rules as an operator writes them: on, a password, every key, channel and command.
    admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all")
    try:
        yield user, password
    finally:
        admin.acl_deluser(user)
        admin.close()


def test_an_acl_user_with_a_password_runs_jobs_and_a_wrong_password_is_one_line(
    redis_base_url: str, acl_user: tuple[str, str], tmp_path: Path
) -> None:
    user, password = acl_user
    url = _with_password(with_db(redis_base_url, 5), user, password)
    with own_cluster(url, tmp_path) as cluster:
        cluster.start("worker")
        demo_fleet(tmp_path)
        client = cluster.client(tmp_path / "fleet")
        job = client.discover().wait(30)
        wrong = run_cli(
            "vm",
            "list",
            env={
                **os.environ,
                "BACKUP_JOBS_DATA_DIR": str(tmp_path),
                "BACKUP_JOBS_REDIS_URL": _with_password(url, user, "not-" + password),
            },
        )

    assert job.status == JobStatus.COMPLETED, job.error
    assert wrong.returncode == errors.RedisUnavailable().exit_code
    assert wrong.stderr.startswith(
        f"error: RedisUnavailable: Cannot use Redis at redis://{user}:***@"
    )
    assert "authentication failed" in wrong.stderr and "BACKUP_JOBS_REDIS_URL" in wrong.stderr
    assert "Traceback" not in wrong.stderr and password not in wrong.stderr
