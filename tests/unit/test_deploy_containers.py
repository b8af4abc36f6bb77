"""deploy/'s image, compose file and Kubernetes manifests, parsed and held to their invariants.

One beat, always; workers that scale and share the vault and the fleet; a warm shutdown that
outlasts the longest job; Redis with the AOF and noeviction of deploy/redis.conf on a
persistent volume; secrets from a Secret, never written in a manifest; nothing runs as root.
``docker compose config`` checks the compose file where that tool works.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_deploy import DEPLOY, example_env, longest_job_seconds, same_as_up

KUBERNETES = DEPLOY / "kubernetes"
SERVICES = ("worker", "ticks", "beat", "flower", "exporter")


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def _manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """Every Kubernetes object kustomization.yaml applies, by (kind, name)."""
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    found = {}
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((KUBERNETES / resource).read_text()):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def _container(manifests: dict[tuple[str, str], dict[str, Any]], name: str) -> dict[str, Any]:
    pod = manifests[("Deployment", f"backup-jobs-{name}")]["spec"]["template"]["spec"]
    container: dict[str, Any] = pod["containers"][0]
    return container


def _duration_seconds(text: str) -> int:
    """A compose duration (``6h35m``, ``30s``) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([hms])", text))


def _instructions() -> dict[str, list[str]]:
    """The Dockerfile's instructions by name, continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line[:1].isupper():
            name, rest = line.split(None, 1)
            found.setdefault(name, []).append(" ".join(rest.split()))
    return found


def test_the_image_installs_the_package_runs_as_a_user_and_checks_its_health() -> None:
    dockerfile = _instructions()

    assert dockerfile["FROM"] == ["python:3.11-slim"]
    assert any(run.startswith("pip install . ") for run in dockerfile["RUN"])
    assert dockerfile["USER"][-1] not in ("root", "0")
    assert dockerfile["HEALTHCHECK"][-1].endswith('CMD ["backup-jobs", "health"]')
    same_as_up("worker", yaml.safe_load(dockerfile["CMD"][-1]))


def test_compose_runs_each_process_once_as_up_does_with_redis_from_deploy_redis_conf() -> None:
    services = _compose()["services"]

    assert set(services) == {"redis", *SERVICES}
    for kind in ("worker", "ticks", "beat"):
        same_as_up(kind, services[kind]["command"])
    assert services["flower"]["command"] == ["backup-jobs", "flower"]
    assert services["exporter"]["command"] == ["backup-jobs", "exporter"]
    assert services["beat"]["deploy"]["replicas"] == 1
    assert "./redis.conf:/usr/local/etc/redis/redis.conf:ro" in services["redis"]["volumes"]
    assert "/usr/local/etc/redis/redis.conf" in " ".join(services["redis"]["command"])


def test_compose_workers_share_the_vault_and_fleet_and_stop_warm() -> None:
    services = _compose()["services"]
    env = example_env()
    worker = services["worker"]

    mounts = dict(volume.split(":")[1::-1] for volume in worker["volumes"])
    assert mounts[env["BACKUP_JOBS_VAULT_DIR"]] == "vault"
    assert mounts[env["BACKUP_JOBS_FLEET_DIR"]] == "fleet"
    assert mounts[env["BACKUP_JOBS_RESTORE_ROOT"]] == "restores"
    assert worker["stop_signal"] == "SIGTERM"
    assert _duration_seconds(worker["stop_grace_period"]) > longest_job_seconds()


def test_compose_takes_its_passwords_from_the_environment_and_requires_them() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    services = _compose()["services"]

    assert "${BACKUP_JOBS_REDIS_PASSWORD:?" in text
    assert services["flower"]["environment"]["BACKUP_JOBS_FLOWER_PASSWORD"].startswith(
        "${BACKUP_JOBS_FLOWER_PASSWORD:?"
    )
    assert services["flower"]["environment"]["BACKUP_JOBS_FLOWER_ADDRESS"] == (
        "0.0.0.0"  # noqa: S104 - Flower's address in the container, behind basic auth
    )


def _docker_compose_works() -> bool:
    try:
        found = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=30, check=False
        )
    except OSError:
        return False
    return found.returncode == 0


@pytest.mark.skipif(not _docker_compose_works(), reason="no `docker compose` here")
def test_docker_compose_accepts_the_compose_file() -> None:
    env = {
        **os.environ,
        "BACKUP_JOBS_REDIS_PASSWORD": "p",
        "BACKUP_JOBS_FLOWER_PASSWORD": "f",
    }
    result = subprocess.run(
        ["docker", "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr


def test_kubernetes_beat_is_exactly_one_pod_never_two_during_a_rollout() -> None:
    beat = _manifests()[("Deployment", "backup-jobs-beat")]

    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}


def test_kubernetes_processes_run_as_up_runs_them() -> None:
    manifests = _manifests()

    for kind in ("worker", "ticks", "beat"):
        same_as_up(kind, [str(arg) for arg in _container(manifests, kind)["command"]])
    assert _container(manifests, "flower")["command"] == ["backup-jobs", "flower"]
    assert _container(manifests, "exporter")["command"] == ["backup-jobs", "exporter"]


def test_kubernetes_workers_scale_share_a_read_write_many_vault_and_stop_warm() -> None:
    manifests = _manifests()
    worker = manifests[("Deployment", "backup-jobs-worker")]["spec"]
    config = manifests[("ConfigMap", "backup-jobs")]["data"]
    pod = worker["template"]["spec"]

    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    mounts = {m["mountPath"]: claims.get(m["name"]) for m in pod["containers"][0]["volumeMounts"]}
    assert worker["replicas"] >= 2
    for variable, claim in (("VAULT_DIR", "vault"), ("FLEET_DIR", "fleet")):
        assert mounts[config[f"BACKUP_JOBS_{variable}"]] == f"backup-jobs-{claim}"
        pvc = manifests[("PersistentVolumeClaim", f"backup-jobs-{claim}")]
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pod["terminationGracePeriodSeconds"] > longest_job_seconds()


def test_kubernetes_redis_persists_its_aof_with_deploy_redis_conf() -> None:
    manifests = _manifests()
    redis = manifests[("StatefulSet", "backup-jobs-redis")]["spec"]
    container = redis["template"]["spec"]["containers"][0]
    conf = manifests[("ConfigMap", "backup-jobs-redis")]["data"]["redis.conf"]

    assert conf == (DEPLOY / "redis.conf").read_text()
    assert container["args"][0] == "/etc/redis/redis.conf"
    data_dir = container["args"][container["args"].index("--dir") + 1]
    assert {"name": "data", "mountPath": data_dir} in container["volumeMounts"]
    assert [t["metadata"]["name"] for t in redis["volumeClaimTemplates"]] == ["data"]
    assert "$(REDIS_PASSWORD)" in container["args"]


def test_kubernetes_secrets_come_from_the_secret_and_nothing_runs_as_root() -> None:
    manifests = _manifests()
    flower_env = {e["name"]: e for e in _container(manifests, "flower")["env"]}

    for variable in ("BACKUP_JOBS_FLOWER_USER", "BACKUP_JOBS_FLOWER_PASSWORD"):
        assert flower_env[variable]["valueFrom"]["secretKeyRef"]["name"] == "backup-jobs"
    assert ("Secret", "backup-jobs") not in manifests  # the example is never applied
    for (kind, name), doc in manifests.items():
        if kind not in ("Deployment", "StatefulSet"):
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            env = {e["name"]: e for e in container.get("env", [])}
            if "BACKUP_JOBS_REDIS_URL" in env:
                assert "$(REDIS_PASSWORD)" in env["BACKUP_JOBS_REDIS_URL"]["value"], name
    assert not [
        p
        for p in KUBERNETES.glob("*.yaml")
        if "CHANGE-ME" in p.read_text() and p.name != "secret.example.yaml"
    ]


def test_kustomization_applies_every_manifest_but_the_secret_example() -> None:
    listed = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"]
    present = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}

    assert sorted(listed) == sorted(present - {"secret.example.yaml"})


def test_every_backup_jobs_pod_writes_only_to_its_volumes() -> None:
    manifests = _manifests()
    for name in SERVICES:
        container = _container(manifests, name)
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        paths = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/tmp", "/var/lib/backup-jobs"} <= paths, name  # noqa: S108 - a mount path


def test_the_compose_file_and_the_manifests_agree_with_the_image_on_paths() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    config = _manifests()[("ConfigMap", "backup-jobs")]["data"]

    for variable in ("DATA_DIR", "VAULT_DIR", "FLEET_DIR", "RESTORE_ROOT"):
        value = config[f"BACKUP_JOBS_{variable}"]
        assert f"BACKUP_JOBS_{variable}={value}" in dockerfile, variable
        assert value == example_env()[f"BACKUP_JOBS_{variable}"], variable
    assert Path(config["BACKUP_JOBS_DATA_DIR"]).is_absolute()
