"""kombu's Redis transport, with the server's refusals taken as connection trouble.

A Redis that refuses writes for a while (``MISCONF`` when the disk of its AOF is full, ``OOM``,
``READONLY`` on a replica) answers the worker's ``BRPOP`` with an error reply. kombu counts
that as a channel error, and Celery's consumer treats a channel error it did not expect as
fatal: the worker exited with "Unrecoverable error" and did not come back once space was
freed. Counted as a connection error instead, it makes the consumer reconnect with back-off
until Redis accepts commands again, as it does when Redis is down.
"""

from __future__ import annotations

import redis
from kombu.transport import redis as kombu_redis


class Transport(kombu_redis.Transport):
    """The Redis transport whose consumer survives every error reply of the server."""

    connection_errors = (*kombu_redis.Transport.connection_errors, redis.ResponseError)
