"""``backup-jobs exporter`` and ``backup-jobs health``: the service seen from outside."""

from __future__ import annotations

import contextlib
import json
import sys

import click

from backup_jobs import logs
from backup_jobs.catalogs.redis import RedisCatalog
from backup_jobs.connection import resolve_redis_url, ssl_options
from backup_jobs.dispatchers.celery import CeleryDispatcher
from backup_jobs.errors import BackupJobsError, ConfigurationError
from backup_jobs.models import utcnow
from backup_jobs.runtime import exporter as exporting
from backup_jobs.runtime.health import check_health, render
from backup_jobs.settings import PREFIX, Settings

# `health` exits so when a check fails (0 when all pass): a container or systemd health check.
EXIT_UNHEALTHY = 1


@click.command("exporter")
def exporter() -> None:
    """Serve Prometheus metrics computed from the catalog at each scrape (runs in the foreground).

    It listens on BACKUP_JOBS_EXPORTER_ADDRESS:BACKUP_JOBS_EXPORTER_PORT (127.0.0.1:9808).
    """
    settings = Settings.from_env()
    logs.configure(settings.log_format)
    # The server is found at the first scrape, not now: under a Procfile runner it may start
    # after the exporter; until then a scrape says backup_jobs_up 0 (and the log says why).
    collector = exporting.CatalogCollector(
        lambda: _catalog(settings, resolve_redis_url(settings)),
        utcnow,
        settings.vault_dir.resolve(),
    )
    address, port = settings.exporter_address, settings.exporter_port
    try:
        server = exporting.bind(collector, address, port)
    except OSError as exc:
        raise ConfigurationError(
            detail=(
                f"the exporter cannot listen on {address}:{port} ({exc.strerror or exc}); set "
                f"{PREFIX}EXPORTER_PORT to a free port"
            )
        ) from exc
    click.echo(f"exporter listening on {exporting.metrics_url(address, port)}", err=True)
    with server, contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


@click.command("health")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (for scripts).")
def health(as_json: bool) -> None:
    """Check Redis, the workers, the tick consumer, beat, tick lag, retries and queued jobs.

    One line per check; exit 0 if every check passes, 1 otherwise (a health check command
    for containers and systemd).
    """
    settings = Settings.from_env()
    catalog, dispatcher, problem = None, None, ""
    try:
        url = resolve_redis_url(settings)
        catalog = _catalog(settings, url)
        dispatcher = CeleryDispatcher.from_url(settings, url)
    except BackupJobsError as exc:
        problem = exc.message
    try:
        checks = check_health(settings, catalog, dispatcher, utcnow, problem)
    finally:
        if dispatcher is not None:
            dispatcher.close()
        if catalog is not None:
            catalog.client.close()
    healthy = all(check.ok for check in checks)
    if as_json:
        click.echo(json.dumps({"healthy": healthy, "checks": [c.to_dict() for c in checks]}))
    else:
        click.echo(render(checks))
    sys.exit(0 if healthy else EXIT_UNHEALTHY)


def _catalog(settings: Settings, url: str) -> RedisCatalog:
    """The catalog at ``url``, over TLS with the configured files for ``rediss://``."""
    return RedisCatalog.from_url(url, ssl_options(settings, url))
