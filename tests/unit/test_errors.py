"""The error catalog: codes, messages, actions, exit codes, and the trip through JSON."""

from __future__ import annotations

import re

import click
import pytest

from backup_jobs import errors

CATALOG = [
    cls for cls in errors._catalog().values() if cls.__doc__ and cls.__module__ == errors.__name__
]
LEAVES = [cls for cls in CATALOG if not cls.__subclasses__() and cls is not errors.BackupJobsError]


@pytest.mark.parametrize("cls", LEAVES, ids=[c.__name__ for c in LEAVES])
def test_every_error_names_the_item_and_survives_a_round_trip(
    cls: type[errors.BackupJobsError],
) -> None:
    error = cls("cs1/web01", "some detail")

    rebuilt = errors.error_from_dict(error.to_dict())

    assert type(rebuilt) is cls
    assert rebuilt.message == error.message
    assert rebuilt.recommended_action == error.recommended_action
    assert error.message.startswith("cs1/web01: ")
    assert error.recommended_action
    assert cls.__doc__ and cls.__doc__.startswith("Raised")


def test_only_transient_errors_are_retryable() -> None:
    retryable = sorted(cls.__name__ for cls in LEAVES if cls.retryable)

    assert retryable == [
        "BackupInternalError",
        "DiscoveryInternalError",
        "FleetStorageError",
        "RestoreTimeout",
        "SnapshotTimeout",
        "VaultStorageError",
        "VaultTransferTimeout",
        "WorkerLost",
    ]


@pytest.mark.parametrize(
    ("cls", "exit_code"),
    [
        (errors.ConfigurationError, 8),
        (errors.VMNotRunning, 8),
        (errors.VMNotFoundInInventory, 3),
        (errors.OperationInProgress, 4),
        (errors.VaultIntegrityError, 5),
        (errors.DiscoveryInternalError, 6),
        (errors.RedisUnavailable, 7),
        (errors.InternalError, 1),
    ],
)
def test_exit_codes_follow_the_kind(cls: type[errors.BackupJobsError], exit_code: int) -> None:
    assert cls().exit_code == exit_code


def test_invalid_input_no_longer_shares_exit_code_2_with_click_usage_errors() -> None:
    codes = {kind: errors.EXIT_CODES[kind] for kind in errors.ErrorKind}

    assert 2 not in codes.values()
    assert len(set(codes.values())) == len(codes)
    assert codes[errors.ErrorKind.INVALID_INPUT] == 8


def test_severity_orders_every_kind_from_internal_to_invalid_input() -> None:
    assert set(errors.SEVERITY) == set(errors.ErrorKind)
    assert errors.SEVERITY[0] == errors.ErrorKind.INTERNAL
    assert errors.SEVERITY[-1] == errors.ErrorKind.INVALID_INPUT


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        ([errors.VMNotRunning(), errors.VMNotFoundInInventory()], errors.VMNotFoundInInventory),
        (
            [errors.VMNotFoundInInventory(), errors.OperationInProgress()],
            errors.OperationInProgress,
        ),
        ([errors.OperationInProgress(), errors.WorkerLost()], errors.WorkerLost),
        ([errors.WorkerLost(), errors.RedisUnavailable()], errors.RedisUnavailable),
        ([errors.RedisUnavailable(), errors.VaultIntegrityError()], errors.VaultIntegrityError),
        ([errors.VaultIntegrityError(), errors.InternalError()], errors.InternalError),
    ],
)
def test_most_severe_picks_the_same_error_whatever_the_order(
    found: list[errors.BackupJobsError], expected: type[errors.BackupJobsError]
) -> None:
    assert type(errors.most_severe(found)) is expected
    assert type(errors.most_severe(reversed(found))) is expected


def test_most_severe_of_nothing_is_none() -> None:
    assert errors.most_severe([]) is None


def test_seed_messages_are_kept_word_for_word() -> None:
    assert errors.DiscoveryInProgress("v").message == (
        "v: Failed to discover new items - Another Discovery operation is already in progress. "
        "Please wait until the current Discovery operation has completed."
    )
    assert (
        errors.InstallAgentTimeout().message
        == "Registration failed with Install Agent operation timeout."
    )
    assert (
        "older than 2.6.1198.718"
        in errors.GuestAgentCertificateNotFound(
            "vm", "2.6.1000.0 is older than 2.6.1198.718"
        ).message
    )


def test_unknown_codes_rebuild_as_internal_error() -> None:
    rebuilt = errors.error_from_dict({"code": "NoSuchThing", "item": "x", "detail": "d"})

    assert isinstance(rebuilt, errors.InternalError)


@pytest.mark.parametrize("cls", LEAVES, ids=[c.__name__ for c in LEAVES])
def test_every_error_is_rebuilt_from_its_args_as_celery_and_pickle_do(
    cls: type[errors.BackupJobsError],
) -> None:
    error = cls("cs1/web01", "why", "do this")

    rebuilt = type(error)(*error.args)

    assert (rebuilt.code, rebuilt.message, rebuilt.recommended_action) == (
        error.code,
        error.message,
        "do this",
    )


@pytest.mark.parametrize(
    "cls", errors._catalog().values(), ids=[c.__name__ for c in errors._catalog().values()]
)
def test_every_error_in_the_catalog_says_what_to_do(cls: type[errors.BackupJobsError]) -> None:
    action = cls("cs1/web01", "some detail").recommended_action

    assert action.strip()
    assert not action.lower().startswith("none")


def test_a_record_written_with_the_action_none_is_read_with_the_class_action() -> None:
    old = {"code": "AlreadyRegistered", "item": "cs/a", "detail": "", "recommended_action": "None"}

    rebuilt = errors.error_from_dict(old)

    assert rebuilt.recommended_action == errors.AlreadyRegistered.action


def test_the_data_disk_limit_action_names_the_limit() -> None:
    from backup_jobs import inventory
    from backup_jobs.models import VM, Disk, VaultConfig

    vm = VM("a", "cs", "r1", data_disks=tuple(Disk(f"d{i}", 1) for i in range(4)))

    with pytest.raises(errors.DataDiskLimitExceeded) as raised:
        inventory.check_registrable(vm, VaultConfig("v", "r1", "local", "/f"), max_data_disks=3)

    assert "until the VM has at most 3" in raised.value.recommended_action


def _named_commands() -> list[tuple[str, str]]:
    """Every ``backup-jobs ...`` command an error's action names, with the error's code."""
    found = []
    for code, cls in sorted(errors._catalog().items()):
        text = cls.action + (getattr(cls, "final_action", None) or "")
        found.extend((code, command) for command in re.findall(r"`backup-jobs ([^`]*)`", text))
    return found


@pytest.mark.parametrize(("code", "command"), _named_commands())
def test_every_command_an_action_names_exists_with_its_options(code: str, command: str) -> None:
    from backup_jobs.cli.main import cli

    node: click.Command = cli
    words = command.split()
    while words and isinstance(node, click.Group) and words[0] in node.commands:
        node = node.commands[words.pop(0)]
    options = {"--help", *(opt for param in node.params for opt in getattr(param, "opts", []))}

    assert not isinstance(node, click.Group), f"{code}: `{command}` names no command"
    assert {w for w in words if w.startswith("--")} <= options, f"{code}: `{command}`"
