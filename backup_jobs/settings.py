"""Settings: one frozen object built from the ``BACKUP_JOBS_*`` environment variables.

This is the only module that reads the environment. Every default is a named constant with
its unit in the name; a bad value fails at start-up with a ``ConfigurationError`` that names
the variable and the values it accepts.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from backup_jobs.errors import MIN_AGENT_VERSION, ConfigurationError

PREFIX = "BACKUP_JOBS_"

DEFAULT_DATA_DIR = ".backup-jobs"
DEFAULT_VAULT = "default"
# The region of the vault when none is given; the demo fleet puts its VMs here.
DEFAULT_REGION = "local-1"
DEFAULT_PROVIDER = "local"
# The seed's "retry after 15 minutes".
DEFAULT_RETRY_DELAY_SECONDS = 900
# Three attempts: the first plus two automatic retries, 30 minutes apart at the default delay.
DEFAULT_MAX_ATTEMPTS = 3
# The seed's limit: "up to 5 data disks".
DEFAULT_MAX_DATA_DISKS = 5
# Minutes, not hours: a dead worker's item is free again soon after the reaper notices.
DEFAULT_LEASE_TTL_SECONDS = 120
# How often beat claims due retries and reaps lost jobs.
DEFAULT_TICK_SECONDS = 10
DEFAULT_DISCOVERY_TIMEOUT_SECONDS = 600
DEFAULT_INSTALL_AGENT_TIMEOUT_SECONDS = 300
DEFAULT_SNAPSHOT_TIMEOUT_SECONDS = 1800
DEFAULT_TRANSFER_TIMEOUT_SECONDS = 6 * 3600
DEFAULT_RESTORE_TIMEOUT_SECONDS = 6 * 3600
# Flower's own default port; loopback only unless a password is set.
DEFAULT_FLOWER_PORT = 5555
DEFAULT_FLOWER_ADDRESS = "127.0.0.1"
# The Prometheus exporter (`backup-jobs exporter`): loopback only by default, like Flower; 9808
# is a free slot in Prometheus's default-port allocation list near other backup exporters.
DEFAULT_EXPORTER_ADDRESS = "127.0.0.1"
DEFAULT_EXPORTER_PORT = 9808
# Worker and beat log lines: logfmt reads well in a terminal and greps; json for log shippers.
LOG_FORMATS = ("logfmt", "json")
DEFAULT_LOG_FORMAT = "logfmt"
# TCP ports.
MAX_PORT = 65535
# Addresses only this machine can reach: Flower may listen there without a password.
LOOPBACK_ADDRESSES = ("127.0.0.1", "localhost", "::1")
# Two prefork children: the size of the machines this is developed on.
DEFAULT_WORKER_CONCURRENCY = 2
# A job no worker started for this long fails (QueueTimeout); before that, the queue sweep
# re-sends its message now and then. A week: long queues of long backups are legitimate.
DEFAULT_QUEUED_TIMEOUT_SECONDS = 7 * 24 * 3600
# A scheduled run not started within this long of its time is recorded as missed, not run late
# (Azure's default start window).
DEFAULT_START_WINDOW_SECONDS = 2 * 3600
# `up` restarts a crashed process after this long, doubled after each crash in a row (to 30 s).
DEFAULT_RESTART_DELAY_SECONDS = 1.0
RESTART_DELAY_RANGE_SECONDS = (0.1, 30)
# Final jobs are kept this long after they ended, then deleted by the history tick: a quarter
# of a year answers "what happened last month" and bounds Redis's memory by the job rate.
DEFAULT_JOB_HISTORY_DAYS = 90
REDIS_SCHEMES = ("redis", "rediss", "unix")
# The TLS files of a rediss:// URL: the CA that signed the server's certificate (unset: the
# system's CAs), and this machine's client certificate and key (for a server that asks).
REDIS_TLS_FILES = ("REDIS_CA_FILE", "REDIS_CERT_FILE", "REDIS_KEY_FILE")
# Maintenance cadence (DESIGN §6): prune hourly, verify and GC daily. Each tick starts one job
# per vault and period; at least a minute apart (a job per tick would only queue up), at most
# 30 days (a vault never verified for longer hides rot).
DEFAULT_PRUNE_EVERY_SECONDS = 3600
DEFAULT_VERIFY_EVERY_SECONDS = 24 * 3600
DEFAULT_GC_EVERY_SECONDS = 24 * 3600
MAINTENANCE_EVERY_RANGE_SECONDS = (60, 30 * 24 * 3600)
# GC sweeps only what is older than the oldest running backup minus this margin: it absorbs
# clock skew between the machines sharing a vault (docs/design.md §7). 0 on one machine is
# safe; a day is more skew than any clock has.
DEFAULT_GC_MARGIN_SECONDS = 300
GC_MARGIN_RANGE_SECONDS = (0, 24 * 3600)
# The time limit of a Prune, Verify or GarbageCollect job: each reads the whole vault.
MAINTENANCE_TIMEOUT_SECONDS = 6 * 3600

PROVIDERS = ("local", "libvirt")
# The libvirt provider's default connection: the host's system QEMU driver, as root uses it.
DEFAULT_LIBVIRT_URI = "qemu:///system"
# libvirt URIs this provider drives: QEMU/KVM, locally or over a remote transport; test:///
# is libvirt's mock driver.
LIBVIRT_URI_SCHEMES = ("qemu", "qemu+ssh", "qemu+tcp", "qemu+tls", "qemu+unix", "test")
# The oldest QEMU guest agent Register accepts on libvirt domains (the seed's version rule; its
# own minimum is an Azure agent's): 2.5 has guest-fsfreeze-freeze with hooks and guest-exec;
# Debian 12 ships 7.2.
DEFAULT_LIBVIRT_MIN_AGENT_VERSION = "2.5"
AGENT_VERSION_FORM = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9}){0,3}")

# Accepted ranges (inclusive) of the numeric settings: anything outside is a typo, not a choice.
# A week bounds every delay and deadline: the seed's retry delay is 15 minutes, its longest
# step (a transfer) hours; a larger value would only stall a job or the visibility timeout.
WEEK_SECONDS = 7 * 24 * 3600
RETRY_DELAY_RANGE_SECONDS = (0, WEEK_SECONDS)
TIMEOUT_RANGE_SECONDS = (1, WEEK_SECONDS)
# A hundred attempts at the default delay is more than a day of retrying.
MAX_ATTEMPTS_RANGE = (1, 100)
# 64: the most data disks any hypervisor or cloud here attaches to one VM.
MAX_DATA_DISKS_RANGE = (0, 64)
# At least two seconds so that a heartbeat can renew it; at most an hour, or a dead worker's
# item stays locked for longer than anyone waits.
LEASE_TTL_RANGE_SECONDS = (2, 3600)
# Beat ticks: faster than 0.2 s only loads Redis; slower than an hour delays every retry.
TICK_RANGE_SECONDS = (0.2, 3600)
PORT_RANGE = (1, 65535)
# Prefork children of one worker: 256 is far beyond what one machine's cores use well.
WORKER_CONCURRENCY_RANGE = (1, 256)
# At least a minute in the queue before a job is given up; at most the default week.
QUEUED_TIMEOUT_RANGE_SECONDS = (60, WEEK_SECONDS)
# A start window shorter than a minute misses runs on a busy tick; longer than a day runs
# yesterday's backup today.
START_WINDOW_RANGE_SECONDS = (60, 24 * 3600)
# At least a day (yesterday's failures stay readable); at most ten years.
JOB_HISTORY_RANGE_DAYS = (1, 3650)

N = TypeVar("N", int, float)


@dataclass(frozen=True)
class Timeouts:
    """Per-operation deadlines, in seconds."""

    discovery_seconds: int = DEFAULT_DISCOVERY_TIMEOUT_SECONDS
    install_agent_seconds: int = DEFAULT_INSTALL_AGENT_TIMEOUT_SECONDS
    snapshot_seconds: int = DEFAULT_SNAPSHOT_TIMEOUT_SECONDS
    transfer_seconds: int = DEFAULT_TRANSFER_TIMEOUT_SECONDS
    restore_seconds: int = DEFAULT_RESTORE_TIMEOUT_SECONDS


@dataclass(frozen=True)
class Settings:
    """Everything configurable about one deployment, validated."""

    redis_url: str | None = None
    # TLS to Redis, only with a rediss:// URL (whose server certificate is always verified).
    redis_ca_file: Path | None = None
    redis_cert_file: Path | None = None
    redis_key_file: Path | None = None
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    vault: str = DEFAULT_VAULT
    region: str = DEFAULT_REGION
    provider: str = DEFAULT_PROVIDER
    fleet_dir: Path = Path(DEFAULT_DATA_DIR) / "fleet"
    # The libvirt provider: which libvirt to ask, and where VMs a restore creates keep disks.
    libvirt_uri: str = DEFAULT_LIBVIRT_URI
    libvirt_images_dir: Path = Path(DEFAULT_DATA_DIR) / "libvirt-images"
    libvirt_min_agent_version: str = DEFAULT_LIBVIRT_MIN_AGENT_VERSION
    vault_dir: Path = Path(DEFAULT_DATA_DIR) / "vault"
    # Restores write only inside this directory (on the worker that runs them).
    restore_root: Path = Path(DEFAULT_DATA_DIR) / "restores"
    retry_delay_seconds: int = DEFAULT_RETRY_DELAY_SECONDS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_data_disks: int = DEFAULT_MAX_DATA_DISKS
    lease_ttl_seconds: int = DEFAULT_LEASE_TTL_SECONDS
    tick_seconds: float = DEFAULT_TICK_SECONDS
    timeouts: Timeouts = field(default_factory=Timeouts)
    flower_user: str | None = None
    flower_password: str | None = None
    flower_port: int = DEFAULT_FLOWER_PORT
    flower_address: str = DEFAULT_FLOWER_ADDRESS
    worker_concurrency: int = DEFAULT_WORKER_CONCURRENCY
    queued_timeout_seconds: int = DEFAULT_QUEUED_TIMEOUT_SECONDS
    start_window_seconds: int = DEFAULT_START_WINDOW_SECONDS
    restart_delay_seconds: float = DEFAULT_RESTART_DELAY_SECONDS
    prune_every_seconds: int = DEFAULT_PRUNE_EVERY_SECONDS
    verify_every_seconds: int = DEFAULT_VERIFY_EVERY_SECONDS
    gc_every_seconds: int = DEFAULT_GC_EVERY_SECONDS
    gc_margin_seconds: int = DEFAULT_GC_MARGIN_SECONDS
    job_history_days: int = DEFAULT_JOB_HISTORY_DAYS
    exporter_address: str = DEFAULT_EXPORTER_ADDRESS
    exporter_port: int = DEFAULT_EXPORTER_PORT
    log_format: str = DEFAULT_LOG_FORMAT

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build and validate settings from ``environ`` (default: the process environment)."""
        env = _Env(os.environ if environ is None else environ)
        data_dir = env.path("DATA_DIR", Path(DEFAULT_DATA_DIR))
        settings = cls(
            redis_url=env.redis_url("REDIS_URL"),
            redis_ca_file=env.readable_file("REDIS_CA_FILE"),
            redis_cert_file=env.readable_file("REDIS_CERT_FILE"),
            redis_key_file=env.readable_file("REDIS_KEY_FILE"),
            data_dir=data_dir,
            vault=env.name("VAULT", DEFAULT_VAULT),
            region=env.name("REGION", DEFAULT_REGION),
            provider=env.choice("PROVIDER", DEFAULT_PROVIDER, PROVIDERS),
            fleet_dir=env.path("FLEET_DIR", data_dir / "fleet"),
            libvirt_uri=env.libvirt_uri("LIBVIRT_URI"),
            libvirt_images_dir=env.path("LIBVIRT_IMAGES_DIR", data_dir / "libvirt-images"),
            libvirt_min_agent_version=env.version(
                "LIBVIRT_MIN_AGENT_VERSION", DEFAULT_LIBVIRT_MIN_AGENT_VERSION
            ),
            vault_dir=env.path("VAULT_DIR", data_dir / "vault"),
            restore_root=env.path("RESTORE_ROOT", data_dir / "restores"),
            retry_delay_seconds=env.number(
                "RETRY_DELAY_SECONDS", DEFAULT_RETRY_DELAY_SECONDS, int, RETRY_DELAY_RANGE_SECONDS
            ),
            max_attempts=env.number("MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, int, MAX_ATTEMPTS_RANGE),
            max_data_disks=env.number(
                "MAX_DATA_DISKS", DEFAULT_MAX_DATA_DISKS, int, MAX_DATA_DISKS_RANGE
            ),
            lease_ttl_seconds=env.number(
                "LEASE_TTL_SECONDS", DEFAULT_LEASE_TTL_SECONDS, int, LEASE_TTL_RANGE_SECONDS
            ),
            tick_seconds=env.number(
                "TICK_SECONDS", float(DEFAULT_TICK_SECONDS), float, TICK_RANGE_SECONDS
            ),
            timeouts=Timeouts(
                discovery_seconds=env.timeout("DISCOVERY", DEFAULT_DISCOVERY_TIMEOUT_SECONDS),
                install_agent_seconds=env.timeout(
                    "INSTALL_AGENT", DEFAULT_INSTALL_AGENT_TIMEOUT_SECONDS
                ),
                snapshot_seconds=env.timeout("SNAPSHOT", DEFAULT_SNAPSHOT_TIMEOUT_SECONDS),
                transfer_seconds=env.timeout("TRANSFER", DEFAULT_TRANSFER_TIMEOUT_SECONDS),
                restore_seconds=env.timeout("RESTORE", DEFAULT_RESTORE_TIMEOUT_SECONDS),
            ),
            flower_user=env.text("FLOWER_USER", "") or None,
            flower_password=env.text("FLOWER_PASSWORD", "") or None,
            flower_port=env.number("FLOWER_PORT", DEFAULT_FLOWER_PORT, int, PORT_RANGE),
            flower_address=env.text("FLOWER_ADDRESS", DEFAULT_FLOWER_ADDRESS),
            worker_concurrency=env.number(
                "WORKER_CONCURRENCY", DEFAULT_WORKER_CONCURRENCY, int, WORKER_CONCURRENCY_RANGE
            ),
            queued_timeout_seconds=env.number(
                "QUEUED_TIMEOUT_SECONDS",
                DEFAULT_QUEUED_TIMEOUT_SECONDS,
                int,
                QUEUED_TIMEOUT_RANGE_SECONDS,
            ),
            start_window_seconds=env.number(
                "START_WINDOW_SECONDS",
                DEFAULT_START_WINDOW_SECONDS,
                int,
                START_WINDOW_RANGE_SECONDS,
            ),
            restart_delay_seconds=env.number(
                "RESTART_DELAY_SECONDS",
                DEFAULT_RESTART_DELAY_SECONDS,
                float,
                RESTART_DELAY_RANGE_SECONDS,
            ),
            prune_every_seconds=env.every("PRUNE", DEFAULT_PRUNE_EVERY_SECONDS),
            verify_every_seconds=env.every("VERIFY", DEFAULT_VERIFY_EVERY_SECONDS),
            gc_every_seconds=env.every("GC", DEFAULT_GC_EVERY_SECONDS),
            gc_margin_seconds=env.number(
                "GC_MARGIN_SECONDS", DEFAULT_GC_MARGIN_SECONDS, int, GC_MARGIN_RANGE_SECONDS
            ),
            job_history_days=env.number(
                "JOB_HISTORY_DAYS", DEFAULT_JOB_HISTORY_DAYS, int, JOB_HISTORY_RANGE_DAYS
            ),
            exporter_address=env.text("EXPORTER_ADDRESS", DEFAULT_EXPORTER_ADDRESS),
            exporter_port=env.number("EXPORTER_PORT", DEFAULT_EXPORTER_PORT, int, PORT_RANGE),
            log_format=env.choice("LOG_FORMAT", DEFAULT_LOG_FORMAT, LOG_FORMATS),
        )
        if bool(settings.flower_user) != bool(settings.flower_password):
            raise ConfigurationError(
                detail=f"{PREFIX}FLOWER_USER and {PREFIX}FLOWER_PASSWORD must be set together"
            )
        _check_redis_tls(settings)
        if settings.flower_port > MAX_PORT:
            raise _bad("FLOWER_PORT", str(settings.flower_port), f"a port from 1 to {MAX_PORT}")
        return settings

    @property
    def fleet_location(self) -> str:
        """Where the provider finds the fleet: the local fleet directory, or the libvirt URI."""
        if self.provider == "libvirt":
            return self.libvirt_uri
        return str(Path(self.fleet_dir).resolve())

    @property
    def min_agent_version(self) -> str:
        """The oldest VM agent Register accepts: the QEMU guest agent's minimum on libvirt."""
        if self.provider == "libvirt":
            return self.libvirt_min_agent_version
        return MIN_AGENT_VERSION

    @property
    def state_file(self) -> Path:
        """Where `backup-jobs up` records the embedded server it started."""
        return self.data_dir / "server.json"


class _Env:
    """Typed reads of ``BACKUP_JOBS_*`` variables with errors that name the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str, default: str) -> str:
        return self._environ.get(PREFIX + name, default).strip()

    def redis_url(self, name: str) -> str | None:
        """A Redis URL, checked enough that a typo fails here and not deep in a client."""
        value = self.text(name, "")
        if not value:
            return None
        problem = redis_url_problem(value)
        if problem:
            shown = redact_url(value)
            raise ConfigurationError(
                detail=(
                    f"{PREFIX}{name}={shown!r} is not valid: {problem}; accepted: "
                    "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], rediss:// (the same with TLS) "
                    "or unix:///PATH"
                )
            )
        return value

    def libvirt_uri(self, name: str) -> str:
        """A libvirt URI of a driver this provider drives (``qemu:///system``...)."""
        value = self.text(name, DEFAULT_LIBVIRT_URI)
        scheme, sep, _ = value.partition("://")
        if not sep or scheme not in LIBVIRT_URI_SCHEMES:
            accepted = ", ".join(f"{s}://..." for s in LIBVIRT_URI_SCHEMES)
            raise _bad(name, value, f"a libvirt URI ({accepted}), e.g. {DEFAULT_LIBVIRT_URI}")
        return value

    def version(self, name: str, default: str) -> str:
        """A dotted version of 1 to 4 numbers (``7.2``, ``2.6.1198.718``)."""
        value = self.text(name, default)
        if not AGENT_VERSION_FORM.fullmatch(value):
            raise _bad(name, value, "1 to 4 dot-separated numbers, e.g. 7.2")
        return value

    def readable_file(self, name: str) -> Path | None:
        """A file this process can read (None when unset); a missing or unreadable one
        fails here, naming the variable, rather than in the middle of a TLS handshake."""
        value = self.text(name, "")
        if not value:
            return None
        path = Path(value).expanduser()
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise _bad(name, value, f"a readable file ({exc.strerror or exc})") from exc
        return path

    def path(self, name: str, default: Path) -> Path:
        value = self.text(name, "")
        return Path(value).expanduser() if value else default

    def name(self, name: str, default: str) -> str:
        value = self.text(name, default)
        if not value or not all(c.isalnum() or c in "-_." for c in value):
            raise _bad(name, value, "letters, digits, '-', '_' and '.'")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise _bad(name, value, ", ".join(choices))
        return value

    def number(
        self, name: str, default: N, kind: Callable[[str], N], bounds: tuple[float, float]
    ) -> N:
        """A finite number within ``bounds`` (inclusive); ``default`` when unset."""
        raw = self.text(name, "")
        if not raw:
            return default
        low, high = bounds
        # ASCII digits only: int() and float() also take '1_0' and other scripts' digits.
        pattern = _WHOLE if kind is int else _DECIMAL
        try:
            value: N | None = kind(raw) if pattern.fullmatch(raw) else None
        except (ValueError, OverflowError):
            value = None
        if value is None or not math.isfinite(value) or not low <= value <= high:
            whole = "a whole number" if kind is int else "a number"
            raise _bad(name, raw, f"{whole} from {_shown(low)} to {_shown(high)}")
        return value

    def timeout(self, operation: str, default: int) -> int:
        return self.number(f"{operation}_TIMEOUT_SECONDS", default, int, TIMEOUT_RANGE_SECONDS)

    def every(self, operation: str, default: int) -> int:
        return self.number(
            f"{operation}_EVERY_SECONDS", default, int, MAINTENANCE_EVERY_RANGE_SECONDS
        )


_WHOLE = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _shown(bound: float) -> str:
    """A range bound as people write it: ``2592000``, not ``2.592e+06``; ``0.2`` stays."""
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def _bad(name: str, value: str, accepted: str) -> ConfigurationError:
    return ConfigurationError(detail=f"{PREFIX}{name}={value!r} is not valid; accepted: {accepted}")


def _check_redis_tls(settings: Settings) -> None:
    """Refuse TLS files without a rediss:// URL, and a client certificate without its key."""
    given = [
        f"{PREFIX}{name}"
        for name, value in zip(
            REDIS_TLS_FILES,
            (settings.redis_ca_file, settings.redis_cert_file, settings.redis_key_file),
            strict=True,
        )
        if value is not None
    ]
    if not given:
        return
    scheme = urlsplit(settings.redis_url).scheme if settings.redis_url else ""
    if scheme != "rediss":
        where = f"{scheme}://" if scheme else "unset (the embedded server, which has no TLS)"
        raise ConfigurationError(
            detail=(
                f"{' and '.join(given)} need a rediss:// {PREFIX}REDIS_URL, "
                f"but {PREFIX}REDIS_URL is {where}"
            )
        )
    if (settings.redis_cert_file is None) != (settings.redis_key_file is None):
        raise ConfigurationError(
            detail=f"{PREFIX}REDIS_CERT_FILE and {PREFIX}REDIS_KEY_FILE must be set together"
        )


def flower_exposure_problem(settings: Settings) -> str | None:
    """Why Flower must not start as configured (beyond loopback without a password), or None."""
    if settings.flower_user or settings.flower_address in LOOPBACK_ADDRESSES:
        return None
    return (
        f"Flower would listen on {settings.flower_address or 'every interface'} without a "
        f"password; set {PREFIX}FLOWER_USER and {PREFIX}FLOWER_PASSWORD, or "
        f"{PREFIX}FLOWER_ADDRESS=127.0.0.1"
    )


def redis_url_problem(url: str) -> str | None:
    """What is wrong with a Redis URL, or None if it looks usable."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return str(exc)
    db = parts.path.strip("/")
    checks = (
        (
            parts.scheme not in REDIS_SCHEMES,
            f"the scheme must be one of {', '.join(REDIS_SCHEMES)}, not {parts.scheme!r}",
        ),
        (parts.scheme == "unix" and not parts.path, "a unix URL needs a socket path"),
        (parts.scheme != "unix" and not parts.hostname, "it names no host"),
        (port == 0, "port 0 is not a port"),
        (
            parts.scheme != "unix" and bool(db) and not db.isdigit(),
            f"the database {db!r} is not a number",
        ),
    )
    return next((problem for failed, problem in checks if failed), None)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    if password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
