"""Running the service on one machine: what ``backup-jobs up``, ``demo`` and ``server`` start.

``embedded`` starts and stops the locked embedded server; ``processes`` holds the commands of
the worker, tick consumer, beat and Flower and starts one process so that it dies with its
parent; ``stack`` checks, starts and stops them all; ``readiness`` asks each whether it
answers; ``supervisor`` restarts what exits. Production wiring (``workers/``, the client)
imports none of this: it finds the server through ``backup_jobs.connection``.
"""
