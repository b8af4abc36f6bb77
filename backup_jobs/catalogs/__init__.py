"""Implementations of the catalog port (``backup_jobs.catalog``)."""
