"""Implementations of the chunk store port (``backup_jobs.vault.chunkstore``)."""
