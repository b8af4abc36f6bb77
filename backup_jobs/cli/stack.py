"""``backup-jobs up``, ``demo`` and ``server``: run the service on this machine."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from types import FrameType

import click

from backup_jobs.catalogs.redis import RedisCatalog, redact
from backup_jobs.cli import render
from backup_jobs.cli.common import echo_refusals
from backup_jobs.client import Client
from backup_jobs.dispatchers.celery import CeleryDispatcher
from backup_jobs.providers.local_demo import create_demo_fleet
from backup_jobs.runtime import embedded, processes
from backup_jobs.settings import DEFAULT_INSTALL_AGENT_TIMEOUT_SECONDS, PREFIX, Settings

# The demo shows InstallAgentTimeout without waiting the default 5 minutes.
DEMO_INSTALL_AGENT_TIMEOUT_SECONDS = 5
DEMO_JOB_TIMEOUT_SECONDS = 300


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
def up(no_flower: bool) -> None:
    """Start the embedded server (unless BACKUP_JOBS_REDIS_URL is set), worker, beat, Flower."""
    settings = Settings.from_env()
    stack = processes.start_stack(settings, with_flower=not no_flower)
    with _terminate_as_interrupt():
        try:
            click.echo(
                f"Redis:  {redact(stack.redis_url)}" + ("" if settings.redis_url else " (embedded)")
            )
            if not no_flower:
                click.echo(f"Flower: {stack.flower_url}")
            click.echo(f"Logs:   {stack.log_dir.resolve()}")
            click.echo("Running; press Ctrl-C to stop.")
            while not processes.exited(stack):
                time.sleep(0.5)
            names = ", ".join(processes.exited(stack))
            raise click.ClickException(f"{names} exited; see {stack.log_dir.resolve()}")
        except KeyboardInterrupt:
            click.echo("Stopping...")
        finally:
            processes.stop_stack(stack)
    click.echo("Stopped.")


@click.command("flower")
def flower() -> None:
    """Run Flower in the foreground with backup-jobs' configuration (for systemd and the like)."""
    command = processes.process_commands(Settings.from_env())["flower"]
    os.execv(command[0], command)  # noqa: S606 - our own argv, no shell; Flower replaces us


@click.command("server")
def server() -> None:
    """Run only the embedded server in the foreground (for a Procfile runner)."""
    settings = Settings.from_env()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    running, process = embedded.start(settings.data_dir)
    click.echo(
        f"Embedded server at {running.url} (data in {settings.data_dir.resolve() / 'valkey'})"
    )
    with _terminate_as_interrupt():
        try:
            process.wait()
        except KeyboardInterrupt:
            pass
        finally:
            embedded.stop(running, process, settings.data_dir)


@click.command("demo")
@click.option("--vault", help="Vault name for this run (default: demo-<time>).")
@click.option("--stay-up", is_flag=True, help="Keep the service and Flower running afterwards.")
def demo(vault: str | None, stay_up: bool) -> None:
    """Create a demo fleet, run Discovery, register every VM, print the VMs and jobs."""
    base = Settings.from_env()
    settings = dataclasses.replace(
        base,
        vault=vault or f"demo-{datetime.now().strftime('%Y%m%d-%H%M%S')}",
        fleet_dir=base.data_dir / "demo-fleet",
    )
    fleet = create_demo_fleet(settings.fleet_dir, settings.region)
    click.echo(f"Demo fleet: {len(fleet.vm_files())} VMs in {fleet.root.resolve()}")
    extra = {}
    if base.timeouts.install_agent_seconds == DEFAULT_INSTALL_AGENT_TIMEOUT_SECONDS:
        extra[f"{PREFIX}INSTALL_AGENT_TIMEOUT_SECONDS"] = str(DEMO_INSTALL_AGENT_TIMEOUT_SECONDS)
    stack = processes.start_stack(settings, extra_env=extra)
    with _terminate_as_interrupt():
        try:
            click.echo(
                f"Started worker, beat and Flower ({stack.flower_url}); "
                f"Redis {redact(stack.redis_url)}"
            )
            client = Client(
                settings,
                RedisCatalog.from_url(stack.redis_url),
                CeleryDispatcher.from_url(settings, stack.redis_url),
            )
            _run_demo(client)
            if stay_up:
                click.echo(
                    f"\nStill running (Flower: {stack.flower_url}); press Ctrl-C to stop. "
                    f"In another terminal: BACKUP_JOBS_VAULT={settings.vault} "
                    f"BACKUP_JOBS_FLEET_DIR={settings.fleet_dir.resolve()} backup-jobs job list"
                )
                while not processes.exited(stack):
                    time.sleep(0.5)
        except KeyboardInterrupt:
            click.echo("Stopping...")
        finally:
            processes.stop_stack(stack)


def _run_demo(client: Client) -> None:
    click.echo("\n== Discovery")
    discovery = client.discover().wait(DEMO_JOB_TIMEOUT_SECONDS)
    click.echo(f"{discovery.status.value}: {discovery.properties}")
    click.echo("\n== Register every VM")
    batch = client.register([vm.id for vm in client.vms()])
    echo_refusals(batch.refused)
    for handle in batch:
        handle.wait(DEMO_JOB_TIMEOUT_SECONDS)
    click.echo("\n== VMs")
    click.echo(render.vm_table(client.vms(), client.vault.region))
    click.echo("\n== Jobs")
    click.echo(render.job_table(client.jobs()))
