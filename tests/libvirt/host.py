"""A libvirt host for the tests: daemons started if need be, test domains made and removed.

No systemd here: ``virtlogd -d`` and ``libvirtd -d`` are started when nothing answers on
``qemu:///system``, and stopped afterwards (only the ones started here, by their pid files).
``/dev/kvm`` is made usable by libvirt's QEMU user (group ``kvm``, mode 0660, as udev would);
without it, domains use TCG (``type='qemu'``). Test domains are named ``<prefix>.<role>`` with
a per-session prefix, so discovery puts them in one cloud service; all of them, their
checkpoints and their images are removed at the end.
"""

from __future__ import annotations

import contextlib
import grp
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

URI = "qemu:///system"
SETUP = "tests/setup-libvirt.sh"
PID_FILES = {"virtlogd": Path("/run/virtlogd.pid"), "libvirtd": Path("/run/libvirtd.pid")}
# A domain with no OS: it sits in the BIOS looking for a boot disk, idle, in well under a second.
NO_OS_MEMORY_MIB = 256


def missing() -> str | None:
    """Why libvirt tests cannot run here, or None."""
    for tool in ("libvirtd", "virtlogd", "virsh", "qemu-img", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed: run `sh {SETUP}` (as root)"
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return 'libvirt-python is not installed: pip install -e ".[test,libvirt]"'
    if os.geteuid() != 0:
        return "the libvirt tests drive qemu:///system and need root"
    return None


def virsh(*args: str, check: bool = True) -> str:
    """Run ``virsh -c qemu:///system ARGS``; its output."""
    result = subprocess.run(
        ["virsh", "-c", URI, *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"virsh {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _answers() -> bool:
    result = subprocess.run(
        ["virsh", "-c", URI, "version"], capture_output=True, timeout=30, check=False
    )
    return result.returncode == 0


@dataclass
class Host:
    """The session's libvirt host: a scratch folder QEMU can read, the domains made here."""

    folder: Path
    prefix: str
    domain_type: str
    started: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)

    def disk(self, name: str, size: str = "64M", fmt: str = "qcow2") -> Path:
        """A new empty image file in the scratch folder."""
        path = self.folder / f"{name}.{fmt}"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", fmt, str(path), size], check=True, timeout=60
        )
        return path

    def domain(
        self,
        role: str,
        disks: list[Path],
        *,
        channel: bool = False,
        start: bool = True,
        extra: str = "",
        boot: str = "<os><type arch='x86_64'>hvm</type><boot dev='hd'/></os>",
        domain_type: str | None = None,
    ) -> str:
        """Define (and start) a domain ``<prefix>.<role>`` over ``disks``: no OS unless ``boot``
        (an ``<os>`` element) names a kernel to boot directly."""
        name = f"{self.prefix}.{role}"
        devices = "".join(
            f"<disk type='file' device='disk'><driver name='qemu' type='{p.suffix[1:]}'/>"
            f"<source file='{p}'/><target dev='vd{chr(ord('a') + i)}' bus='virtio'/></disk>"
            for i, p in enumerate(disks)
        )
        if channel:
            devices += (
                "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/>"
                "</channel>"
            )
        xml = (
            f"<domain type='{domain_type or self.domain_type}'><name>{name}</name>"
            f"<memory unit='MiB'>{NO_OS_MEMORY_MIB}</memory><vcpu>1</vcpu>"
            f"{boot}<devices>{devices}<interface type='user'><model type='virtio'/></interface>"
            f"{extra}</devices></domain>"
        )
        path = self.folder / f"{name}.xml"
        path.write_text(xml)
        if name not in self.domains:
            self.domains.append(name)
        virsh("define", str(path))
        if start:
            virsh("start", name)
        return name

    def write(self, domain: str, pattern: int, offset: int, length: int, disk: str = "vda") -> None:
        """Write into a running domain's disk from QEMU itself (the guest has no OS to do it)."""
        backend = f"/machine/peripheral/virtio-disk{ord(disk[-1]) - ord('a')}/virtio-backend"
        out = virsh(
            "qemu-monitor-command",
            domain,
            "--hmp",
            f'qemu-io -d {backend} "write -P {pattern:#x} {offset} {length}"',
        )
        assert "rror" not in out, out
        # Flushed, so that qcow2's cached metadata is in the file when a test reads it beside.
        out = virsh("qemu-monitor-command", domain, "--hmp", f'qemu-io -d {backend} "flush"')
        assert "rror" not in out, out

    def remove(self, name: str) -> None:
        """Destroy and undefine a domain with its checkpoints' metadata."""
        virsh("destroy", name, check=False)
        virsh("undefine", name, "--checkpoints-metadata", "--nvram", check=False)


def _start_daemons() -> list[str]:
    started: list[str] = []
    if _answers():
        return started
    for daemon in ("virtlogd", "libvirtd"):
        subprocess.run([daemon, "-d"], check=True, timeout=60)
        started.append(daemon)
    deadline = time.monotonic() + 30
    while not _answers():
        if time.monotonic() > deadline:
            raise AssertionError("libvirtd started but qemu:///system does not answer")
        time.sleep(0.2)
    return started


def _kvm_usable() -> bool:
    """Let libvirt's QEMU user open /dev/kvm (group kvm, 0660, what udev does); False: TCG."""
    kvm = Path("/dev/kvm")
    if not kvm.exists():
        return False
    with contextlib.suppress(KeyError, OSError):
        os.chown(kvm, -1, grp.getgrnam("kvm").gr_gid)
        os.chmod(kvm, 0o660)
        return True
    return False


def _stop(daemon: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(PID_FILES[daemon].read_text().strip()), signal.SIGTERM)


@contextlib.contextmanager
def libvirt_host() -> Iterator[Host]:
    """The session's host; everything made here is removed afterwards."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    started = _start_daemons()
    # Not the pytest temp dir: its parents are 0700 and QEMU runs as libvirt-qemu.
    folder = Path(tempfile.mkdtemp(prefix="bjtest-libvirt-"))
    folder.chmod(0o755)
    host = Host(folder, f"bjt{os.getpid()}", "kvm" if _kvm_usable() else "qemu", started)
    try:
        yield host
    finally:
        for name in host.domains:
            host.remove(name)
        shutil.rmtree(folder, ignore_errors=True)
        for daemon in reversed(started):
            _stop(daemon)
