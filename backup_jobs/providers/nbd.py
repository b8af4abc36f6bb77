"""A small NBD client: read an export and its block status over a Unix socket.

What the libvirt provider needs from a pull-mode backup (QEMU's NBD server): the fixed
newstyle handshake, structured replies, ``NBD_OPT_SET_META_CONTEXT`` for ``base:allocation``
and ``qemu:dirty-bitmap:<name>``, ``NBD_CMD_READ`` and ``NBD_CMD_BLOCK_STATUS``. The protocol
is https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md; only the parts used are
here, and every request waits for its reply (no pipelining: the vault reads in 4 MiB pieces).

``NbdImage`` is an ``ImageReader`` over one export: thread-safe (one lock per connection),
holes and zero runs skipped through ``base:allocation``.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OPT_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF
FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_SET_META_CONTEXT = 10
REP_ACK = 1
REP_INFO = 3
REP_META_CONTEXT = 4
REP_ERROR_BIT = 1 << 31
INFO_EXPORT = 0
CMD_READ = 0
CMD_DISC = 2
CMD_BLOCK_STATUS = 7
REPLY_FLAG_DONE = 1
CHUNK_NONE = 0
CHUNK_OFFSET_DATA = 1
CHUNK_OFFSET_HOLE = 2
CHUNK_BLOCK_STATUS = 5
CHUNK_ERROR_BIT = 1 << 15
# base:allocation's flags: a hole, and reads as zeros.
STATE_HOLE = 1
STATE_ZERO = 2
# qemu:dirty-bitmap:<name>'s flag: changed since the bitmap started.
STATE_DIRTY = 1
BASE_ALLOCATION = "base:allocation"
# QEMU's NBD server refuses requests above 32 MiB; block status asks for less at a time.
MAX_REQUEST_BYTES = 32 << 20
BLOCK_STATUS_SPAN_BYTES = 1 << 30


class NbdError(Exception):
    """Raised when the NBD server refuses, breaks the protocol or goes away."""


@dataclass(frozen=True)
class Extent:
    """A run of an export with the same block-status flags."""

    start: int
    end: int
    flags: int


def dirty_bitmap_context(bitmap: str) -> str:
    """The meta context QEMU exports a dirty bitmap under."""
    return f"qemu:dirty-bitmap:{bitmap}"


class NbdConnection:
    """One connection to one export, in transmission phase after ``connect``."""

    def __init__(self, path: str, export: str, contexts: tuple[str, ...] = ()) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._lock = threading.Lock()
        self._handle = 0
        self.contexts: dict[str, int] = {}
        try:
            self._sock.connect(path)
            self.size = self._handshake(export, contexts)
        except OSError as exc:
            self._sock.close()
            raise NbdError(f"NBD server at {path}: {exc}") from exc
        except NbdError:
            self._sock.close()
            raise

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (the caller keeps within the export)."""
        out = bytearray(length)
        done = 0
        while done < length:
            piece = min(MAX_REQUEST_BYTES, length - done)
            with self._lock:
                self._request(CMD_READ, offset + done, piece)
                self._read_replies(offset + done, memoryview(out)[done : done + piece], None)
            done += piece
        return bytes(out)

    def block_status(self, context: str, offset: int, length: int) -> list[Extent]:
        """The extents of ``[offset, offset + length)`` as ``context`` describes them."""
        context_id = self.contexts.get(context)
        if context_id is None:
            raise NbdError(f"the server did not offer the meta context {context}")
        extents: list[Extent] = []
        position, end = offset, offset + length
        while position < end:
            span = min(BLOCK_STATUS_SPAN_BYTES, end - position)
            found: list[Extent] = []
            with self._lock:
                self._request(CMD_BLOCK_STATUS, position, span)
                self._read_replies(position, None, (context_id, found))
            if not found:
                raise NbdError(f"no block status for {context} at {position}")
            for extent in found:
                extents.append(Extent(extent.start, min(extent.end, end), extent.flags))
            position = min(found[-1].end, end)
        return extents

    def close(self) -> None:
        """Say goodbye and close the socket."""
        try:
            with self._lock:
                self._request(CMD_DISC, 0, 0)
        except (OSError, NbdError):
            pass
        self._sock.close()

    # --- handshake -----------------------------------------------------------------------

    def _handshake(self, export: str, contexts: tuple[str, ...]) -> int:
        magic, opt_magic, flags = struct.unpack(">QQH", self._recv(18))
        if magic != NBDMAGIC or opt_magic != IHAVEOPT or not flags & FLAG_FIXED_NEWSTYLE:
            raise NbdError("not a fixed-newstyle NBD server")
        self._sock.sendall(struct.pack(">I", FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
        self._option(OPT_STRUCTURED_REPLY, b"")
        self._expect_ack(OPT_STRUCTURED_REPLY)
        if contexts:
            name = export.encode()
            body = struct.pack(">I", len(name)) + name + struct.pack(">I", len(contexts))
            for context in contexts:
                body += struct.pack(">I", len(context.encode())) + context.encode()
            self._option(OPT_SET_META_CONTEXT, body)
            while (reply := self._option_reply(OPT_SET_META_CONTEXT))[0] == REP_META_CONTEXT:
                (context_id,) = struct.unpack(">I", reply[1][:4])
                self.contexts[reply[1][4:].decode()] = context_id
            _check_ack(reply, OPT_SET_META_CONTEXT)
        name = export.encode()
        self._option(OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
        size: int | None = None
        while (reply := self._option_reply(OPT_GO))[0] == REP_INFO:
            (info,) = struct.unpack(">H", reply[1][:2])
            if info == INFO_EXPORT:
                size, _ = struct.unpack(">QH", reply[1][2:12])
        _check_ack(reply, OPT_GO)
        if size is None:
            raise NbdError(f"the server did not say the size of export {export}")
        return int(size)

    def _option(self, option: int, data: bytes) -> None:
        self._sock.sendall(struct.pack(">QII", IHAVEOPT, option, len(data)) + data)

    def _option_reply(self, option: int) -> tuple[int, bytes]:
        magic, replied, kind, length = struct.unpack(">QIII", self._recv(20))
        if magic != OPT_REPLY_MAGIC or replied != option:
            raise NbdError(f"bad reply to NBD option {option}")
        return kind, self._recv(length)

    def _expect_ack(self, option: int) -> None:
        _check_ack(self._option_reply(option), option)

    # --- transmission --------------------------------------------------------------------

    def _request(self, command: int, offset: int, length: int) -> None:
        self._handle += 1
        header = struct.pack(">IHHQQI", REQUEST_MAGIC, 0, command, self._handle, offset, length)
        self._sock.sendall(header)

    def _read_replies(
        self,
        base: int,
        into: memoryview | None,
        status: tuple[int, list[Extent]] | None,
    ) -> None:
        """Read the (structured) reply chunks of the last request, until the last one."""
        while True:
            (magic,) = struct.unpack(">I", self._recv(4))
            if magic == SIMPLE_REPLY_MAGIC:
                error, _handle = struct.unpack(">IQ", self._recv(12))
                if error:
                    raise NbdError(f"NBD request failed with error {error}")
                if into is not None:
                    into[:] = self._recv(len(into))
                return
            if magic != STRUCTURED_REPLY_MAGIC:
                raise NbdError(f"bad NBD reply magic {magic:#x}")
            flags, kind, _handle, length = struct.unpack(">HHQI", self._recv(16))
            payload = self._recv(length)
            _apply_chunk(kind, payload, base, into, status)
            if flags & REPLY_FLAG_DONE:
                return

    def _recv(self, length: int) -> bytes:
        data = bytearray()
        while len(data) < length:
            piece = self._sock.recv(min(length - len(data), 1 << 20))
            if not piece:
                raise NbdError("the NBD server closed the connection")
            data += piece
        return bytes(data)


def _apply_chunk(
    kind: int,
    payload: bytes,
    base: int,
    into: memoryview | None,
    status: tuple[int, list[Extent]] | None,
) -> None:
    """Put one structured reply chunk's content where the request wants it."""
    if kind & CHUNK_ERROR_BIT:
        error, length = struct.unpack(">IH", payload[:6])
        raise NbdError(f"NBD error {error}: {payload[6 : 6 + length].decode(errors='replace')}")
    if kind == CHUNK_OFFSET_DATA and into is not None:
        (offset,) = struct.unpack(">Q", payload[:8])
        data = payload[8:]
        into[offset - base : offset - base + len(data)] = data
    elif kind == CHUNK_OFFSET_HOLE and into is not None:
        offset, length = struct.unpack(">QI", payload[:12])
        into[offset - base : offset - base + length] = bytes(length)
    elif kind == CHUNK_BLOCK_STATUS and status is not None:
        (context_id,) = struct.unpack(">I", payload[:4])
        if context_id != status[0]:
            return
        position = base
        for index in range(4, len(payload), 8):
            length, flags = struct.unpack(">II", payload[index : index + 8])
            status[1].append(Extent(position, position + length, flags))
            position += length


def _check_ack(reply: tuple[int, bytes], option: int) -> None:
    kind, data = reply
    if kind & REP_ERROR_BIT:
        raise NbdError(f"NBD option {option} refused: {data.decode(errors='replace')}")
    if kind != REP_ACK:
        raise NbdError(f"unexpected reply {kind} to NBD option {option}")


class NbdImage:
    """An ``ImageReader`` over one NBD export (a point-in-time view of a running VM's disk)."""

    def __init__(self, path: str, export: str, dirty_bitmap: str | None = None) -> None:
        contexts = (BASE_ALLOCATION,) + (
            (dirty_bitmap_context(dirty_bitmap),) if dirty_bitmap else ()
        )
        self._conn = NbdConnection(path, export, contexts)
        self._bitmap = dirty_bitmap

    @property
    def size(self) -> int:
        """The export's size."""
        return self._conn.size

    def data_extents(self) -> list[tuple[int, int]]:
        """Ranges that may hold data: everything but what reads as zeros."""
        extents = self._conn.block_status(BASE_ALLOCATION, 0, self.size)
        return _merge(e for e in extents if not e.flags & STATE_ZERO)

    def dirty_extents(self) -> list[tuple[int, int]]:
        """Ranges the dirty bitmap marks changed (the export must have been opened with one)."""
        if self._bitmap is None:
            raise NbdError("this export was opened without a dirty bitmap")
        context = dirty_bitmap_context(self._bitmap)
        return _merge(
            e for e in self._conn.block_status(context, 0, self.size) if e.flags & STATE_DIRTY
        )

    def pread(self, length: int, offset: int) -> bytes:
        """``length`` bytes at ``offset``, short past the end."""
        length = max(0, min(length, self.size - offset))
        return self._conn.read(offset, length) if length else b""

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


def _merge(extents: Iterable[Extent]) -> list[tuple[int, int]]:
    """Adjacent extents joined into ``(start, end)`` ranges."""
    merged: list[tuple[int, int]] = []
    for extent in extents:
        if merged and merged[-1][1] == extent.start:
            merged[-1] = (merged[-1][0], extent.end)
        else:
            merged.append((extent.start, extent.end))
    return merged
