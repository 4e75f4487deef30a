"""Length-prefixed frames over a Unix stream socket: the wire of the local transport.

Every frame is a 4-byte big-endian length, then that many bytes of the frame's JSON
(`protocol.Frame.to_json`). A length above `protocol.MAX_FRAME_BYTES` is a protocol error and
closes the connection. Used by the hub's socket (`local.py`) and by the direct action links
between a dummy and the real (`local_direct.py`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct

from webphone.errors import GroupProtocolError
from webphone.shared.protocol import MAX_FRAME_BYTES, Frame, decode_frame

__all__ = ["FramedProtocol", "peer_cred", "wire"]

log = logging.getLogger("webphone.shared.local")

_HEADER = struct.Struct(">I")
#: the receive buffer's first size (per connection: a hub holds one per member); a larger
#: frame grows it, up to `MAX_FRAME_BYTES`
_INITIAL_BUFFER = 16 * 1024
#: a buffer grown larger than this (for a large snapshot) is dropped once it is empty
_KEPT_BUFFER = 64 * 1024


def wire(frame: Frame) -> bytes:
    """The bytes of `frame` on the wire (length + JSON), computed once per frame object."""
    values = frame.__dict__
    cached: bytes | None = values.get("_wire")
    if cached is None:
        data = values.get("_json") or frame.to_json()  # to_json(), without a call when cached
        cached = _HEADER.pack(len(data)) + data
        values["_wire"] = cached  # a frozen dataclass: cached like Frame.to_json does
    return cached


def peer_cred(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the other end of a Unix socket."""
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", data)
    return pid, uid, gid


class FramedProtocol(asyncio.BufferedProtocol):
    """Length-prefixed frames over a stream; subclasses handle `frame_bytes` and `lost`.

    A buffered protocol: the kernel copies into one receive buffer kept for the connection's
    life (`get_buffer`), where frames are cut out. With `asyncio.Protocol` every read allocated
    a fresh 256 KiB bytes object (`max_size`), which glibc maps and unmaps per read (mmap +
    mremap + munmap for each frame of a round trip: `strace -c` on an action round trip)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray(_INITIAL_BUFFER)
        self._start = 0  # the first byte not yet cut into a frame
        self._end = 0  # the end of the bytes received
        self._done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        """Room for the next read: after what is buffered, moved to the front or in a larger
        buffer when the end is reached (a frame is at most `MAX_FRAME_BYTES` + 4 bytes)."""
        if self._end == len(self._buf):
            kept = self._end - self._start
            if kept * 2 > len(self._buf):  # a large frame in progress: grow
                grown = bytearray(max(2 * len(self._buf), _INITIAL_BUFFER))
                grown[:kept] = self._buf[self._start:self._end]
                self._buf = grown
            else:
                self._buf[:kept] = self._buf[self._start:self._end]
            self._start, self._end = 0, kept
        return memoryview(self._buf)[self._end:]

    def buffer_updated(self, nbytes: int) -> None:
        """`nbytes` arrived in the buffer `get_buffer` gave: hand on every complete frame."""
        end = self._end + nbytes
        buf = self._buf
        if (self._start == 0 and end >= 4 and _HEADER.unpack_from(buf)[0] == end - 4
                and len(buf) <= _KEPT_BUFFER and not self._done):
            # exactly one whole frame (the common case; below MAX_FRAME_BYTES, as the buffer
            # is): handed on, and the next read starts at the front
            self._end = 0
            self.frame_bytes(bytes(buf[4:end]))
            return
        self._end = end
        pos, end = self._start, self._end
        while not self._done and end - pos >= 4:
            (length,) = _HEADER.unpack_from(buf, pos)
            if length > MAX_FRAME_BYTES:
                self.protocol_error(f"frame of {length} bytes, more than {MAX_FRAME_BYTES}")
                return
            stop = pos + 4 + length
            if stop > end:
                break
            payload = bytes(buf[pos + 4:stop])
            pos = self._start = stop
            self.frame_bytes(payload)
            buf = self._buf  # frame_bytes may have closed the connection, never regrown it
        if pos == self._end:
            self._start = self._end = 0  # all consumed: the next read starts at the front
            if len(self._buf) > _KEPT_BUFFER:
                self._buf = bytearray(_INITIAL_BUFFER)  # a large frame passed: not kept for life

    def data_received(self, data: bytes) -> None:
        """`data` arrived (bytes from elsewhere than the transport's reads: tests, relays)."""
        view = memoryview(data)
        while view and not self._done:
            room = self.get_buffer(len(view))
            n = min(len(room), len(view))
            room[:n] = view[:n]
            self.buffer_updated(n)
            view = view[n:]

    def write_frame(self, data: bytes) -> None:
        """Queue one encoded frame (never blocks)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_HEADER.pack(len(data)) + data)

    def send(self, *frames: Frame) -> bool:
        """Queue frames with one write; a frame's wire bytes (length + JSON) are computed once
        per frame object (a snapshot fanned out to N members is encoded once). False when they
        cannot reach the peer: the connection had failed (a write to a dead peer fails at once
        with EPIPE and closes the transport) or was closing."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        transport.write(wire(frames[0]) if len(frames) == 1
                        else b"".join([wire(frame) for frame in frames]))
        return not transport.is_closing()

    def buffered(self) -> int:
        """Bytes written and not yet taken by the kernel."""
        return self.transport.get_write_buffer_size() if self.transport else 0

    def close(self) -> None:
        """Close after flushing."""
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done:
            self._done = True
            self.lost(f"connection lost: {exc}" if exc else "connection closed")

    def same_user(self) -> bool:
        """True if the peer runs as our uid (SO_PEERCRED); else abort the connection: only
        this user may reach a group's sockets (invariant 5)."""
        assert self.transport is not None
        try:
            _, uid, _ = peer_cred(self.transport.get_extra_info("socket"))
        except OSError:
            uid = -1
        if uid == os.geteuid():
            return True
        log.warning("refusing a connection from uid %d", uid)
        self._done = True
        self.transport.abort()
        return False

    def decoded(self, data: bytes, where: str) -> Frame | None:
        """`data` as a frame; None (and the connection closed) if it is malformed."""
        try:
            return decode_frame(data)
        except GroupProtocolError as exc:
            self.protocol_error(f"malformed frame {where}: {exc}")
            return None

    def protocol_error(self, reason: str) -> None:
        """Stop reading and close; the peer sent something that is not a frame."""
        log.warning("closing connection: %s", reason)
        self._done = True
        if self.transport is not None:
            self.transport.abort()
        self.lost(reason)

    def frame_bytes(self, data: bytes) -> None:
        raise NotImplementedError

    def lost(self, reason: str) -> None:
        raise NotImplementedError


