"""One deployment on this machine: what ``backup-jobs up`` and ``demo`` start, in order.

Before anything starts, what can be checked is: a data dir that another user controls, a
stack that already runs on it, Flower's exposure and port, and a Redis that
``BACKUP_JOBS_REDIS_URL`` names. Then the embedded server (unless that URL is set), the job
worker, the tick consumer, beat and Flower start, and each is waited for until it answers
(``readiness``); a process that exits meanwhile ends the start with the cause, and nothing is
left running. Once up, the ``supervisor`` keeps them running.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from backup_jobs.catalogs.redis import RedisCatalog
from backup_jobs.connection import EmbeddedServer, check_data_dir, ssl_options
from backup_jobs.errors import ConfigurationError
from backup_jobs.runtime import embedded, processes
from backup_jobs.runtime.exporter import metrics_url
from backup_jobs.runtime.readiness import Probes, answers_http, flower_url
from backup_jobs.runtime.supervisor import Child, failure, start_failure
from backup_jobs.settings import PREFIX, Settings, flower_exposure_problem, redact_url

# How long a process may take to answer after it started (a loaded machine imports slowly).
READY_TIMEOUT_SECONDS = 120.0
# How often the processes are asked while they start.
READY_POLL_SECONDS = 0.2

Report = Callable[[str], None]


@dataclass
class Stack:
    """The running processes of one deployment on this machine."""

    settings: Settings
    redis_url: str
    children: dict[str, Child] = field(default_factory=dict)
    probes: Probes | None = None

    @property
    def flower_url(self) -> str:
        """Where Flower answers."""
        return flower_url(self.settings)

    @property
    def exporter_url(self) -> str:
        """Where the exporter answers scrapes."""
        return metrics_url(self.settings.exporter_address, self.settings.exporter_port)


def check_flower(settings: Settings) -> None:
    """Refuse a Flower that would be open to the network or whose port is taken."""
    problem = flower_exposure_problem(settings) or _port_problem(
        settings.flower_address, settings.flower_port
    )
    if problem:
        raise ConfigurationError(detail=problem)


def check_exporter(settings: Settings) -> None:
    """Refuse an exporter whose port is taken."""
    problem = _port_problem(
        settings.exporter_address, settings.exporter_port, "The exporter", "EXPORTER", "exporter"
    )
    if problem:
        raise ConfigurationError(detail=problem)


def _port_problem(
    address: str, port: int, who: str = "Flower", variable: str = "FLOWER", flag: str = "flower"
) -> str | None:
    """Why ``who`` could not listen on ``address:port``, found by binding it now."""
    try:
        family, kind, proto, _, where = socket.getaddrinfo(
            address or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as sock:
            # As Flower binds: a port that only lingers in TIME_WAIT is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(where)
    except OSError as exc:
        return (
            f"{who} cannot listen on {address or '*'}:{port} ({exc.strerror or exc}); set "
            f"{PREFIX}{variable}_PORT to a free port, or start without it (--no-{flag})"
        )
    return None


def check_redis(settings: Settings, url: str) -> None:
    """Raise ``RedisUnavailable`` unless the server at ``url`` answers with that password
    (and, for ``rediss://``, over TLS with the settings' certificates)."""
    catalog = RedisCatalog.from_url(url, ssl_options(settings, url))
    try:
        catalog.ping()
    finally:
        catalog.client.close()


def check_before_start(
    settings: Settings, with_flower: bool = True, with_exporter: bool = True
) -> None:
    """Refuse, before anything is started or written, what would be unsafe or fail anyway."""
    # Even with BACKUP_JOBS_REDIS_URL: beat's schedule in the data dir is a pickle.
    check_data_dir(settings.data_dir)
    # First, so that a second `up` says so rather than blame the port the first one holds.
    embedded.refuse_if_running(settings.data_dir)
    if with_flower:
        check_flower(settings)
    if with_exporter:
        check_exporter(settings)
    if settings.redis_url:
        check_redis(settings, settings.redis_url)


def start_stack(
    settings: Settings,
    report: Report,
    with_flower: bool = True,
    extra_env: dict[str, str] | None = None,
    with_exporter: bool = True,
) -> Stack:
    """Check, start every process, and return once each answers; else stop them and raise."""
    check_before_start(settings, with_flower, with_exporter)
    stack = Stack(settings, settings.redis_url or "")
    try:
        if settings.redis_url:
            report(f"{'redis':<7} ready ({redact_url(settings.redis_url)}, {PREFIX}REDIS_URL)")
        else:
            _start_server(stack, report)
        skipped = {
            name for name, on in (("flower", with_flower), ("exporter", with_exporter)) if not on
        }
        _start_processes(stack, skipped, extra_env)
        _wait_until_ready(stack, report)
    except BaseException:
        stop_stack(stack)
        raise
    return stack


def _start_server(stack: Stack, report: Report) -> None:
    """The embedded server, after stopping one a killed ``up`` left behind."""
    data_dir = stack.settings.data_dir
    stop_abandoned(data_dir, report)
    child, stack.redis_url = server_child(data_dir)
    stack.children["server"] = child
    child.start()
    report(child.ready_line())


def stop_abandoned(data_dir: Path, report: Report) -> None:
    """Stop (and say so) an embedded server whose ``up`` was killed and left it running."""
    abandoned = embedded.clear_abandoned(data_dir)
    if abandoned is not None:
        report(
            f"{'server':<7} stopped pid {abandoned.pid}, left running by a `backup-jobs up` "
            f"(pid {abandoned.owner}) that died"
        )


def server_child(data_dir: Path) -> tuple[Child, str]:
    """The embedded server as a child of this process, and its URL.

    Its port is chosen once: a restart keeps it (and the password), so the other processes
    reconnect to the same URL.
    """
    port = embedded.free_port()
    url = EmbeddedServer(0, port, embedded.ensure_password(data_dir)).url
    launch = lambda: embedded.start(data_dir, port)[1]  # noqa: E731 - a one-line recipe
    return Child("server", embedded.log_file(data_dir), launch, detail=redact_url(url)), url


def _start_processes(stack: Stack, skipped: set[str], extra_env: dict[str, str] | None) -> None:
    """Start the worker, tick consumer, beat and (unless ``skipped``) Flower and the exporter."""
    settings = stack.settings
    stack.probes = probes = Probes(settings, stack.redis_url)
    nodes = processes.node_names()
    readiness: dict[str, Callable[[int], bool]] = {
        "worker": lambda pid: probes.worker(nodes["worker"]),
        "ticks": lambda pid: probes.worker(nodes["ticks"]),
        "beat": probes.beat,
        "flower": lambda pid: answers_http(stack.flower_url),
        "exporter": lambda pid: answers_http(stack.exporter_url),
    }
    env = processes.child_environment(settings, settings.redis_url, extra_env)
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    for name, command in processes.process_commands(settings, nodes).items():
        if name in skipped:
            continue
        log = log_dir / f"{name}.log"
        launch = partial(
            processes.spawn, command, log=log, dies_with=processes.death_signal(name), env=env
        )
        detail = {"flower": stack.flower_url, "exporter": stack.exporter_url}.get(name, "")
        stack.children[name] = Child(name, log, launch, readiness[name], detail)
        stack.children[name].start()


def _wait_until_ready(stack: Stack, report: Report) -> None:
    """Report each process as it answers; raise at once if one exits, or after the timeout."""
    pending = [child for child in stack.children.values() if child.name != "server"]
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while pending:
        for child in stack.children.values():
            if child.has_exited():
                raise start_failure(child)
        for child in [c for c in pending if c.ready(c.pid)]:
            report(child.ready_line())
            pending.remove(child)
        if pending and time.monotonic() > deadline:
            child = pending[0]
            raise failure(
                child,
                f"did not answer within {READY_TIMEOUT_SECONDS:g} s (last log line: "
                f"{processes.last_log_line(child.log, child.log_offset)}); stopped the whole stack",
            )
        if pending:
            time.sleep(READY_POLL_SECONDS)


def stop_stack(stack: Stack) -> None:
    """Stop every process of the stack together, then the embedded server."""
    others = [
        c.process for c in stack.children.values() if c.name != "server" and c.process is not None
    ]
    processes.terminate(others)
    server = stack.children.get("server")
    if server is not None and server.process is not None:
        embedded.stop_process(server.process, stack.settings.data_dir)
    if stack.probes is not None:
        stack.probes.close()
