"""Flower's configuration (``celery -A workers flower --conf=<this file>``).

Flower runs this file and reads its module-level names as options. It listens on loopback
unless told otherwise, and refuses to listen beyond loopback without a password.
"""

from backup_jobs.errors import ConfigurationError
from backup_jobs.settings import Settings

_settings = Settings.from_env()
_settings.data_dir.mkdir(parents=True, exist_ok=True)

port = _settings.flower_port
address = _settings.flower_address
# Keep task history across restarts, bounded.
persistent = True
db = str(_settings.data_dir / "flower.db")
max_tasks = 10000
# Show the names we give tasks and their arguments (VM and job id).
tasks_columns = "name,uuid,state,args,kwargs,result,received,started,runtime,worker"
if _settings.flower_user and _settings.flower_password:
    basic_auth = [f"{_settings.flower_user}:{_settings.flower_password}"]
elif address not in ("127.0.0.1", "localhost", "::1"):
    raise ConfigurationError(
        detail=(
            f"Flower would listen on {address or 'every interface'} without a password; set "
            "BACKUP_JOBS_FLOWER_USER and BACKUP_JOBS_FLOWER_PASSWORD"
        )
    )
