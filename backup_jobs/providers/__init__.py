"""Implementations of the provider port (``backup_jobs.provider``)."""
