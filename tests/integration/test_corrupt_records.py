"""One corrupt record must not block everyone: garbage in every kind of record, then every
command and every tick must still work for the rest, and name the bad key.

Garbage is written as a bad tool or a bug would: text that is not JSON, JSON of the wrong
shape, bytes that are not UTF-8, a key of the wrong Redis type, stray index entries. Commands
run in-process (the CLI's ``main``) against the session's real server and worker; ticks run as
the tick consumer runs them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis

from backup_jobs import ticks, wire
from backup_jobs.cli.main import main
from backup_jobs.client import Client
from backup_jobs.models import JobStatus
from backup_jobs.operations import roll_back
from backup_jobs.providers.local import LocalFleet
from backup_jobs.providers.local_faults import Fault
from tests.harness import REGION, Cluster, eventually

VMS = 32


@dataclass
class Scene:
    """A vault with registered VMs, finished and waiting jobs, and a way to run the CLI."""

    client: Client
    fleet: LocalFleet
    raw: redis.Redis
    env: dict[str, str]
    done_job: str
    next_vm: Iterator[str]

    def key(self, kind: str) -> str:
        vault = self.client.vault.name
        return {
            "vault": wire.vault_key(vault),
            "vm": wire.vm_key(vault, "cs-fz/vm00"),
            "vmstate": wire.vm_state_key(vault, "cs-fz/vm00"),
            "job": wire.job_key(self.done_job),
        }[kind]


@pytest.fixture(scope="module")
def scene(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Scene:
    root = tmp_path_factory.mktemp("corrupt")
    fleet = LocalFleet(root / "fleet")
    (root / "fleet").mkdir()
    for n in range(VMS):
        fleet.create_vm("cs-fz", f"vm{n:02d}", REGION, os_disk_bytes=1 << 20)
    client = cluster.client(root / "fleet")
    assert client.discover().wait(30).status == JobStatus.COMPLETED
    done = client.register(["cs-fz/vm00"])[0].wait(30)
    assert done.status == JobStatus.COMPLETED
    env = {
        **cluster.child_env(),
        "BACKUP_JOBS_VAULT": client.vault.name,
        "BACKUP_JOBS_FLEET_DIR": str(root / "fleet"),
        "BACKUP_JOBS_REGION": REGION,
    }
    raw = redis.Redis.from_url(cluster.redis_url)
    return Scene(client, fleet, raw, env, done.id, iter(f"cs-fz/vm{n:02d}" for n in range(1, VMS)))


@pytest.fixture
def cli(
    scene: Scene, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    for name, value in scene.env.items():
        monkeypatch.setenv(name, value)

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            main(list(argv))
            code = 0
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    return run


def _commands_still_work(scene: Scene, cli: Callable[..., tuple[int, str, str]]) -> list[str]:
    """Run every command and every tick; return stderr of the listings (for the bad key)."""
    vm_list, job_list = cli("vm", "list"), cli("job", "list")
    assert vm_list[0] == 0 and job_list[0] == 0, (vm_list, job_list)
    assert cli("job", "show", scene.client.jobs()[-1].id)[0] == 0
    code, _, err = cli("vm", "register", next(scene.next_vm), "--wait")
    assert code == 0, err
    catalog, clock = scene.client.catalog, scene.client._clock
    dispatcher = scene.client._dispatcher
    ticks.dispatch_due_retries(catalog, dispatcher, clock)
    ticks.reap_lost_jobs(catalog, 2, clock, roll_back)
    ticks.sweep_queued(catalog, dispatcher, clock, 3600)
    assert cli("problem", "list")[0] == 0
    return [vm_list[2], job_list[2]]


GARBAGE: list[bytes] = [b"not json", b'{"id": 1}', b"[]", b"\xff\xfe not UTF-8"]


@pytest.mark.parametrize("garbage", GARBAGE, ids=["text", "shape", "array", "bytes"])
@pytest.mark.parametrize("kind", ["vault", "vm", "vmstate", "job"])
def test_a_garbage_record_is_named_by_listings_and_blocks_nothing_else(
    scene: Scene, cli: Callable[..., tuple[int, str, str]], kind: str, garbage: bytes
) -> None:
    key = scene.key(kind)
    good = scene.raw.get(key)
    scene.raw.set(key, garbage)
    try:
        warnings = " ".join(_commands_still_work(scene, cli))
        shown = cli("job", "show", scene.done_job)
        if kind in ("vm", "vmstate"):
            assert key in warnings
            assert cli("vm", "discover", "--wait")[0] == 0  # rewrites it from the provider
            assert key not in cli("vm", "list")[2]
        if kind == "job":
            assert key in warnings
            assert shown[0] == 5 and "CorruptRecord" in shown[2] and key in shown[2]
            assert "what to do" in shown[2]
    finally:
        if good is not None:
            scene.raw.set(key, good)


@pytest.mark.parametrize("kind", ["vm", "vmstate", "job"])
def test_a_key_of_the_wrong_redis_type_blocks_nothing_else(
    scene: Scene, cli: Callable[..., tuple[int, str, str]], kind: str
) -> None:
    key = scene.key(kind)
    good = scene.raw.get(key)
    scene.raw.delete(key)
    scene.raw.rpush(key, "a", "list")
    try:
        warnings = " ".join(_commands_still_work(scene, cli))
        assert key in warnings  # named, not taken for a record that is not there
        if kind == "job":
            code, _, err = cli("job", "show", scene.done_job)
            assert code == 5 and key in err
        else:
            assert cli("vm", "discover", "--wait")[0] == 0  # rewrites it from the provider
            assert key not in cli("vm", "list")[2]
    finally:
        scene.raw.delete(key)
        if good is not None:
            scene.raw.set(key, good)


def test_stray_entries_in_every_index_are_skipped_and_a_real_retry_still_runs(
    scene: Scene, cli: Callable[..., tuple[int, str, str]]
) -> None:
    vault = scene.client.vault.name
    scene.raw.set(wire.job_key("garbage-job"), b"{not json")
    scene.raw.zadd(wire.RETRY_SET_KEY, {"garbage-job": 0, "ghost-job": 0})
    scene.raw.sadd(wire.IN_PROGRESS_KEY, "garbage-job", "ghost-job")
    scene.raw.zadd(wire.QUEUED_KEY, {"garbage-job": 0, "ghost-job": 0})
    scene.raw.zadd(wire.job_index_key(vault), {"ghost-job": 0, "garbage-job": 1})
    scene.raw.sadd(wire.vm_index_key(vault), "cs-fz/ghost")
    scene.raw.hset(wire.PROBLEMS_KEY, "bj:odd", b"\xff not a problem record")
    scene.raw.hset(wire.TICKS_KEY, "odd-tick", "yesterday-ish")
    scene.fleet.faults.add(Fault("discovery-internal-error", times=1))
    try:
        handle = scene.client.discover()
        _commands_still_work(scene, cli)
        job = handle.wait(30)  # failed once, retried by the real tick consumer
        recorded = eventually(
            lambda: wire.job_key("garbage-job") in cli("problem", "list")[1], 10, 0.2
        )
        listed = json.loads(cli("problem", "list", "--json")[1])
        backed_off = scene.raw.zscore(wire.RETRY_SET_KEY, "garbage-job")
        still_running = scene.raw.sismember(wire.IN_PROGRESS_KEY, "garbage-job")
    finally:
        scene.raw.delete(wire.job_key("garbage-job"))
        scene.raw.zrem(wire.RETRY_SET_KEY, "garbage-job")
        scene.raw.srem(wire.IN_PROGRESS_KEY, "garbage-job")
        scene.raw.zrem(wire.QUEUED_KEY, "garbage-job")
        scene.raw.zrem(wire.job_index_key(vault), "ghost-job", "garbage-job")
        scene.raw.srem(wire.vm_index_key(vault), "cs-fz/ghost")
        scene.raw.hdel(wire.PROBLEMS_KEY, "bj:odd")
        scene.raw.hdel(wire.TICKS_KEY, "odd-tick")

    assert job.status == JobStatus.COMPLETED and job.attempt == 2
    assert recorded
    assert any("bj:odd" in p["key"] for p in listed)
    # An unreadable record keeps its entries (backed off) for when it is repaired; a record
    # that is gone loses them.
    assert backed_off is not None and backed_off > time.time()
    assert still_running
    assert not scene.raw.sismember(wire.IN_PROGRESS_KEY, "ghost-job")
    assert scene.raw.zscore(wire.QUEUED_KEY, "ghost-job") is None


def test_index_keys_made_strings_are_replaced_named_and_a_retry_still_runs(
    scene: Scene, cli: Callable[..., tuple[int, str, str]]
) -> None:
    indexes = (wire.IN_PROGRESS_KEY, wire.RETRY_SET_KEY, wire.QUEUED_KEY)
    for index in indexes:
        scene.raw.set(index, "garbage")
    scene.fleet.faults.add(Fault("discovery-internal-error", times=1))

    job = scene.client.discover().wait(30)  # failed once, retried by the real tick consumer
    listed = cli("problem", "list")[1]

    assert job.status == JobStatus.COMPLETED and job.attempt == 2
    assert all(index in listed for index in indexes), listed
    assert "(unknown key)" not in listed
    assert {scene.raw.type(index) for index in indexes} <= {b"none", b"set", b"zset"}


def test_a_stale_lease_and_a_corrupt_fencing_counter_do_not_block_their_vm(
    scene: Scene, cli: Callable[..., tuple[int, str, str]]
) -> None:
    vault = scene.client.vault.name
    locked, fenced = next(scene.next_vm), next(scene.next_vm)
    scene.raw.set(wire.lock_key(vault, locked), "some-job-that-never-existed")  # no TTL
    scene.raw.set(wire.fence_key(vault, fenced), "not-a-number")

    first = cli("vm", "register", locked, "--wait")
    second = cli("vm", "register", fenced, "--wait")

    assert first[0] == 0, first
    assert second[0] == 0, second
    assert int(scene.raw.get(wire.fence_key(vault, fenced)) or 0) > 1_000_000_000_000
