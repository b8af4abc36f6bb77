"""The composition root: builds the real collaborators once per worker process."""

from __future__ import annotations

import functools
import time
from pathlib import Path

from backup_jobs.catalogs.redis import RedisCatalog
from backup_jobs.clock import Clock, SystemClock
from backup_jobs.connection import resolve_redis_url, ssl_options
from backup_jobs.dispatchers.celery import CeleryDispatcher
from backup_jobs.errors import ConfigurationError
from backup_jobs.heartbeat import Heartbeats
from backup_jobs.models import VaultConfig
from backup_jobs.provider import Provider
from backup_jobs.providers.libvirt import LibvirtProvider
from backup_jobs.providers.local import LocalFleet, LocalProvider
from backup_jobs.settings import Settings

# Under a Procfile runner the embedded server may start a moment after the worker.
EMBEDDED_SERVER_WAIT_SECONDS = 15.0
# A vault's configuration is re-read this often by each worker process.
VAULT_CACHE_SECONDS = 5.0


@functools.cache
def settings() -> Settings:
    """The process's settings, read once."""
    return Settings.from_env()


@functools.cache
def redis_url() -> str:
    """The Redis URL: the setting, else the embedded server of the data dir (waiting briefly)."""
    deadline = time.monotonic() + EMBEDDED_SERVER_WAIT_SECONDS
    while True:
        try:
            return resolve_redis_url(settings())
        except ConfigurationError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


@functools.cache
def catalog() -> RedisCatalog:
    """The Redis catalog (redis-py reconnects after fork by itself)."""
    return RedisCatalog.from_url(redis_url(), ssl_options(settings(), redis_url()))


@functools.cache
def heartbeats() -> Heartbeats:
    """The process's lease heartbeat (its thread starts with the first attempt)."""
    return Heartbeats(catalog(), settings().lease_ttl_seconds)


def clock() -> Clock:
    """The real clock."""
    return SystemClock()


_vaults: dict[str, tuple[float, VaultConfig]] = {}


def vault(name: str) -> VaultConfig:
    """A vault's configuration as its clients recorded it (else this worker's settings).

    Cached for a few seconds: it is read by every job and changes only by hand.
    """
    cached = _vaults.get(name)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    found = catalog().get_vault(name)
    if found is None:
        s = settings()
        found = VaultConfig(
            name,
            s.region,
            s.provider,
            s.fleet_location,
            str(Path(s.vault_dir).resolve()),
        )
    _vaults[name] = (time.monotonic() + VAULT_CACHE_SECONDS, found)
    return found


@functools.cache
def _provider(kind: str, fleet_dir: str) -> Provider:
    """The provider of a vault; for libvirt, ``fleet_dir`` is the vault's libvirt URI."""
    if kind == "libvirt":
        s = settings()
        return LibvirtProvider(fleet_dir, s.region, Path(s.libvirt_images_dir).resolve())
    if kind != "local":
        raise ConfigurationError(detail=f"unknown provider {kind!r}; accepted: local, libvirt")
    return LocalProvider(LocalFleet(Path(fleet_dir)))


def provider(config: VaultConfig) -> Provider:
    """The provider of a vault."""
    return _provider(config.provider, config.fleet_dir)


@functools.cache
def dispatcher() -> CeleryDispatcher:
    """Sends the jobs that jobs and ticks start, through the worker's own app."""
    from workers.app import app  # the app imports this module: import it when first needed

    return CeleryDispatcher(app)
