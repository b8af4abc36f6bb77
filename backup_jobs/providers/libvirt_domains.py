"""Domain XML, read and written: what the libvirt provider sees of a domain, and what it asks.

Pure functions over XML text (no libvirt calls), so they are unit-tested on their own.

**Grouping (the cloud service).** A domain belongs to the cloud service named by the
``cloud-service`` attribute of its backup-jobs metadata element::

    <metadata>
      <backupjobs:vm xmlns:backupjobs="https://backup-jobs.dev/libvirt/1"
                     cloud-service="web" region="local-1" os-type="Linux"/>
    </metadata>

and, without one, by its name's prefix up to the first ``.`` (``web.frontend1`` is in ``web``);
a name without a dot is in ``DEFAULT_GROUP``. The VM's id is ``<cloud service>/<domain name>``.
Registration writes its marker (``<extension>``: version, agent version, fencing tokens) into
the same element, so it survives restarts of this service and moves with the domain.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET  # parses libvirt's own XML, not untrusted input
from dataclasses import dataclass, field
from xml.sax.saxutils import quoteattr

METADATA_URI = "https://backup-jobs.dev/libvirt/1"
METADATA_PREFIX = "backupjobs"
# The cloud service of a domain with neither metadata nor a dotted name.
DEFAULT_GROUP = "libvirt"
AGENT_CHANNEL = "org.qemu.guest_agent.0"
EXTENSION_VERSION = "1.0.0"
# A restored domain's size when the source domain is gone: enough for a small Linux guest.
DEFAULT_MEMORY_MIB = 512
DEFAULT_VCPUS = 1


@dataclass(frozen=True)
class DomainDisk:
    """One disk of a domain: its target (``vda``), image file and format (``qcow2``/``raw``)."""

    target: str
    path: str
    format: str


@dataclass(frozen=True)
class Extension:
    """The registration marker kept in the domain's metadata."""

    version: str
    agent_version: str | None
    installed_at: float
    tokens: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class BackupMeta:
    """The backup-jobs metadata element of a domain (every part optional)."""

    cloud_service: str | None = None
    region: str | None = None
    os_type: str | None = None
    extension: Extension | None = None
    origin: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DomainView:
    """What the provider reads from a domain's XML."""

    name: str
    disks: tuple[DomainDisk, ...]
    nics: int
    agent_channel: bool
    agent_connected: bool
    memory_kib: int
    vcpus: int


def parse_domain(xml: str) -> DomainView:
    """The disks (file-backed, ``device='disk'``), NICs and agent channel of a domain."""
    root = ET.fromstring(xml)  # noqa: S314
    disks = []
    for disk in root.iterfind("devices/disk"):
        source, target = disk.find("source"), disk.find("target")
        driver = disk.find("driver")
        path = source.get("file") or source.get("dev") if source is not None else None
        if disk.get("device", "disk") != "disk" or target is None or not path:
            continue
        fmt = driver.get("type", "raw") if driver is not None else "raw"
        disks.append(DomainDisk(target.get("dev", ""), path, fmt))
    channel = None
    for candidate in root.iterfind("devices/channel/target"):
        if candidate.get("name") == AGENT_CHANNEL:
            channel = candidate
    return DomainView(
        name=root.findtext("name", ""),
        disks=tuple(disks),
        nics=len(root.findall("devices/interface")),
        agent_channel=channel is not None,
        agent_connected=channel is not None and channel.get("state") == "connected",
        memory_kib=int(root.findtext("memory", "0") or 0),
        vcpus=int(root.findtext("vcpu", "1") or 1),
    )


def group_of(name: str, meta: BackupMeta) -> str:
    """The domain's cloud service: its metadata's, else its name's prefix, else the default."""
    if meta.cloud_service:
        return meta.cloud_service
    prefix, dot, _ = name.partition(".")
    return prefix if dot and prefix else DEFAULT_GROUP


def parse_meta(xml: str | None) -> BackupMeta:
    """Read a metadata element written by ``meta_xml`` (None or unreadable: empty)."""
    if not xml:
        return BackupMeta()
    try:
        root = ET.fromstring(xml)  # noqa: S314
    except ET.ParseError:
        return BackupMeta()
    extension = None
    found = root.find("extension")
    if found is not None:
        tokens = {
            t.get("scope", ""): int(t.get("value", "0"))
            for t in found.iterfind("token")
            if t.get("value", "").isdigit()
        }
        extension = Extension(
            found.get("version", EXTENSION_VERSION),
            found.get("agent-version") or None,
            float(found.get("installed-at", "0") or 0),
            tokens,
        )
    origin = {o.get("key", ""): o.get("value", "") for o in root.iterfind("origin")}
    return BackupMeta(
        root.get("cloud-service"), root.get("region"), root.get("os-type"), extension, origin
    )


def meta_xml(meta: BackupMeta) -> str:
    """The metadata element for ``meta`` (libvirt adds the namespace)."""
    attrs = "".join(
        f" {name}={quoteattr(value)}"
        for name, value in (
            ("cloud-service", meta.cloud_service),
            ("region", meta.region),
            ("os-type", meta.os_type),
        )
        if value
    )
    inner = ""
    if meta.extension is not None:
        ext = meta.extension
        tokens = "".join(
            f"<token scope={quoteattr(scope)} value='{value}'/>"
            for scope, value in sorted(ext.tokens.items())
        )
        agent = f" agent-version={quoteattr(ext.agent_version)}" if ext.agent_version else ""
        inner += (
            f"<extension version={quoteattr(ext.version)}{agent} "
            f"installed-at='{ext.installed_at:.3f}'>{tokens}</extension>"
        )
    for key, value in sorted(meta.origin.items()):
        inner += f"<origin key={quoteattr(key)} value={quoteattr(value)}/>"
    return f"<vm{attrs}>{inner}</vm>"


def installed(meta: BackupMeta, agent_version: str | None, scope: str, token: int) -> BackupMeta:
    """``meta`` with the extension recorded as installed by the job holding ``token``."""
    tokens = dict(meta.extension.tokens) if meta.extension else {}
    tokens[scope] = token
    extension = Extension(EXTENSION_VERSION, agent_version, time.time(), tokens)
    return BackupMeta(meta.cloud_service, meta.region, meta.os_type, extension, meta.origin)


def backup_xml(
    socket: str, scratch_dir: str, disks: list[DomainDisk], incremental: str | None
) -> str:
    """A pull-mode backup of ``disks`` exported over NBD at ``socket``.

    Each disk's copy-before-write data goes to a scratch file in ``scratch_dir``; with
    ``incremental``, each export also carries the dirty bitmap since that checkpoint.
    """
    entries = "".join(
        f"<disk name={quoteattr(d.target)} backup='yes' type='file'>"
        f"<scratch file={quoteattr(f'{scratch_dir}/scratch-{d.target}.qcow2')}/></disk>"
        for d in disks
    )
    since = f"<incremental>{incremental}</incremental>" if incremental else ""
    return (
        f"<domainbackup mode='pull'>{since}"
        f"<server transport='unix' socket={quoteattr(socket)}/>"
        f"<disks>{entries}</disks></domainbackup>"
    )


def checkpoint_xml(name: str, disks: list[DomainDisk]) -> str:
    """A checkpoint with a dirty bitmap on each of ``disks``."""
    entries = "".join(f"<disk name={quoteattr(d.target)} checkpoint='bitmap'/>" for d in disks)
    return f"<domaincheckpoint><name>{name}</name><disks>{entries}</disks></domaincheckpoint>"


def dirty_bitmap(backup: str, target: str) -> str | None:
    """The dirty bitmap a running backup exports for disk ``target`` (None for a full one)."""
    root = ET.fromstring(backup)  # noqa: S314
    for disk in root.iterfind("disks/disk"):
        if disk.get("name") == target:
            return disk.get("exportbitmap")
    return None


def new_domain_xml(name: str, disks: list[DomainDisk], memory_kib: int, vcpus: int) -> str:
    """A persistent KVM domain booting from the first of ``disks``, with a guest agent channel.

    Its metadata is written after it is defined (``Libvirt.set_metadata``).
    """
    devices = "".join(
        f"<disk type='file' device='disk'><driver name='qemu' type={quoteattr(d.format)}/>"
        f"<source file={quoteattr(d.path)}/><target dev={quoteattr(d.target)} bus='virtio'/>"
        "</disk>"
        for d in disks
    )
    return (
        f"<domain type='kvm'><name>{_text(name)}</name>"
        f"<memory unit='KiB'>{memory_kib}</memory><vcpu>{vcpus}</vcpu>"
        "<os><type arch='x86_64'>hvm</type><boot dev='hd'/></os>"
        f"<devices>{devices}"
        f"<channel type='unix'><target type='virtio' name='{AGENT_CHANNEL}'/></channel>"
        "</devices></domain>"
    )


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
