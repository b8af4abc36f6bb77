"""Looking a named VM up for a submission: direct, whatever the vault's size, and as exact as
the whole-inventory resolution it replaced (ambiguous, unknown, deleted, unreadable names).

The contract part runs on every catalog (memory and Redis); the client part on both too, with
``list_vms`` made to fail, so that a submission that reads the whole inventory fails the test.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from backup_jobs import Client, errors, wire
from backup_jobs.catalog import Catalog
from backup_jobs.catalogs.memory import MemoryCatalog
from backup_jobs.catalogs.redis import RedisCatalog
from backup_jobs.items import ProtectedItem, ProtectionState
from backup_jobs.models import VM, Listing, RegistrationState
from backup_jobs.settings import Settings
from backup_jobs.testing import FrozenClock, RecordingDispatcher

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
FLEET = (
    VM("web01", "cs1", "r1"),
    VM("db01", "cs1", "r1"),
    VM("db01", "cs2", "r1"),
    VM("gone01", "cs1", "r1", deleted=True),
    VM("app01", "cs1", "r1", registration=RegistrationState.REGISTERED),
    VM("app01", "cs3", "r1", deleted=True),
)


def _fill(catalog: Catalog) -> None:
    for vm in FLEET:
        catalog.put_vm("v", vm)
        catalog.put_vm_state("v", vm)


def _corrupt(catalog: Catalog, key: str) -> None:
    if isinstance(catalog, MemoryCatalog):
        catalog.records[key] = "{not json"
    else:
        assert isinstance(catalog, RedisCatalog)
        catalog.client.set(key, "{not json")


def _no_listing(vault: str) -> Listing[VM]:
    raise AssertionError("a submission for named VMs read the whole inventory")


@pytest.fixture
def client(catalog: Catalog, tmp_path: Path) -> Client:
    _fill(catalog)
    catalog.put_item(ProtectedItem("v", "cs1/app01", "nightly", ProtectionState.PROTECTED))
    settings = Settings(vault="v", region="r1", fleet_dir=tmp_path)
    return Client(settings, catalog, RecordingDispatcher(), FrozenClock(T0))


# --- the port ---------------------------------------------------------------------------------


def test_find_vms_by_id_is_that_vm_and_by_bare_name_every_cloud_service_s(
    catalog: Catalog,
) -> None:
    _fill(catalog)

    assert [vm.id for vm in catalog.find_vms("v", "cs2/db01")] == ["cs2/db01"]
    assert [vm.id for vm in catalog.find_vms("v", "db01")] == ["cs1/db01", "cs2/db01"]
    assert [vm.id for vm in catalog.find_vms("v", "web01")] == ["cs1/web01"]


def test_find_vms_includes_deleted_vms_and_finds_nothing_for_unknown_names(
    catalog: Catalog,
) -> None:
    _fill(catalog)

    assert [(vm.id, vm.deleted) for vm in catalog.find_vms("v", "app01")] == [
        ("cs1/app01", False),
        ("cs3/app01", True),
    ]
    assert [vm.id for vm in catalog.find_vms("v", "cs1/gone01")] == ["cs1/gone01"]
    for name in ("nosuch", "cs9/web01", "cs1/nosuch", "web0"):
        found = catalog.find_vms("v", name)
        assert list(found) == [] and found.problems == [], name
    assert list(catalog.find_vms("other", "web01")) == []


@pytest.mark.parametrize(
    "key", [wire.vm_key("v", "cs1/web01"), wire.vm_state_key("v", "cs1/web01")]
)
def test_find_vms_names_an_unreadable_record_as_a_problem(catalog: Catalog, key: str) -> None:
    _fill(catalog)
    _corrupt(catalog, key)

    for name in ("web01", "cs1/web01"):
        found = catalog.find_vms("v", name)
        assert list(found) == [] and [p.key for p in found.problems] == [key]


def test_get_vms_reads_ids_in_their_order_deleted_included_unknown_left_out(
    catalog: Catalog,
) -> None:
    _fill(catalog)
    _corrupt(catalog, wire.vm_state_key("v", "cs2/db01"))

    found = catalog.get_vms("v", ["cs1/app01", "cs9/web01", "cs1/gone01", "cs2/db01", "cs1/web01"])

    assert [(vm.id, vm.deleted) for vm in found] == [
        ("cs1/app01", False),
        ("cs1/gone01", True),
        ("cs1/web01", False),
    ]
    assert [p.key for p in found.problems] == [wire.vm_state_key("v", "cs2/db01")]
    assert found[0].registration == RegistrationState.REGISTERED
    assert list(catalog.get_vms("other", ["cs1/web01"])) == list(catalog.get_vms("v", [])) == []


def test_get_vms_reads_many_ids_a_batch_at_a_time(scratch_url: str) -> None:
    catalog = RedisCatalog.from_url(scratch_url)
    fleet = [VM(f"vm{i:03d}", "cs1", "r1") for i in range(450)]
    for vm in fleet:
        catalog.put_vm("v", vm)
    calls = lambda: int(catalog.client.info("commandstats")["cmdstat_evalsha"]["calls"])  # noqa: E731
    before = calls()

    found = catalog.get_vms("v", [vm.id for vm in fleet])

    assert [vm.id for vm in found] == [vm.id for vm in fleet] and found.problems == []
    assert calls() - before == 3  # 200 VMs per script


def test_a_vm_recorded_before_the_name_index_is_found_by_its_name_and_indexed(
    scratch_url: str,
) -> None:
    catalog = RedisCatalog.from_url(scratch_url)
    _fill(catalog)
    catalog.client.delete(wire.vm_name_key("v", "db01"))

    assert [vm.id for vm in catalog.find_vms("v", "db01")] == ["cs1/db01", "cs2/db01"]
    assert catalog.client.smembers(wire.vm_name_key("v", "db01")) == {"cs1/db01", "cs2/db01"}


def test_a_name_index_of_the_wrong_type_is_replaced(scratch_url: str) -> None:
    catalog = RedisCatalog.from_url(scratch_url)
    _fill(catalog)
    catalog.client.set(wire.vm_name_key("v", "db01"), "garbage")
    catalog.client.set(wire.vm_name_key("v", "new01"), "garbage")

    assert [vm.id for vm in catalog.find_vms("v", "db01")] == ["cs1/db01", "cs2/db01"]
    catalog.put_vm("v", VM("new01", "cs1", "r1"))
    assert [vm.id for vm in catalog.find_vms("v", "new01")] == ["cs1/new01"]


# --- submissions ------------------------------------------------------------------------------


def test_submitting_for_named_vms_never_reads_the_whole_inventory(client: Client) -> None:
    client.catalog.list_vms = _no_listing  # type: ignore[method-assign]

    batch = client.register(["web01", "cs2/db01", "cs1/db01"])
    backup = client.backup_now("cs1/app01")
    stop = client.stop_protection("cs1/app01")  # "app01" is ambiguous here: deleted VMs count

    assert [h.job().item for h in batch] == ["cs1/web01", "cs2/db01", "cs1/db01"]
    assert batch.refused == ()
    assert backup.job().item == stop.job().item == "cs1/app01"


def test_a_batch_of_ids_is_read_in_one_go_not_one_lookup_per_name(client: Client) -> None:
    looked_up: list[str] = []
    find_vms = client.catalog.find_vms

    def find_one(vault: str, name: str) -> Listing[VM]:
        looked_up.append(name)
        return find_vms(vault, name)

    client.catalog.find_vms = find_one  # type: ignore[method-assign]

    batch = client.register(["cs1/web01", "cs2/db01", "cs1/db01", "web01", "cs1/gone01"])

    assert [h.job().item for h in batch] == ["cs1/web01", "cs2/db01", "cs1/db01"]
    assert [(r.name, r.error.code) for r in batch.refused] == [
        ("cs1/gone01", "VMNotFoundInInventory")
    ]
    assert looked_up == ["web01", "cs1/gone01"]  # a bare name; an id with no live VM


def test_a_name_used_in_two_cloud_services_is_refused_naming_both(client: Client) -> None:
    batch = client.register(["db01"])

    assert [r.error.code for r in batch.refused] == ["AmbiguousVMName"]
    assert "cs1/db01, cs2/db01" in str(batch.refused[0].error)


def test_a_deleted_vm_does_not_make_a_name_ambiguous_nor_is_it_submitted(client: Client) -> None:
    with pytest.raises(errors.NotProtected):  # app01 is cs1/app01: cs3/app01 was deleted
        client.backup_now("cs1/web01")
    assert client.backup_now("app01").job().item == "cs1/app01"

    batch = client.register(["gone01", "cs1/gone01"])

    assert [r.error.code for r in batch.refused] == ["VMNotFoundInInventory"] * 2


def test_an_unknown_name_is_refused_with_the_names_it_is_close_to(client: Client) -> None:
    batch = client.register(["web02", "cs9/web01"])

    assert [r.error.code for r in batch.refused] == ["VMNotFoundInInventory"] * 2
    assert "web01" in str(batch.refused[0].error)
    with pytest.raises(errors.VMNotFoundInInventory):
        client.backup_now("nosuch")


def test_a_name_that_is_not_utf8_is_refused_by_itself_and_the_others_go_on(
    client: Client,
) -> None:
    # Bytes that are not UTF-8 reach Python as lone surrogates (os.fsdecode): Redis cannot
    # encode them into a key, and one such name failed the whole batch with UnicodeEncodeError.
    bad = b"cs1/web\xff".decode("utf-8", "surrogateescape")

    batch = client.register(["cs1/web01", bad, "web\udcff", "db01"])

    assert [h.job().item for h in batch] == ["cs1/web01"]
    assert [(r.name, r.error.code) for r in batch.refused] == [
        (bad, "VMNotFoundInInventory"),
        ("web\udcff", "VMNotFoundInInventory"),
        ("db01", "AmbiguousVMName"),
    ]
    assert "not valid UTF-8" in str(batch.refused[0].error)


def test_unknown_names_of_a_batch_read_the_whole_inventory_once_for_all_their_hints(
    client: Client,
) -> None:
    # One read of every VM per unknown name: 1000 typos in a vault of 5000 VMs took minutes.
    listings: list[str] = []
    list_vms = client.catalog.list_vms

    def counted(vault: str) -> Listing[VM]:
        listings.append(vault)
        return list_vms(vault)

    client.catalog.list_vms = counted  # type: ignore[method-assign]
    names = ["web02", "cs9/web01", "nosuch", "cs1/web01", "db02"]

    batch = client.register(names)

    assert [h.job().item for h in batch] == ["cs1/web01"]
    assert [(r.name, r.error.code) for r in batch.refused] == [
        (name, "VMNotFoundInInventory") for name in ["web02", "cs9/web01", "nosuch", "db02"]
    ]
    assert "Did you mean: web01" in str(batch.refused[0].error)
    assert "db01" in str(batch.refused[3].error)
    assert len(listings) == 1


def test_the_jobs_of_a_vm_whose_record_is_unreadable_are_listed_by_its_id(
    client: Client,
) -> None:
    job = client.register(["cs1/web01"])[0].job()
    _corrupt(client.catalog, wire.vm_state_key("v", "cs1/web01"))

    assert [j.id for j in client.jobs(item="cs1/web01")] == [job.id]
    with pytest.raises(errors.CorruptRecord):  # a bare name needs the record: it says why
        client.jobs(item="web01")


def test_a_vm_whose_record_is_unreadable_is_refused_naming_the_record(client: Client) -> None:
    key = wire.vm_state_key("v", "cs1/app01")
    _corrupt(client.catalog, key)

    batch = client.register(["web01", "app01"])

    assert [h.job().item for h in batch] == ["cs1/web01"]
    assert [(r.name, r.error.code) for r in batch.refused] == [("app01", "CorruptRecord")]
    # Its action says `problem list` shows every record found unreadable: it is there.
    assert [(p.key, p.seen_by) for p in client.problems()] == [(key, "submission")]
    with pytest.raises(errors.CorruptRecord) as raised:
        client.backup_now("cs1/app01")
    assert raised.value.item == key


def test_put_vm_still_fails_when_an_index_write_is_refused_for_another_reason(
    scratch_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An index of the wrong type is replaced; any other refusal (out of memory) is an error.
    catalog = RedisCatalog.from_url(scratch_url)
    real = catalog.client.pipeline

    def refusing(*args: Any, **kwargs: Any) -> Any:
        pipe = real(*args, **kwargs)
        execute = pipe.execute

        def refused(raise_on_error: bool = True) -> list[Any]:
            replies = execute(raise_on_error=raise_on_error)
            return [replies[0], redis.ResponseError("OOM command not allowed"), *replies[2:]]

        pipe.execute = refused
        return pipe

    monkeypatch.setattr(catalog.client, "pipeline", refusing)
    with pytest.raises(errors.BackupJobsError):
        catalog.put_vm("v", VM("web01", "cs1", "r1"))
