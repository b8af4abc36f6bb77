"""Flower's configuration (``celery -A workers flower --conf=<this file>``).

Flower runs this file and reads its module-level names as options. It listens on loopback
unless told otherwise, and refuses to listen beyond loopback without a password: one line on
stderr and the error's exit code, never a traceback (``backup-jobs up`` and ``backup-jobs
flower`` check this before they start Flower; this covers ``celery ... flower`` run by hand).
"""

import sys

from backup_jobs.errors import BackupJobsError, ConfigurationError
from backup_jobs.settings import Settings, flower_exposure_problem
from workers import flowerstop

try:
    _settings = Settings.from_env()
    _problem = flower_exposure_problem(_settings)
    if _problem:
        raise ConfigurationError(detail=_problem)
except BackupJobsError as _error:
    print(f"error: {_error.code}: {_error.message}", file=sys.stderr)
    sys.exit(_error.exit_code)
_settings.data_dir.mkdir(parents=True, exist_ok=True)
# Stop on SIGTERM every time, saving the history (see the module).
flowerstop.install()

port = _settings.flower_port
address = _settings.flower_address
# Keep the task history across restarts (DESIGN §5): Flower saves its state to the data dir
# when it stops (SIGTERM, as `up` stops it) and every minute, so a killed Flower loses at most
# a minute of it; it reloads it when it starts. Bounded: the oldest tasks go first.
persistent = True
db = str(_settings.data_dir / "flower.db")
state_save_interval = 60_000  # milliseconds
max_tasks = 10_000
# Times as "2 minutes ago": a person reads the task list for what happened lately.
natural_time = True
# The operation (the task's name), the VM and the job id (its kwargs; our tasks take no
# positional args, so that column would be empty), how it went and when; the result, long,
# after the short columns so that they fit on the screen.
tasks_columns = "name,uuid,state,kwargs,received,started,runtime,retries,result,worker"
if _settings.flower_user and _settings.flower_password:
    basic_auth = [f"{_settings.flower_user}:{_settings.flower_password}"]
