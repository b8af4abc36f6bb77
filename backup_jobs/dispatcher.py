"""The dispatcher port: hands a job attempt to the job queue, by task name."""

from __future__ import annotations

from typing import Protocol

from backup_jobs.models import Job


def task_id_for(job: Job, attempt: int) -> str:
    """The Celery task id of one attempt: derived, so a re-sent attempt keeps its id."""
    return f"{job.id}.{attempt}"


class Dispatcher(Protocol):
    """Sends the task that runs one attempt of a job."""

    def send(self, job: Job, attempt: int) -> str:
        """Enqueue attempt ``attempt`` of ``job``; returns the task id."""
        ...
