"""One vault backup or restore in a process of its own, for ``vault_throughput`` to time.

Run as a script, ``python benchmarks/vault_child.py backup|restore VAULT PATH``, so that the
``backup_jobs`` it imports is the first one on ``PYTHONPATH``: this checkout's, or the one
``vault_throughput --compare`` names. Prints its own seconds (from after its imports) and its
peak RSS. It imports the vault alone, so a timed process starts no faster than a user's would.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from backup_jobs.vault import BackupRequest, DiskSource, RestoreRequest, Vault, backup, restore


def run(operation: str, root: str, path: str) -> None:
    """Back ``path`` up into the vault at ``root``, or restore its last point into ``path``."""
    start = time.perf_counter()
    vault = Vault.open(Path(root))
    if operation == "backup":
        backup(vault, BackupRequest("bench/vm", [DiskSource("os", Path(path))]))
    else:
        # The newest by creation time: two backups in one second may sort either way by id.
        manifest = max(vault.manifests(), key=lambda m: m.created_at)
        target = Path(path)
        restore(vault, RestoreRequest(manifest.id, target, target.parent, overwrite=True))
    print(time.perf_counter() - start, peak_rss_bytes())


def peak_rss_bytes() -> int:
    """This process's peak RSS since exec (VmHWM; ru_maxrss would include the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


if __name__ == "__main__":
    run(*sys.argv[1:4])
