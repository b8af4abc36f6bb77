"""The vault: a deduplicating, compressed, optionally encrypted chunk store for VM disks.

A pure library (no Celery): ``Vault`` opens or creates one; ``backup``, ``restore``,
``verify``, ``collect_garbage`` and ``prune`` work on it; ``retention.select`` is the pure
retention rule. The storage design is in ``docs/design.md``.
"""

from backup_jobs.vault.backup import BackupRequest, DiskSource, backup
from backup_jobs.vault.crypto import Keys
from backup_jobs.vault.format import DiskIndex, Manifest
from backup_jobs.vault.gc import GcReport, collect_garbage
from backup_jobs.vault.prune import prune
from backup_jobs.vault.repository import Vault
from backup_jobs.vault.restore import RestoreRequest, restore
from backup_jobs.vault.retention import PointInfo, RetentionPolicy, Selection, select
from backup_jobs.vault.verify import VerifyReport, verify

__all__ = [
    "BackupRequest",
    "DiskIndex",
    "DiskSource",
    "GcReport",
    "Keys",
    "Manifest",
    "PointInfo",
    "RestoreRequest",
    "RetentionPolicy",
    "Selection",
    "Vault",
    "VerifyReport",
    "backup",
    "collect_garbage",
    "prune",
    "restore",
    "select",
    "verify",
]
