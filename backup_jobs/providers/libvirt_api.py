"""The one module that imports libvirt-python: a small typed surface over what the provider uses.

libvirt-python ships no type stubs and raises one exception type for everything; here each call
is typed, and ``libvirtError`` becomes a ``ProviderError`` (raised ``from`` it) that names the
domain and the call, or one of the two agent errors the provider acts on. The binding is the
optional extra ``libvirt`` (``pip install -e ".[libvirt]"``); without it, opening a connection
is a ``ConfigurationError`` saying so.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from backup_jobs.errors import ConfigurationError
from backup_jobs.provider import ProviderError

T = TypeVar("T")

# virDomainModificationImpact, virDomainMetadataType, virDomainXMLFlags (libvirt-domain.h).
_AFFECT_LIVE = 1
_AFFECT_CONFIG = 2
_METADATA_ELEMENT = 2
_XML_INACTIVE = 2
# virErrorNumber: no domain, no checkpoint, agent unresponsive or not configured (virerror.h).
_ERR_NO_DOMAIN = 42
_ERR_NO_DOMAIN_METADATA = 80
_ERR_AGENT_UNRESPONSIVE = 86
_ERR_AGENT_UNSYNCED = 97
_ERR_OPERATION_INVALID = 55
_ERR_ARGUMENT_UNSUPPORTED = 74


class AgentNotConfigured(ProviderError):
    """Raised when a domain has no guest agent channel."""


class AgentNoAnswer(ProviderError):
    """Raised when a domain's guest agent channel is there but nothing answers on it."""


def _binding() -> tuple[Any, Any]:
    try:
        import libvirt
        import libvirt_qemu
    except ImportError as exc:
        raise ConfigurationError(
            detail="BACKUP_JOBS_PROVIDER=libvirt needs the libvirt-python binding",
            action='Install it: pip install "backup-jobs[libvirt]" (it builds against '
            "libvirt-dev and pkg-config).",
        ) from exc
    # libvirt prints every error on stderr by default; here each one is raised, translated.
    libvirt.registerErrorHandler(_ignore, None)
    return libvirt, libvirt_qemu


def _ignore(_context: object, _error: object) -> None:
    """libvirt's error callback: nothing to do, the call raises."""


class Libvirt:
    """A connection to one libvirt URI, opened at first use and reopened when it drops."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._conn: Any = None

    def _connection(self) -> Any:
        libvirt, _ = _binding()
        if self._conn is None or not self._conn.isAlive():
            with self._translated(f"connect to {self.uri}"):
                self._conn = libvirt.open(self.uri)
        return self._conn

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        libvirt, _ = _binding()
        try:
            yield
        except libvirt.libvirtError as exc:
            code = exc.get_error_code()
            if code in (_ERR_AGENT_UNRESPONSIVE, _ERR_AGENT_UNSYNCED):
                raise AgentNoAnswer(f"{what}: {exc}") from exc
            if code in (_ERR_OPERATION_INVALID, _ERR_ARGUMENT_UNSUPPORTED) and "agent" in str(exc):
                raise AgentNotConfigured(f"{what}: {exc}") from exc
            raise ProviderError(f"libvirt ({self.uri}): {what}: {exc}") from exc

    def _call(self, what: str, call: Callable[[], T]) -> T:
        with self._translated(what):
            return call()

    def _domain(self, name: str) -> Any:
        return self._call(f"find domain {name}", lambda: self._connection().lookupByName(name))

    def domain_names(self) -> list[str]:
        """The names of every domain, running or defined."""
        conn = self._connection()
        return sorted(self._call("list domains", lambda: [d.name() for d in conn.listAllDomains()]))

    def exists(self, name: str) -> bool:
        """True if a domain of this name is known to libvirt."""
        libvirt, _ = _binding()
        try:
            self._connection().lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == _ERR_NO_DOMAIN:
                return False
            raise ProviderError(f"libvirt ({self.uri}): find domain {name}: {exc}") from exc
        return True

    def xml(self, name: str) -> str:
        """The domain's live XML (its defined XML when it is not running)."""
        domain = self._domain(name)
        return cast(str, self._call(f"read the XML of {name}", lambda: domain.XMLDesc(0)))

    def is_running(self, name: str) -> bool:
        """True if the domain is active (running or paused)."""
        domain = self._domain(name)
        return bool(self._call(f"read the state of {name}", domain.isActive))

    def is_persistent(self, name: str) -> bool:
        """True if the domain is defined (survives being stopped)."""
        domain = self._domain(name)
        return bool(self._call(f"read {name}", domain.isPersistent))

    def capacity(self, name: str, disk: str) -> int:
        """The virtual size of one disk (by target name, e.g. ``vda``)."""
        domain = self._domain(name)
        return int(self._call(f"size disk {disk} of {name}", lambda: domain.blockInfo(disk)[0]))

    def metadata(self, name: str, uri: str) -> str | None:
        """The domain's metadata element of namespace ``uri``, or None."""
        libvirt, _ = _binding()
        domain = self._domain(name)
        try:
            return cast(str, domain.metadata(_METADATA_ELEMENT, uri, 0))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == _ERR_NO_DOMAIN_METADATA:
                return None
            raise ProviderError(f"libvirt ({self.uri}): metadata of {name}: {exc}") from exc

    def set_metadata(self, name: str, xml: str, prefix: str, uri: str) -> None:
        """Store ``xml`` as the domain's metadata element of ``uri`` (live and defined)."""
        domain = self._domain(name)
        flags = _AFFECT_LIVE if domain.isActive() else 0
        if domain.isPersistent():
            flags |= _AFFECT_CONFIG
        self._call(
            f"write metadata of {name}",
            lambda: domain.setMetadata(_METADATA_ELEMENT, xml, prefix, uri, flags),
        )

    def agent(self, name: str, command: str, timeout_seconds: int) -> Any:
        """Run a guest agent command (``guest-ping``...); its ``return`` value."""
        _, libvirt_qemu = _binding()
        domain = self._domain(name)
        request = json.dumps({"execute": command})
        reply = self._call(
            f"guest agent {command} on {name}",
            lambda: libvirt_qemu.qemuAgentCommand(domain, request, timeout_seconds, 0),
        )
        return json.loads(reply).get("return")

    def backup_begin(self, name: str, backup_xml: str, checkpoint_xml: str | None) -> None:
        """Start a backup job (virDomainBackupBegin)."""
        domain = self._domain(name)
        self._call(
            f"start a backup of {name}", lambda: domain.backupBegin(backup_xml, checkpoint_xml, 0)
        )

    def backup_xml(self, name: str) -> str | None:
        """The XML of the domain's running backup job, or None if it has none."""
        libvirt, _ = _binding()
        domain = self._domain(name)
        try:
            return cast(str, domain.backupGetXMLDesc(0))
        except libvirt.libvirtError:
            return None

    def abort_job(self, name: str) -> None:
        """End the domain's running job (a pull backup ends this way)."""
        domain = self._domain(name)
        self._call(f"end the backup of {name}", domain.abortJob)

    def checkpoints(self, name: str) -> list[str]:
        """The names of the domain's checkpoints."""
        domain = self._domain(name)
        found = self._call(f"list checkpoints of {name}", lambda: domain.listAllCheckpoints(0))
        return [str(c.getName()) for c in found]

    def delete_checkpoint(self, name: str, checkpoint: str) -> None:
        """Delete one checkpoint (its bitmap merges into its parent's)."""
        domain = self._domain(name)
        self._call(
            f"delete checkpoint {checkpoint} of {name}",
            lambda: domain.checkpointLookupByName(checkpoint, 0).delete(0),
        )

    def define(self, xml: str) -> None:
        """Define a new persistent domain from its XML."""
        conn = self._connection()
        self._call("define a domain", lambda: conn.defineXML(xml))

    def inactive_xml(self, name: str) -> str:
        """The domain's defined XML."""
        domain = self._domain(name)
        return cast(str, self._call(f"read {name}", lambda: domain.XMLDesc(_XML_INACTIVE)))
