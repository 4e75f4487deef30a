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


def wire(frame: Frame) -> bytes:
    """The bytes of `frame` on the wire (length + JSON), computed once per frame object."""
    cached: bytes | None = frame.__dict__.get("_wire")
    if cached is None:
        data = frame.to_json()
        cached = _HEADER.pack(len(data)) + data
        frame.__dict__["_wire"] = cached  # a frozen dataclass: cached like Frame.to_json does
    return cached


def peer_cred(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the other end of a Unix socket."""
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", data)
    return pid, uid, gid


class FramedProtocol(asyncio.Protocol):
    """Length-prefixed frames over a stream; subclasses handle `frame_bytes` and `lost`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        size = len(buf)
        while not self._done and size - pos >= 4:
            (length,) = _HEADER.unpack_from(buf, pos)
            if length > MAX_FRAME_BYTES:
                self.protocol_error(f"frame of {length} bytes, more than {MAX_FRAME_BYTES}")
                return
            end = pos + 4 + length
            if end > size:
                break
            payload = bytes(buf[pos + 4:end])
            pos = end
            self.frame_bytes(payload)
        if pos:
            del buf[:pos]

    def write_frame(self, data: bytes) -> None:
        """Queue one encoded frame (never blocks)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_HEADER.pack(len(data)) + data)

    def send(self, *frames: Frame) -> bool:
        """Queue frames with one write; a frame's wire bytes (length + JSON) are computed once
        per frame object (a snapshot fanned out to N members is encoded once). False when they
        cannot reach the peer: the connection had failed (a write to a dead peer fails at once
        with EPIPE and closes the transport) or was closing."""
        if self.transport is None or self.transport.is_closing():
            return False
        wires = [wire(frame) for frame in frames]
        self.transport.write(wires[0] if len(wires) == 1 else b"".join(wires))
        return not self.transport.is_closing()

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


