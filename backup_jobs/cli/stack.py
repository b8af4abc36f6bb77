"""``backup-jobs up``, ``demo`` and ``server``: run the service on this machine.

A process of the stack that fails ends the command with ``ProcessFailed``, rendered like
every other error (code, message, what to do; exit 7), after what was started is stopped.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from types import FrameType
from typing import NoReturn

import click

from backup_jobs.catalogs.redis import RedisCatalog
from backup_jobs.cli.demo import run_workflow
from backup_jobs.client import Client, JobTimeout
from backup_jobs.connection import password_file, resolve_redis_url, ssl_options
from backup_jobs.dispatchers.celery import CeleryDispatcher
from backup_jobs.providers.local import LocalFleet
from backup_jobs.providers.local_demo import create_demo_fleet
from backup_jobs.runtime import embedded, processes
from backup_jobs.runtime.stack import (
    Stack,
    check_before_start,
    check_flower,
    check_redis,
    server_child,
    start_stack,
    stop_abandoned,
    stop_stack,
)
from backup_jobs.runtime.supervisor import Supervisor, fail_on_exit, failure
from backup_jobs.settings import DEFAULT_INSTALL_AGENT_TIMEOUT_SECONDS, PREFIX, Settings

# The demo shows InstallAgentTimeout without waiting the default 5 minutes.
DEMO_INSTALL_AGENT_TIMEOUT_SECONDS = 5
DEMO_JOB_TIMEOUT_SECONDS = 300
# How often `backup-jobs server` looks at its server.
SERVER_POLL_SECONDS = 0.25


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C so that the stack is stopped either way."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.command("up")
@click.option("--no-flower", is_flag=True, help="Do not start Flower.")
@click.option("--no-exporter", is_flag=True, help="Do not start the Prometheus exporter.")
def up(no_flower: bool, no_exporter: bool) -> None:
    """Start the embedded server (unless BACKUP_JOBS_REDIS_URL is set), worker, tick consumer,
    beat, Flower and the Prometheus exporter.

    Each process is reported once it answers; then every one is restarted if it exits.
    """
    settings = Settings.from_env()
    with _terminate_as_interrupt():
        stack = None
        try:
            stack = start_stack(
                settings, click.echo, with_flower=not no_flower, with_exporter=not no_exporter
            )
            click.echo(_running_line(settings))
            _supervise(stack, settings)
        except KeyboardInterrupt:
            click.echo("Stopping...")
        finally:
            if stack is not None:
                stop_stack(stack)
    click.echo("Stopped.")


def _running_line(settings: Settings) -> str:
    """What ``up`` says once everything answers."""
    where = "" if settings.redis_url else f" (password in {password_file(settings.data_dir)})"
    return f"Running{where}; press Ctrl-C to stop."


@click.command("flower")
def flower() -> None:
    """Run Flower in the foreground with backup-jobs' configuration (for systemd and the like).

    The server is found and asked first, so that a missing server or a refused setting is
    one line here, not a traceback inside Flower.
    """
    settings = Settings.from_env()
    check_flower(settings)
    url = resolve_redis_url(settings)
    check_redis(settings, url)
    command = processes.process_commands(settings)["flower"]
    os.execv(command[0], command)  # noqa: S606 - our own argv, no shell; Flower replaces us


@click.command("server")
def server() -> None:
    """Run only the embedded server in the foreground (for a Procfile runner).

    It ends with an error if the server exits by itself, so that the runner sees it.
    """
    settings = Settings.from_env()
    data_dir = settings.data_dir
    with _terminate_as_interrupt():
        stop_abandoned(data_dir, click.echo)
        child, _ = server_child(data_dir)
        child.start()
        try:
            click.echo(child.ready_line())
            click.echo(f"Its password is in {password_file(data_dir)}.")
            while not child.has_exited():
                time.sleep(SERVER_POLL_SECONDS)
            raise failure(child, f"exited ({child.exit_cause()})")
        except KeyboardInterrupt:
            pass
        finally:
            assert child.process is not None
            embedded.stop_process(child.process, data_dir)


@click.command("demo")
@click.option("--vault", help="Vault name for this run (default: demo-<time>).")
@click.option("--stay-up", is_flag=True, help="Keep the service and Flower running afterwards.")
def demo(vault: str | None, stay_up: bool) -> None:
    """Run the seed's workflow on a demo fleet: discover, register, protect, back up, restore.

    Then print the dashboard, the VMs and the jobs.

    It exits non-zero if any process of the stack fails while it runs.
    """
    base = Settings.from_env()
    settings = dataclasses.replace(
        base,
        vault=vault or f"demo-{datetime.now().strftime('%Y%m%d-%H%M%S')}",
        fleet_dir=base.data_dir / "demo-fleet",
    )
    check_before_start(settings)  # before the fleet is written into the data dir
    fleet = create_demo_fleet(settings.fleet_dir, settings.region)
    click.echo(f"Demo fleet: {len(fleet.vm_files())} VMs in {fleet.root.resolve()}")
    extra = {}
    if base.timeouts.install_agent_seconds == DEFAULT_INSTALL_AGENT_TIMEOUT_SECONDS:
        extra[f"{PREFIX}INSTALL_AGENT_TIMEOUT_SECONDS"] = str(DEMO_INSTALL_AGENT_TIMEOUT_SECONDS)
    with _terminate_as_interrupt():
        stack = None
        try:
            stack = start_stack(settings, click.echo, extra_env=extra)
            with fail_on_exit(stack.children.values()):
                _run_demo(settings, stack)
            if stay_up:
                click.echo(
                    f"\nStill running (Flower: {stack.flower_url}); press Ctrl-C to stop. "
                    f"In another terminal: BACKUP_JOBS_VAULT={settings.vault} "
                    f"BACKUP_JOBS_FLEET_DIR={settings.fleet_dir.resolve()} backup-jobs job list"
                )
                _supervise(stack, settings)
        except KeyboardInterrupt:
            click.echo("Stopping...")
        finally:
            if stack is not None:
                stop_stack(stack)


def _run_demo(settings: Settings, stack: Stack) -> None:
    """Run the demo's jobs on the stack; one that does not end in time ends the demo."""
    client = Client(
        settings,
        RedisCatalog.from_url(stack.redis_url, ssl_options(settings, stack.redis_url)),
        CeleryDispatcher.from_url(settings, stack.redis_url),
    )
    try:
        run_workflow(client, LocalFleet(settings.fleet_dir), DEMO_JOB_TIMEOUT_SECONDS)
    except JobTimeout as exc:
        what = f"did not finish the demo's jobs ({exc}); stopped the whole stack"
        raise failure(stack.children["worker"], what) from exc


def _supervise(stack: Stack, settings: Settings) -> NoReturn:
    """Look after the stack's processes until one crashes too often (or an interrupt)."""
    children = stack.children.values()
    Supervisor(children, click.echo, first_delay=settings.restart_delay_seconds).run()
