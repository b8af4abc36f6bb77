"""The real workers' app, telling the benchmark when each task ended (``benchmarks.finished``).

celery -A benchmarks.worker_app worker ...
"""

from __future__ import annotations

from benchmarks import finished
from workers.app import app

__all__ = ["app", "finished"]
