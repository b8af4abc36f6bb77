"""Implementations of the dispatcher port (``backup_jobs.dispatcher``)."""
