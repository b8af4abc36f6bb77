"""The Celery dispatcher: the one module of ``backup_jobs`` that talks to Celery.

It sends tasks by name (``backup_jobs.<operation>``), so clients never import the worker code.
``client_config`` holds the settings both sides of the wire must agree on; the worker's
``celeryconfig`` extends it.
"""

from __future__ import annotations

from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from backup_jobs import wire
from backup_jobs.catalogs.redis_errors import translate
from backup_jobs.connection import ssl_options
from backup_jobs.dispatcher import task_id_for
from backup_jobs.errors import RedisUnavailable
from backup_jobs.models import Job
from backup_jobs.settings import MAINTENANCE_TIMEOUT_SECONDS, Settings
from backup_jobs.settings import redact_url as redact

# Added to the longest operation timeout: the Redis transport re-delivers an unacknowledged
# message after the visibility timeout, so it must outlast any job (DESIGN §5).
VISIBILITY_MARGIN_SECONDS = 3600
# Celery results are only a convenience for Flower; the job record is kept, results expire.
RESULT_EXPIRES_SECONDS = 24 * 3600


def visibility_timeout_seconds(settings: Settings) -> int:
    """Longer than the longest job, plus a margin."""
    t = settings.timeouts
    longest = max(
        t.discovery_seconds,
        t.install_agent_seconds,
        t.snapshot_seconds + t.transfer_seconds,
        t.restore_seconds,
        MAINTENANCE_TIMEOUT_SECONDS,
    )
    return longest + VISIBILITY_MARGIN_SECONDS


def client_config(settings: Settings, redis_url: str) -> dict[str, Any]:
    """The Celery settings shared by senders and workers, each with its reason."""
    transport = {"visibility_timeout": visibility_timeout_seconds(settings)}
    tls = ssl_options(settings, redis_url)
    return {
        "broker_url": redis_url,
        "result_backend": redis_url,
        # rediss://: the server's certificate verified against BACKUP_JOBS_REDIS_CA_FILE and
        # this machine's client certificate, for the broker and the result backend alike
        # (without them kombu would accept any certificate). Flower's broker view reads the
        # broker's. None for redis:// and unix://.
        "broker_use_ssl": tls or None,
        "redis_backend_use_ssl": tls or None,
        # The same visibility timeout for broker, result backend and app (DESIGN §5).
        "broker_transport_options": transport,
        "result_backend_transport_options": transport,
        "visibility_timeout": transport["visibility_timeout"],
        # JSON only: a broker message must never be able to run code (no pickle).
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Flower shows tasks from the moment they are sent.
        "task_send_sent_event": True,
        "result_expires": RESULT_EXPIRES_SECONDS,
        "broker_connection_retry_on_startup": True,
        "enable_utc": True,
        "timezone": "UTC",
    }


class CeleryDispatcher:
    """Sends job attempts as Celery tasks by name."""

    def __init__(self, app: Celery) -> None:
        self._app = app

    @classmethod
    def from_url(cls, settings: Settings, redis_url: str) -> CeleryDispatcher:
        """A sender-only Celery app on ``redis_url``; it never becomes the current app.

        It has no result backend: a client follows the job record, never a Celery result, and
        with one Celery would subscribe to each sent task's result channel (two more round
        trips per job). Job tasks store no result either (``workers.tasks``): Flower shows
        theirs from the task events.
        """
        app = Celery("backup_jobs-client", set_as_current=False)
        app.conf.update({**client_config(settings, redis_url), "result_backend": None})
        return cls(app)

    def send(self, job: Job, attempt: int) -> str:
        """Enqueue one attempt on its operation's queue; Flower shows the VM, the job id and
        the properties that say what the job does (``wire.SHOWN_PROPERTIES``)."""
        task_id = task_id_for(job, attempt)
        try:
            self._app.send_task(
                wire.task_name(job.operation),
                # The VM first: Flower's task list shows the start of the kwargs in one
                # line, and the job id is in the task id (the UUID column) already.
                kwargs={
                    "item": job.item_name,
                    "job_id": job.id,
                    "attempt": attempt,
                    "vault": job.vault,
                    **{
                        name: str(job.properties[name])
                        for name in wire.SHOWN_PROPERTIES
                        if job.properties.get(name) not in (None, "")
                    },
                },
                queue=wire.OPERATION_QUEUES[job.operation],
                task_id=task_id,
                retry=True,
                retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
            )
        except OperationalError as exc:
            url = redact(str(self._app.conf.broker_url))
            raise RedisUnavailable(job.item_name, f"{url}: {exc}") from exc
        except redis.RedisError as exc:
            raise translate(str(self._app.conf.broker_url), exc) from exc
        return task_id

    def answering(self, nodes: list[str], timeout: float) -> set[str]:
        """Which of the Celery ``nodes`` answer a control ping within ``timeout`` seconds."""
        try:
            replies = self._app.control.ping(destination=nodes, timeout=timeout) or []
        except (OperationalError, redis.RedisError):
            return set()
        return {node for reply in replies for node in reply}

    def consumers(self, timeout: float) -> dict[str, list[str]]:
        """Every Celery node answering within ``timeout`` seconds, with the queues it consumes.

        A broadcast: it waits the whole ``timeout`` (nobody knows how many will answer).
        """
        try:
            replies = self._app.control.inspect(timeout=timeout).active_queues() or {}
        except (OperationalError, redis.RedisError):
            return {}
        return {
            node: sorted(str(q.get("name")) for q in queues if isinstance(q, dict))
            for node, queues in replies.items()
            if isinstance(queues, list)
        }

    def close(self) -> None:
        """Release the app's broker connections."""
        self._app.close()
