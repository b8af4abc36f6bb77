"""kombu's Redis transport, with the server's refusals taken as connection trouble.

A Redis that refuses writes for a while (``MISCONF`` when the disk of its AOF is full,
``NOREPLICAS``, ``READONLY`` on a replica) answers the worker's ``BRPOP`` (a write) with an
error reply. kombu counts that as a channel error, and Celery's consumer treats a channel
error it did not expect as fatal: the worker exited with "Unrecoverable error" and did not come
back once space was freed. Here every error reply counts as a connection error, so the consumer
reconnects as it does when Redis is down; and a new channel first checks that the server
accepts writes, so that reconnecting backs off (2 s, 4 s, ... 30 s) instead of spinning while
the server still refuses.

And when the connection is lost while attempts run (they go on: see celeryconfig), kombu
closes the channel and tries to put their unacknowledged messages back on the queue, and later
to acknowledge them, through the connection it already released; the AttributeError that
follows killed the worker ("Unrecoverable error"). Such a message stays in Redis's unacked hash
and comes back after the visibility timeout; it then finds its attempt done and does nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

log = logging.getLogger("backup_jobs.transport")

# A write that changes nothing: deleting a key that never exists.
PROBE_KEY = "bj:write-probe"


# What a channel whose connection is gone raises (kombu drops its reference to it).
_GONE: tuple[type[BaseException], ...] = (AttributeError, *kombu_redis.Transport.connection_errors)


class QoS(kombu_redis.QoS):
    """Acks and restores on a channel whose connection is gone are deferred, not fatal."""

    def restore_unacked(self, client: Any = None) -> None:
        """Put unacknowledged messages back on their queues, if Redis can be reached."""
        try:
            super().restore_unacked(client)
        except _GONE as exc:
            log.warning("unacked_restore_deferred reason=%r", exc)

    def ack(self, delivery_tag: Any) -> None:
        """Acknowledge a message, if its channel's connection is still there."""
        try:
            super().ack(delivery_tag)
        except _GONE as exc:
            log.warning("ack_deferred tag=%s reason=%r", delivery_tag, exc)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        """Reject a message, if its channel's connection is still there."""
        try:
            super().reject(delivery_tag, requeue)
        except _GONE as exc:
            log.warning("reject_deferred tag=%s reason=%r", delivery_tag, exc)


class Channel(kombu_redis.Channel):
    """A Redis channel that is only opened on a server that accepts writes."""

    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:
            self.client.delete(PROBE_KEY)
        except redis.ResponseError as exc:
            # Undo what the base class did on success (kombu does the same when PING fails).
            self._disconnect_pools()  # type: ignore[attr-defined]
            self.connection.cycle.discard(self)  # type: ignore[union-attr]
            raise redis.ConnectionError(f"the server refuses writes: {exc}") from exc


class Transport(kombu_redis.Transport):
    """The Redis transport whose consumer survives every error reply of the server."""

    Channel = Channel
    connection_errors = (*kombu_redis.Transport.connection_errors, redis.ResponseError)
