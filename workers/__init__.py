"""The Celery side of backup-jobs: ``celery -A workers worker|beat|flower|inspect``."""

from workers.app import app

__all__ = ["app"]
