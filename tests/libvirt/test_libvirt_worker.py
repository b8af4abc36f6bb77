"""The libvirt provider under a real Celery worker, driven through the Client as a user would.

The worker runs with ``BACKUP_JOBS_PROVIDER=libvirt`` on the session's libvirt host (as root,
as it must to drive ``qemu:///system``) and its own Redis database; the VM is the agent guest.
"""

from __future__ import annotations

from pathlib import Path

from backup_jobs.models import JobStatus
from backup_jobs.policies import Retention, ScheduleKind, make_policy
from tests.harness import own_cluster, with_db
from tests.libvirt.guest import Guest
from tests.libvirt.host import URI
from tests.libvirt.usecases import content

# Databases 1-6 and 9 belong to other tests (tests/conftest.py, tests/integration), 5-8 and 10
# to the benchmarks.
DATABASE = 11
POLICY = make_policy("daily", ScheduleKind.DAILY, times=["03:00"], retention=Retention(7))
# ext4's primary superblock: rewritten by the thaw after the point (tests/libvirt/guest.py).
SUPERBLOCK = slice(1024, 2048)


def test_a_worker_discovers_registers_protects_backs_up_and_restores_a_libvirt_domain(
    agent_guest: Guest, redis_base_url: str, tmp_path: Path
) -> None:
    agent_guest.run("dd if=/dev/urandom of=/dev/vdb bs=1M count=3 seek=5 conv=fsync 2>/dev/null")
    env = {
        "BACKUP_JOBS_PROVIDER": "libvirt",
        "BACKUP_JOBS_LIBVIRT_URI": URI,
        "BACKUP_JOBS_LIBVIRT_IMAGES_DIR": str(tmp_path / "images"),
    }
    with own_cluster(with_db(redis_base_url, DATABASE), tmp_path, **env) as cluster:
        cluster.start("worker")
        cluster.wait_ready("worker")
        client = cluster.client(tmp_path / "fleet", vault_dir=tmp_path / "vault")

        discovery = client.discover().wait(60)
        assert discovery.status == JobStatus.COMPLETED, discovery.error
        registered = [h.wait(60) for h in client.register(agent_guest.domain)]
        client.create_policy(POLICY)
        protect = [h.wait(60) for h in client.protect(agent_guest.domain, "daily", backup_now=True)]
        backup = client.handle(str(protect[0].properties["initial_backup_job"])).wait(120)
        point = str(backup.properties["recovery_point_id"])
        target = client.settings.restore_root / "out"
        restore = client.restore(agent_guest.domain, point, target).wait(120)

    assert [j.status for j in registered + protect] == [JobStatus.COMPLETED] * 2
    assert backup.status == JobStatus.COMPLETED, backup.error
    assert backup.properties["consistency"] == "FileSystemConsistent"
    assert restore.status == JobStatus.COMPLETED, restore.error
    assert (target / "vdb.img").read_bytes() == content(agent_guest.blank)
    ext4, now = (target / "vda.img").read_bytes(), content(agent_guest.image)
    assert ext4[: SUPERBLOCK.start] == now[: SUPERBLOCK.start]
    assert ext4[SUPERBLOCK.stop :] == now[SUPERBLOCK.stop :]
