"""The one Celery app (``celery -A workers ...``), passed explicitly, never ``current_app``."""

from __future__ import annotations

from celery import Celery

from workers import celeryconfig, root

app = Celery("backup_jobs", include=["workers.tasks", "workers.signals"])
app.conf.update(celeryconfig.build(root.settings(), root.redis_url()))
