"""Submission cost against the vault's size: one register or backup_now, small and large vault.

Two vaults in one database (of the embedded server, or BACKUP_JOBS_REDIS_URL): a small one
(--small VMs) and a large one (--vms VMs), their VM records written straight into the catalog
(pipelined, as discovery would leave them). Each run times, in both vaults and in alternating
order, ``client.register`` of one VM by id and by its bare name, and ``client.backup_now`` of a
protected VM (through the real Celery dispatcher; no worker runs, the messages wait in their
queues), beside one ``list_vms`` of the vault (what every submission used to read).

    python -m benchmarks.submission [--vms 100000] [--small 100] [--calls 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import redis

from backup_jobs import wire
from backup_jobs.catalogs.records import dump
from backup_jobs.catalogs.redis import RedisCatalog
from backup_jobs.client import Client
from backup_jobs.dispatchers.celery import CeleryDispatcher
from backup_jobs.items import ProtectedItem, ProtectionState
from backup_jobs.models import VM, RegistrationState
from backup_jobs.settings import Settings
from benchmarks.common import SUBMISSION_DB, arguments, header, redis_database, row, workspace

# VM records written per pipelined round trip while loading.
LOAD_BATCH = 5000
# The VMs spread over this many cloud services; their names are unique all the same.
CLOUD_SERVICES = 20


def _vm(i: int) -> VM:
    return VM(f"vm{i:06d}", f"cs{i % CLOUD_SERVICES:02d}", "local-1")


def load(r: redis.Redis, catalog: RedisCatalog, vault: str, n: int) -> VM:
    """Write ``n`` VM records and their indexes; the last VM registered and protected."""
    for start in range(0, n, LOAD_BATCH):
        pipe = r.pipeline(transaction=False)
        for i in range(start, min(n, start + LOAD_BATCH)):
            vm = _vm(i)
            pipe.set(wire.vm_key(vault, vm.id), dump(vm.properties_dict()))
            pipe.sadd(wire.vm_index_key(vault), vm.id)
            pipe.sadd(wire.vm_name_key(vault, vm.name), vm.id)
        pipe.execute()
    protected = _vm(n - 1)
    catalog.put_vm_state(vault, replace(protected, registration=RegistrationState.REGISTERED))
    catalog.put_item(ProtectedItem(vault, protected.id, "nightly", ProtectionState.PROTECTED))
    return protected


def _median_ms(calls: int, call: Callable[[int], object]) -> float:
    times = []
    for i in range(calls):
        start = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(client: Client, n: int, calls: int, run: int, protected: VM) -> dict[str, float]:
    """Median seconds of each submission in one vault.

    Each register names another VM (round the vault's unregistered VMs: with no worker, a VM
    stays unregistered, and registering it again is one more job).
    """

    def vm(i: int) -> VM:
        return _vm((run * 2 * calls + i) % (n - 1))

    return {
        "register by id": _median_ms(calls, lambda i: client.register(vm(i).id)),
        "register by name": _median_ms(calls, lambda i: client.register(vm(calls + i).name)),
        "backup_now": _median_ms(calls, lambda i: client.backup_now(protected.name)),
        "list every VM (old)": _median_ms(3, lambda i: client.catalog.list_vms(client.vault.name)),
    }


def run(args: argparse.Namespace, work: Path, url: str) -> dict[int, dict[str, list[float]]]:
    """Each size's medians per run, the sizes in alternating order."""
    r = redis.Redis.from_url(url)
    clients: dict[int, tuple[Client, VM]] = {}
    for size in (args.small, args.vms):
        start = time.perf_counter()
        settings = Settings(redis_url=url, data_dir=work, vault=f"v{size}", region="local-1")
        catalog = RedisCatalog.from_url(url)
        protected = load(r, catalog, settings.vault, size)
        clients[size] = (
            Client(settings, catalog, CeleryDispatcher.from_url(settings, url)),
            protected,
        )
        print(f"loaded {size} VMs in {time.perf_counter() - start:.1f}s", flush=True)
    figures: dict[int, dict[str, list[float]]] = {size: {} for size in clients}
    for n in range(args.runs):
        for size in sorted(clients, reverse=n % 2 == 1):
            client, protected = clients[size]
            for what, value in measure(client, size, args.calls, n, protected).items():
                figures[size].setdefault(what, []).append(value)
    return figures


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--vms", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    with workspace(args.dir, "bj-bench-") as work, redis_database(work, SUBMISSION_DB) as url:
        figures = run(args, work, url)
    header(f"{args.runs} runs of {args.calls} calls (median per run)")
    for size, measured in figures.items():
        for what, values in measured.items():
            note = "goal < 10 ms" if size == args.vms and what != "list every VM (old)" else ""
            row(f"{size} VMs, {what}", values, "ms", note)
    small, large = figures[args.small], figures[args.vms]
    for what in ("register by id", "register by name", "backup_now"):
        ratios = [b / a for a, b in zip(small[what], large[what], strict=True)]
        print(f"{what}: {args.vms} VMs / {args.small} VMs = x{statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
