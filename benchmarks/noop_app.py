"""The baseline: a bare Celery app with one no-op task, configured like the real workers."""

from __future__ import annotations

from celery import Celery

from workers import celeryconfig, root

app = Celery("bench_noop")
app.conf.update(celeryconfig.build(root.settings(), root.redis_url()))
app.conf.beat_schedule = {}


@app.task(name="bench.noop")
def noop(job_id: str, attempt: int = 1) -> dict[str, str]:
    """Do nothing, return a small dict like the real tasks."""
    return {"job_id": job_id}
