"""The Python API on in-memory adapters: submission checks, filters, handles."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backup_jobs import Batch, Client, JobTimeout, Refusal, errors
from backup_jobs.models import VM, JobStatus, Operation, RegistrationState
from backup_jobs.settings import Settings
from backup_jobs.testing import FrozenClock, MemoryCatalog, RecordingDispatcher

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def parts(tmp_path: Path) -> tuple[Client, MemoryCatalog, RecordingDispatcher, FrozenClock]:
    catalog, dispatcher, clock = MemoryCatalog(), RecordingDispatcher(), FrozenClock(T0)
    settings = Settings(vault="v", region="r1", fleet_dir=tmp_path)
    for vm in (
        VM("web01", "cs1", "r1"),
        VM("db01", "cs1", "r1"),
        VM("db01", "cs2", "r1"),
        VM("far01", "cs3", "r2"),
        VM("gone01", "cs1", "r1", deleted=True),
    ):
        catalog.put_vm("v", vm)
    return Client(settings, catalog, dispatcher, clock), catalog, dispatcher, clock


def test_only_submitting_records_the_vault_and_its_fleet_directory(  # type: ignore[no-untyped-def]
    parts, tmp_path: Path
) -> None:
    client, catalog, _, _ = parts
    client.jobs()
    client.vms()
    before = catalog.get_vault("v")

    client.discover()

    vault = catalog.get_vault("v")
    assert before is None
    assert vault is not None and vault.fleet_dir == str(tmp_path.resolve()) and vault.region == "r1"
    assert client.vault == vault


def test_register_sends_one_first_attempt_per_vm_and_dedups_names(parts) -> None:  # type: ignore[no-untyped-def]
    client, _, dispatcher, _ = parts

    handles = client.register(["web01", "cs1/web01", "cs2/db01"])

    assert len(handles) == 2
    assert [attempt for _, attempt in dispatcher.sent] == [1, 1]
    assert [h.job().item for h in handles] == ["cs1/web01", "cs2/db01"]
    assert all(h.status() == JobStatus.QUEUED for h in handles)


def test_register_submits_every_valid_vm_and_reports_each_refused_one(parts) -> None:  # type: ignore[no-untyped-def]
    client, _, dispatcher, _ = parts

    batch = client.register(["db01", "web01", "far01", "gone01", "cs2/db01"])

    assert isinstance(batch, Batch) and isinstance(batch, list)
    assert [h.job().item for h in batch] == ["cs1/web01", "cs2/db01"]
    assert len(dispatcher.sent) == 2
    assert [(r.name, r.error.code) for r in batch.refused] == [
        ("db01", "AmbiguousVMName"),
        ("far01", "RegionMismatch"),
        ("gone01", "VMNotFoundInInventory"),
    ]
    assert all(isinstance(r, Refusal) for r in batch.refused)


@pytest.mark.parametrize("key", ["bj:vm:v:cs1/web01", "bj:vmstate:v:cs1/web01"])
def test_register_of_a_vm_whose_record_is_unreadable_names_the_record(  # type: ignore[no-untyped-def]
    parts, key: str
) -> None:
    client, catalog, dispatcher, _ = parts
    catalog.records[key] = "{not json"

    batch = client.register(["web01", "cs1/web01", "nosuch"])

    assert [(r.name, r.error.code) for r in batch.refused] == [
        ("web01", "CorruptRecord"),
        ("cs1/web01", "CorruptRecord"),
        ("nosuch", "VMNotFoundInInventory"),
    ]
    assert batch.refused[0].error.item == key and dispatcher.sent == []


def test_raise_refused_raises_the_most_severe_refusal_whatever_the_order(parts) -> None:  # type: ignore[no-untyped-def]
    client, catalog, _, _ = parts
    catalog.put_vm_state(
        "v", replace(VM("web01", "cs1", "r1"), registration=RegistrationState.REGISTERED)
    )

    for names in (["web01", "nosuch"], ["nosuch", "web01"]):
        with pytest.raises(errors.VMNotFoundInInventory):
            client.register(names).raise_refused()
    client.register(["cs2/db01"]).raise_refused()


def test_a_batch_where_every_vm_is_refused_starts_nothing_and_records_no_vault(parts) -> None:  # type: ignore[no-untyped-def]
    client, catalog, dispatcher, _ = parts

    batch = client.register(["far01", "gone01"])

    assert batch == [] and len(batch.refused) == 2
    assert dispatcher.sent == [] and client.jobs() == [] and catalog.get_vault("v") is None


def test_register_takes_one_name_as_a_string(parts) -> None:  # type: ignore[no-untyped-def]
    client, _, _, _ = parts

    batch = client.register("cs1/web01")

    assert [h.job().item for h in batch] == ["cs1/web01"] and batch.refused == ()


def test_register_still_raises_when_redis_is_unavailable(parts) -> None:  # type: ignore[no-untyped-def]
    client, catalog, _, _ = parts

    def unavailable(vault: str) -> list[VM]:
        raise errors.RedisUnavailable(detail="redis://127.0.0.1:1/0")

    catalog.list_vms = unavailable  # type: ignore[method-assign]
    catalog.find_vms = lambda vault, name: unavailable(vault)  # type: ignore[method-assign]

    with pytest.raises(errors.RedisUnavailable):
        client.register(["web01"])


def test_jobs_filter_by_operation_status_and_time(parts) -> None:  # type: ignore[no-untyped-def]
    client, catalog, _, clock = parts
    client.discover()
    clock.advance(3600)
    [handle] = client.register(["web01"])
    catalog.save_job(handle.job().evolve(status=JobStatus.FAILED))

    assert [j.operation for j in client.jobs()] == [Operation.REGISTER, Operation.DISCOVERY]
    assert len(client.jobs(operation="discovery")) == 1
    assert len(client.jobs(operation="REGISTER", status="failed")) == 1
    assert len(client.jobs(status=JobStatus.FAILED)) == 1
    with pytest.raises(errors.ConfigurationError, match="accepted: Queued, InProgress"):
        client.jobs(status="broken")
    assert len(client.jobs(since=T0 + timedelta(minutes=30))) == 1
    assert len(client.jobs(since="30m")) == 1
    assert len(client.jobs(since="2h")) == 2
    assert len(client.jobs(since="2026-04-01T09:30:00")) == 1
    with pytest.raises(errors.ConfigurationError, match="since='yesterday'"):
        client.jobs(since="yesterday")


def test_jobs_filter_by_item_resolved_like_other_commands(parts) -> None:  # type: ignore[no-untyped-def]
    client, _, _, clock = parts
    client.discover()
    clock.advance(60)
    client.register(["web01", "cs2/db01"])

    assert [j.item for j in client.jobs(item="web01")] == ["cs1/web01"]
    assert [j.item for j in client.jobs(item="cs2/db01")] == ["cs2/db01"]
    assert [j.operation for j in client.jobs(item="vault")] == [Operation.DISCOVERY]
    assert [j.operation for j in client.jobs(item="v")] == [Operation.DISCOVERY]
    assert client.jobs(item="cs1/gone01") == []  # deleted from the fleet: still by its id
    with pytest.raises(errors.VMNotFoundInInventory):
        client.jobs(item="nope01")
    with pytest.raises(errors.AmbiguousVMName):
        client.jobs(item="db01")


def test_jobs_pages_with_next_cursor_and_before(parts) -> None:  # type: ignore[no-untyped-def]
    client, _, _, clock = parts
    for _ in range(5):
        client.discover()
        clock.advance(60)

    first = client.jobs(limit=2)
    second = client.jobs(limit=2, cursor=first.next_cursor)
    third = client.jobs(limit=2, cursor=second.next_cursor)
    everything = client.jobs(limit=None)
    older = client.jobs(before=everything[1].queued_at)

    assert [j.id for j in [*first, *second, *third]] == [j.id for j in everything]
    assert first.next_cursor and second.next_cursor and third.next_cursor is None
    assert [j.id for j in older] == [j.id for j in everything[2:]]
    assert [j.id for j in client.jobs(before="3m")] == [j.id for j in everything[3:]]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"cursor": "garbage"}, "cursor='garbage' is not a cursor of the jobs page"),
        ({"cursor": "c1.bm90IGpzb24"}, "is not a cursor"),
        ({"cursor": "c1.WzEsIDJd"}, "is not a cursor"),  # [1, 2]: no id
        ({"limit": 0}, "limit=0 is not valid; accepted: a whole number from 1 to 1000"),
        ({"limit": -1}, "limit=-1"),
        ({"limit": 10**9}, "limit=1000000000"),
        ({"limit": "abc"}, "limit='abc'"),
        ({"limit": True}, "limit=True"),
        ({"status": "nope"}, "JobStatus 'nope' is not valid"),
        ({"until": "2h", "since": "1h"}, "until=.* is before since="),
        ({"before": "2h", "since": "1h"}, "before=.* is not after since="),
        ({"before": "later"}, "before='later' is not valid"),
        ({"until": "someday"}, "until='someday' is not valid"),
    ],
)
def test_jobs_refuse_garbage_naming_the_parameter(  # type: ignore[no-untyped-def]
    parts, arguments: dict[str, object], message: str
) -> None:
    client, _, _, _ = parts
    with pytest.raises(errors.ConfigurationError, match=message):
        client.jobs(**arguments)  # type: ignore[arg-type]


def test_vms_lists_registrable_ones_and_hides_deleted_unless_asked(parts) -> None:  # type: ignore[no-untyped-def]
    client, catalog, _, _ = parts
    catalog.put_vm_state(
        "v", replace(VM("db01", "cs1", "r1"), registration=RegistrationState.REGISTERED)
    )

    assert {vm.id for vm in client.vms(registrable=True)} == {"cs1/web01", "cs2/db01"}
    assert "cs1/gone01" not in {vm.id for vm in client.vms()}
    assert "cs1/gone01" in {vm.id for vm in client.vms(include_deleted=True)}


def test_wait_times_out_without_touching_the_job_and_result_reports_the_end(parts) -> None:  # type: ignore[no-untyped-def]
    client, catalog, _, _ = parts
    handle = client.discover()

    with pytest.raises(JobTimeout, match="still Queued"):
        handle.wait(timeout=0.2)
    catalog.save_job(handle.job().evolve(status=JobStatus.COMPLETED, properties={"vms": 3}))

    assert handle.result(timeout=1) == {"status": "Completed", "error": None, "vms": 3}
    with pytest.raises(errors.JobNotFound):
        client.job("no-such-job")


@pytest.mark.parametrize("names", [b"web01", 5, [b"web01"], ["web01", None]])
def test_register_names_anything_but_str_names_in_a_type_error(  # type: ignore[no-untyped-def]
    parts, names: object
) -> None:
    client, _, dispatcher, _ = parts
    with pytest.raises(TypeError, match="VM names must be"):
        client.register(names)  # type: ignore[arg-type]
    assert dispatcher.sent == []


def test_jobs_since_anything_but_a_time_or_text_is_a_type_error(parts) -> None:  # type: ignore[no-untyped-def]
    client, _, _, _ = parts
    with pytest.raises(TypeError, match="since must be a datetime or a str"):
        client.jobs(since=5)  # type: ignore[arg-type]
