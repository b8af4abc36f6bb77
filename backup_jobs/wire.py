"""The wire contract: task names, queues and Redis keys, pinned by a test.

Renaming a Python module never changes a name here. Clients send tasks by these names, so
submitting work never imports the worker code.
"""

from __future__ import annotations

from backup_jobs.models import Operation

KEY_PREFIX = "bj"


def encodable(text: str) -> bool:
    """Whether ``text`` can go into a key or a record: it is valid UTF-8. Python keeps bytes
    that were not (a command-line argument, ``os.fsdecode``) as lone surrogates, which Redis
    and JSON refuse deep inside whatever carried them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


QUEUE_CONTROL = "control"
QUEUE_BACKUP = "backup"
QUEUE_MAINTENANCE = "maintenance"
# The queues of the job pool (``celery -A workers worker``).
QUEUES = (QUEUE_CONTROL, QUEUE_BACKUP, QUEUE_MAINTENANCE)
# Beat's ticks have a queue and a consumer of their own, so that no job can delay them.
QUEUE_TICKS = "ticks"

TASK_PREFIX = "backup_jobs."
# Spelled out, not derived from the enum: renaming an operation never renames its task.
TASK_NAMES: dict[Operation, str] = {
    Operation.DISCOVERY: TASK_PREFIX + "discovery",
    Operation.REGISTER: TASK_PREFIX + "register",
    Operation.CONFIGURE_PROTECTION: TASK_PREFIX + "configure_protection",
    Operation.BACKUP: TASK_PREFIX + "backup",
    Operation.RESTORE: TASK_PREFIX + "restore",
    Operation.STOP_PROTECTION: TASK_PREFIX + "stop_protection",
    Operation.DELETE_BACKUP_DATA: TASK_PREFIX + "delete_backup_data",
    Operation.PRUNE: TASK_PREFIX + "prune",
    Operation.VERIFY: TASK_PREFIX + "verify",
    Operation.GARBAGE_COLLECT: TASK_PREFIX + "garbage_collect",
}
# Job properties a task's message carries beside its job id, so that Flower's task list says
# what the job does: the policy being set, the point restored and where to, what started it.
SHOWN_PROPERTIES = ("policy", "recovery_point_id", "target", "as_new_vm", "trigger")
TASK_DISPATCH_RETRIES = "backup_jobs.tick.dispatch_retries"
TASK_REAP = "backup_jobs.tick.reap_lost_jobs"
TASK_SWEEP_QUEUED = "backup_jobs.tick.sweep_queued"
TASK_DISPATCH_BACKUPS = "backup_jobs.tick.dispatch_backups"
TASK_REPAIR_INDEXES = "backup_jobs.tick.repair_job_indexes"
# Starts each vault's Prune, Verify and GarbageCollect jobs when their cadence says so.
TASK_START_MAINTENANCE = "backup_jobs.tick.start_maintenance"
TASK_EXPIRE_HISTORY = "backup_jobs.tick.expire_job_history"
# Beat's ticks by name (the name each records in ``TICKS_KEY`` when it runs), every one sent
# every tick interval (``workers/beat.py``). ``TICKS_KEY`` holds other fields beside them (the
# maintenance jobs' last starts, the index repair's), which are not ticks.
BEAT_TICKS = {
    "dispatch-due-retries": TASK_DISPATCH_RETRIES,
    "reap-lost-jobs": TASK_REAP,
    "sweep-queued-jobs": TASK_SWEEP_QUEUED,
    "dispatch-due-backups": TASK_DISPATCH_BACKUPS,
    "repair-job-indexes": TASK_REPAIR_INDEXES,
    # Every tick, a cheap check per vault; each job starts at its own cadence (a setting).
    "start-maintenance": TASK_START_MAINTENANCE,
    "expire-job-history": TASK_EXPIRE_HISTORY,
}
TICK_TASKS = (
    TASK_DISPATCH_RETRIES,
    TASK_REAP,
    TASK_SWEEP_QUEUED,
    TASK_DISPATCH_BACKUPS,
    TASK_REPAIR_INDEXES,
    TASK_START_MAINTENANCE,
    TASK_EXPIRE_HISTORY,
)

OPERATION_QUEUES: dict[Operation, str] = {
    Operation.DISCOVERY: QUEUE_CONTROL,
    Operation.REGISTER: QUEUE_CONTROL,
    Operation.CONFIGURE_PROTECTION: QUEUE_CONTROL,
    Operation.BACKUP: QUEUE_BACKUP,
    Operation.RESTORE: QUEUE_BACKUP,
    Operation.STOP_PROTECTION: QUEUE_CONTROL,
    # Deleting a VM's manifests and mirrors is quick and file-system light, like stopping.
    Operation.DELETE_BACKUP_DATA: QUEUE_CONTROL,
    Operation.PRUNE: QUEUE_MAINTENANCE,
    Operation.VERIFY: QUEUE_MAINTENANCE,
    Operation.GARBAGE_COLLECT: QUEUE_MAINTENANCE,
}


def task_name(operation: Operation) -> str:
    """The Celery task name of an operation, as pinned in ``TASK_NAMES``."""
    return TASK_NAMES[operation]


def vault_key(vault: str) -> str:
    """The vault's configuration record."""
    return f"{KEY_PREFIX}:vault:{vault}"


def vault_index_key() -> str:
    """The names of every vault a client has recorded (the maintenance ticks walk them)."""
    return f"{KEY_PREFIX}:vaults"


def vm_key(vault: str, vm_id: str) -> str:
    """One VM's provider properties, as discovery last saw them."""
    return f"{KEY_PREFIX}:vm:{vault}:{vm_id}"


def vm_state_key(vault: str, vm_id: str) -> str:
    """The vault's own state of one VM (registration, last job, last error)."""
    return f"{KEY_PREFIX}:vmstate:{vault}:{vm_id}"


def vm_index_key(vault: str) -> str:
    """The set of VM ids of a vault."""
    return f"{KEY_PREFIX}:vms:{vault}"


def vm_name_key(vault: str, name: str) -> str:
    """The set of ids of a vault's VMs called ``name`` (one per cloud service), so that a bare
    name is resolved without reading every VM."""
    return f"{KEY_PREFIX}:vm-name:{vault}:{name}"


def job_key(job_id: str) -> str:
    """One job record."""
    return f"{KEY_PREFIX}:job:{job_id}"


def job_index_key(vault: str) -> str:
    """The jobs of a vault, scored by queue time (epoch seconds)."""
    return f"{KEY_PREFIX}:jobs:{vault}"


def jobs_by_status_key(vault: str, status: str) -> str:
    """The jobs of a vault that have one status now, scored by queue time (the jobs page)."""
    return f"{KEY_PREFIX}:jobs-by-status:{vault}:{status}"


def jobs_by_operation_key(vault: str, operation: str) -> str:
    """The jobs of a vault of one operation, scored by queue time (the jobs page)."""
    return f"{KEY_PREFIX}:jobs-by-operation:{vault}:{operation}"


def jobs_by_item_key(vault: str, item: str) -> str:
    """The jobs of one item (VM id, or the vault's own item), scored by queue time."""
    return f"{KEY_PREFIX}:jobs-by-item:{vault}:{item}"


# The prefixes of every per-vault job index (all of them sorted sets scored by queue time).
JOB_LISTING_PREFIXES = (
    f"{KEY_PREFIX}:jobs:",
    f"{KEY_PREFIX}:jobs-by-status:",
    f"{KEY_PREFIX}:jobs-by-operation:",
    f"{KEY_PREFIX}:jobs-by-item:",
)


def lock_key(vault: str, item: str) -> str:
    """The per-item lease: holds the running job id, expires unless renewed."""
    return f"{KEY_PREFIX}:lock:{vault}:{item}"


def fence_key(vault: str, item: str) -> str:
    """The item's fencing counter, incremented on every acquire and every reap."""
    return f"{KEY_PREFIX}:fence:{vault}:{item}"


def policy_key(vault: str, name: str) -> str:
    """One backup policy of a vault."""
    return f"{KEY_PREFIX}:policy:{vault}:{name}"


def policy_index_key(vault: str) -> str:
    """The names of a vault's policies."""
    return f"{KEY_PREFIX}:policies:{vault}"


def policy_items_key(vault: str, policy: str) -> str:
    """The VM ids a policy protects."""
    return f"{KEY_PREFIX}:policy-items:{vault}:{policy}"


def item_key(vault: str, vm_id: str) -> str:
    """One protected item: the vault's protection state of a VM (written by its jobs)."""
    return f"{KEY_PREFIX}:item:{vault}:{vm_id}"


def item_index_key(vault: str) -> str:
    """The VM ids of a vault's protected items."""
    return f"{KEY_PREFIX}:items:{vault}"


def item_events_key(vault: str, vm_id: str) -> str:
    """Scheduled runs of an item that were skipped or missed, by scheduled time."""
    return f"{KEY_PREFIX}:item-events:{vault}:{vm_id}"


def active_backup_key(vault: str, vm_id: str) -> str:
    """The newest Backup job started for an item (running or not): no pile-up of runs."""
    return f"{KEY_PREFIX}:active-backup:{vault}:{vm_id}"


def schedule_member(vault: str, vm_id: str) -> str:
    """An item's member in the schedule: ``vault|cloud_service/name``."""
    return f"{vault}|{vm_id}"


def recovery_point_key(vault: str, rp_id: str) -> str:
    """The catalog's mirror of one recovery point (the manifest is the truth)."""
    return f"{KEY_PREFIX}:rp:{vault}:{rp_id}"


def recovery_points_key(vault: str, vm_id: str) -> str:
    """A VM's recovery point ids, scored by creation time."""
    return f"{KEY_PREFIX}:rps:{vault}:{vm_id}"


# Protected items by their next scheduled run (epoch seconds): the dispatch tick reads the due.
SCHEDULE_KEY = f"{KEY_PREFIX}:schedule"
RETRY_SET_KEY = f"{KEY_PREFIX}:retries"
IN_PROGRESS_KEY = f"{KEY_PREFIX}:in-progress"
# Queued jobs by when the sweep should look at them again (a message may never have gone out).
QUEUED_KEY = f"{KEY_PREFIX}:queued"
# Final jobs of every vault by when they ended (epoch seconds): what history retention reads.
ENDED_KEY = f"{KEY_PREFIX}:jobs-ended"
# Records that could not be read, by key: what the ticks skipped (``backup-jobs problem list``).
PROBLEMS_KEY = f"{KEY_PREFIX}:problems"
# When each tick last ran, by tick name.
TICKS_KEY = f"{KEY_PREFIX}:ticks"
# The field of ``TICKS_KEY`` holding when the latest repair pass over the job indexes started;
# a script that had to replace an index key deletes it, which asks for a pass at the next tick.
INDEX_REPAIR_STARTED = "job-index-repair"
# The beat process that last started (its pid and host), for `backup-jobs up`'s readiness check.
BEAT_KEY = f"{KEY_PREFIX}:beat"
# Heartbeats with a TTL (``heartbeat_ttl_seconds``): beat refreshes its key as it loops, the
# tick consumer each time it runs a tick. A key that expired is a process that stopped
# (`backup-jobs health`). Each holds the host and pid of the last writer, and when it wrote.
BEAT_HEARTBEAT_KEY = f"{KEY_PREFIX}:heartbeat:beat"
TICKS_HEARTBEAT_KEY = f"{KEY_PREFIX}:heartbeat:ticks"
# A heartbeat lives this many tick intervals, and at least HEARTBEAT_MIN_SECONDS: a loaded
# machine may run a tick or two late without being called dead.
HEARTBEAT_TICKS = 3
HEARTBEAT_MIN_SECONDS = 30


def heartbeat_ttl_seconds(tick_seconds: float) -> int:
    """How long a heartbeat key lives when beat ticks every ``tick_seconds``."""
    return max(HEARTBEAT_MIN_SECONDS, int(HEARTBEAT_TICKS * tick_seconds) + 1)
