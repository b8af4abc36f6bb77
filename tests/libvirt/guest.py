"""The agent guest: a small Linux booted directly, running the QEMU guest agent over an ext4 disk.

Built once per session from Debian's packages that tests/setup-libvirt.sh installs or fetches:

- the kernel (``vmlinuz``) and the few modules it needs (virtio, virtio-blk, virtio-console,
  ext4 and theirs) from the cached ``linux-image-*.deb``, extracted with ``dpkg-deb``;
- an initramfs written here (newc cpio, no ``cpio`` tool needed) holding ``busybox-static``,
  ``qemu-ga`` with the shared libraries ``ldd`` names, the modules, an init script and an
  fsfreeze hook.

The init mounts proc/sys/dev, loads the modules, mounts the data disk ``/dev/vda`` (ext4, made
on the host with ``mkfs.ext4`` before the guest starts) on ``/mnt`` (``/dev/vdb`` is a blank
disk) and runs ``qemu-ga`` on
the ``org.qemu.guest_agent.0`` port (found through sysfs: no udev, so no
``/dev/virtio-ports`` links). qemu-ga runs the hook on every freeze and thaw; the hook logs
each to ``/run/fsfreeze.log`` and fails a freeze while ``/run/fail-freeze`` exists, which is
how a test makes a freeze fail for real.

``Guest`` drives the running guest through the agent: ``run`` is ``guest-exec`` and waits.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.libvirt.host import Host, virsh

CACHE = Path(os.environ.get("LIBVIRT_TEST_CACHE", "/var/cache/backup-jobs-tests"))
# In load order (each after what it needs); the kernel has everything else built in.
MODULES = (
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci",
    "drivers/block/virtio_blk",
    "drivers/char/virtio_console",
    "lib/crc16",
    "fs/mbcache",
    "fs/jbd2/jbd2",
    "crypto/crc32c_generic",
    "lib/libcrc32c",
    "fs/ext4/ext4",
)
INIT = """#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in {modules}; do insmod /lib/modules/$m.ko; done
mount -t ext4 -o noatime /dev/vda /mnt || echo "init: no ext4 data disk"
port=""
while [ -z "$port" ]; do
    for p in /sys/class/virtio-ports/*; do
        [ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] && port=/dev/${{p##*/}}
    done
    [ -n "$port" ] || sleep 0.1
done
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu PATH=/bin:/usr/sbin
while true; do
    qemu-ga -m virtio-serial -p "$port" -F/etc/fsfreeze-hook -t /run -f /run/qemu-ga.pid
    sleep 1
done
"""
HOOK = """#!/bin/sh
echo "$1" >> /run/fsfreeze.log
if [ "$1" = freeze ] && [ -e /run/fail-freeze ]; then
    echo "fsfreeze-hook: refusing to freeze (/run/fail-freeze)" >&2
    exit 1
fi
exit 0
"""
# How long the guest may take to boot to an answering agent (≈ 7 s under TCG, alone).
BOOT_TIMEOUT_SECONDS = 120
# A guest under KVM prints its first kernel line well within this; one that does not, never boots.
KVM_PROBE_SECONDS = 5
# The ext4 data disk: 16 chunks of the vault's 4 MiB, so an incremental's few are plain to see.
DATA_DISK_MIB = 64
# A second disk with no file system (vdb): the guest writes it with dd, and a restore of it is
# byte-identical to it (the ext4 disk's superblock changes with every thaw).
BLANK_DISK_MIB = 16


def missing() -> str | None:
    """Why the agent guest cannot be built here, or None."""
    if not list(CACHE.glob("linux-image-*.deb")):
        return f"no linux-image-*.deb in {CACHE}: run `sh tests/setup-libvirt.sh` (as root)"
    for tool in ("/bin/busybox", "/usr/sbin/qemu-ga", "dpkg-deb", "mkfs.ext4", "ldd"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed: run `sh tests/setup-libvirt.sh` (as root)"
    return None


def build_boot_files(folder: Path) -> tuple[Path, Path]:
    """The guest's kernel and initramfs in ``folder`` (made once; reused if there)."""
    kernel, initrd = folder / "vmlinuz", folder / "initrd.cpio"
    if kernel.exists() and initrd.exists():
        return kernel, initrd
    deb = sorted(CACHE.glob("linux-image-*.deb"))[-1]
    tree = folder / "deb"
    tree.mkdir(parents=True, exist_ok=True)
    tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    wanted = ["./boot/vmlinuz-*", *(f"./lib/modules/*/kernel/{m}.ko" for m in MODULES)]
    subprocess.run(
        ["tar", "-x", "-C", str(tree), "--wildcards", *wanted], stdin=tar.stdout, check=True
    )
    assert tar.wait() == 0, f"dpkg-deb --fsys-tarfile {deb} failed"
    shutil.copy(next(tree.glob("boot/vmlinuz-*")), kernel)
    modules = next(tree.glob("lib/modules/*/kernel"))
    files: dict[str, tuple[int, bytes]] = {
        "init": (
            0o755,
            INIT.format(modules=" ".join(m.rsplit("/", 1)[1] for m in MODULES)).encode(),
        ),
        "etc/fsfreeze-hook": (0o755, HOOK.encode()),
        "bin/busybox": (0o755, Path("/bin/busybox").read_bytes()),
        "usr/sbin/qemu-ga": (0o755, Path("/usr/sbin/qemu-ga").read_bytes()),
    }
    for module in MODULES:
        name = module.rsplit("/", 1)[1]
        files[f"lib/modules/{name}.ko"] = (0o644, (modules / f"{module}.ko").read_bytes())
    for library in _libraries("/usr/sbin/qemu-ga"):
        files[library.lstrip("/")] = (0o755, Path(library).read_bytes())
    links = {"bin/sh": "busybox", "var/run": "../run"}
    folders = ["dev", "proc", "sys", "mnt", "run", "tmp", "var", "etc", "usr/sbin"]
    initrd.write_bytes(_cpio(folders, files, links))
    shutil.rmtree(tree)
    return kernel, initrd


def _libraries(binary: str) -> list[str]:
    """The shared libraries (and loader) ``binary`` needs, as ``ldd`` resolves them."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    return re.findall(r"(/\S+\.so[.\d]*) \(0x", out)


def _cpio(folders: list[str], files: dict[str, tuple[int, bytes]], links: dict[str, str]) -> bytes:
    """A newc cpio archive (what the kernel unpacks as initramfs), parents before children."""
    entries: list[tuple[str, int, bytes]] = []
    made: set[str] = set()

    def parents(path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            folder = "/".join(parts[:i])
            if folder not in made:
                made.add(folder)
                entries.append((folder, stat.S_IFDIR | 0o755, b""))

    for folder in folders:
        parents(f"{folder}/x")
    for path, (mode, data) in files.items():
        parents(path)
        entries.append((path, stat.S_IFREG | mode, data))
    for path, target in links.items():
        parents(path)
        entries.append((path, stat.S_IFLNK | 0o777, target.encode()))
    entries.append(("TRAILER!!!", 0, b""))
    out = bytearray()
    for ino, (name, mode, data) in enumerate(entries, start=1):
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def ext4_disk(host: Host, name: str, size_mib: int) -> Path:
    """A qcow2 image holding a fresh ext4 file system (made raw with mkfs.ext4, converted)."""
    raw = host.folder / f"{name}.raw"
    with raw.open("wb") as image:
        image.truncate(size_mib << 20)
    # Initialised now, so that the mounted file system writes nothing in the background.
    subprocess.run(
        ["mkfs.ext4", "-F", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(raw)],
        check=True,
        timeout=60,
    )
    image_path = host.folder / f"{name}.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(image_path)],
        check=True,
        timeout=60,
    )
    raw.unlink()
    return image_path


@dataclass
class Guest:
    """The running agent guest: its domain, its ext4 disk's image (vda), a blank disk's (vdb)."""

    domain: str
    image: Path
    blank: Path
    console: Path

    def agent(self, command: str, **arguments: object) -> object:
        """One guest agent command through libvirt; its ``return`` value."""
        request = json.dumps(
            {"execute": command, "arguments": arguments} if arguments else {"execute": command}
        )
        out = virsh("qemu-agent-command", self.domain, request, "--timeout", "30")
        return json.loads(out)["return"]

    def run(self, script: str) -> str:
        """Run ``sh -c script`` in the guest; its output (AssertionError if it fails)."""
        started = self.agent(
            "guest-exec", path="/bin/sh", arg=["-c", script], **{"capture-output": True}
        )
        assert isinstance(started, dict)
        deadline = time.monotonic() + 60
        while True:
            status = self.agent("guest-exec-status", pid=started["pid"])
            assert isinstance(status, dict)
            if status.get("exited"):
                break
            assert time.monotonic() < deadline, f"guest-exec {script!r} still running"
            time.sleep(0.05)
        out = base64.b64decode(status.get("out-data", "")).decode()
        err = base64.b64decode(status.get("err-data", "")).decode()
        assert status.get("exitcode") == 0, f"guest: {script!r} failed: {out}{err}"
        return out


def wait_for_agent(guest: Guest, timeout: float = BOOT_TIMEOUT_SECONDS) -> float:
    """Poll ``guest-ping`` until the agent answers; the seconds it took."""
    started = time.monotonic()
    while True:
        result = subprocess.run(
            [
                "virsh",
                "-c",
                "qemu:///system",
                "qemu-agent-command",
                guest.domain,
                '{"execute":"guest-ping"}',
                "--timeout",
                "2",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode == 0:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            console = (
                guest.console.read_text(errors="replace")[-3000:] if guest.console.exists() else ""
            )
            raise AssertionError(
                f"the agent guest's agent did not answer within {timeout} s; console:\n{console}"
            )
        time.sleep(0.3)


def start_agent_guest(host: Host, folder: Path) -> Guest:
    """Build (once) and boot the agent guest over a fresh ext4 disk; return once its agent answers.

    KVM when the host's /dev/kvm boots Linux (the kernel prints within ``KVM_PROBE_SECONDS``;
    nested KVM here does not), else TCG.
    """
    kernel, initrd = build_boot_files(folder)
    image = ext4_disk(host, "agent", DATA_DISK_MIB)
    blank = host.disk("agent-blank", f"{BLANK_DISK_MIB}M")
    console = host.folder / "agent-console.log"
    serial = f"<serial type='file'><source path='{console}'/><target port='0'/></serial>"
    kinds = ["kvm", "qemu"] if host.domain_type == "kvm" else ["qemu"]
    for kind in kinds:
        console.unlink(missing_ok=True)
        name = host.domain(
            "agent",
            [image, blank],
            channel=True,
            boot=agent_guest_os(kernel, initrd),
            extra=serial,
            domain_type=kind,
        )
        guest = Guest(name, image, blank, console)
        if kind == kinds[-1] or _prints(console, KVM_PROBE_SECONDS):
            break
        host.remove(name)
    wait_for_agent(guest)
    return guest


def _prints(console: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if console.exists() and console.stat().st_size > 0:
            return True
        time.sleep(0.2)
    return False


def agent_guest_os(kernel: Path, initrd: Path) -> str:
    """The ``<os>`` of a directly booted guest."""
    return (
        "<os><type arch='x86_64'>hvm</type>"
        f"<kernel>{kernel}</kernel><initrd>{initrd}</initrd>"
        "<cmdline>console=ttyS0 panic=-1</cmdline></os>"
    )
