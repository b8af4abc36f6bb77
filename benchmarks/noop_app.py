"""The baseline: a bare Celery app with one no-op task, configured like the real workers.

It tells the benchmark when each task ended as the real workers' benchmark app does
(``benchmarks.finished``).
"""

from __future__ import annotations

from celery import Celery

from benchmarks import finished
from workers import celeryconfig, root

__all__ = ["app", "finished", "noop"]

app = Celery("bench_noop")
app.conf.update(celeryconfig.build(root.settings(), root.redis_url()))
app.conf.beat_schedule = {}


@app.task(name="bench.noop")
def noop(job_id: str, attempt: int = 1) -> dict[str, str]:
    """Do nothing, return a small dict like the real tasks."""
    return {"job_id": job_id}
