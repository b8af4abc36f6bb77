"""The demo fleet: healthy VMs plus one VM for every Discovery/Register row of the seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backup_jobs.providers.local import LocalFleet
from backup_jobs.providers.local_faults import Fault

OLD_AGENT_VERSION = "2.6.1000.0"

# (cloud service, name, what it shows, properties)
DEMO_VMS: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("cs-web", "web01", "healthy Windows VM", {"os_type": "Windows"}),
    ("cs-app", "app01", "healthy Linux VM", {}),
    ("cs-web", "shared01", "same name in two cloud services", {}),
    ("cs-db", "shared01", "same name in two cloud services", {}),
    ("cs-app", "stopped01", "VMNotRunning", {"power_state": "Stopped"}),
    ("cs-db", "disks06", "DataDiskLimitExceeded", {"data_disks": 6}),
    (
        "cs-db",
        "premium01",
        "UnsupportedConfiguration: premium storage",
        {"storage_tier": "Premium"},
    ),
    ("cs-app", "multinic01", "UnsupportedConfiguration: multiple NICs", {"nics": 2}),
    ("cs-web", "lb01", "UnsupportedConfiguration: load balancer", {"load_balancer": True}),
    ("cs-app", "noagent01", "VMAgentNotInstalled", {"agent_version": None}),
    ("cs-app", "oldagent01", "GuestAgentCertificateNotFound", {"agent_version": OLD_AGENT_VERSION}),
    ("cs-app", "hung01", "InstallAgentTimeout (install hangs once)", {}),
    ("cs-far", "remote01", "in another region: not registrable here", {}),
)


def create_demo_fleet(root: Path, region: str) -> LocalFleet:
    """Create (or re-create) the demo fleet in ``root``, in ``region``."""
    fleet = LocalFleet(root)
    root.mkdir(parents=True, exist_ok=True)
    for cloud_service, name, purpose, properties in DEMO_VMS:
        props = dict(properties)
        props.setdefault("region", region)
        if cloud_service == "cs-far":
            props["region"] = region + "-far"
        fleet.create_vm(cloud_service, name, purpose=purpose, **props)
    fleet.faults.clear()
    fleet.faults.add(Fault("install-agent-timeout", vm="cs-app/hung01", times=1))
    return fleet
