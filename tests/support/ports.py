"""Free loopback ports.

Every helper binds on 127.0.0.1 only. Choosing a port and then handing it to another process is
inherently racy (someone may take it in between); to make collisions inside one test session
unlikely, a port handed out once is never handed out again by this process. Callers that start a
server should still retry on a bind failure (see `procs.ManagedProcess` users).
"""

from __future__ import annotations

import random
import socket
import threading

HOST = "127.0.0.1"

_lock = threading.Lock()
_handed_out: set[int] = set()


def _bindable(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def _ephemeral(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _pick(kinds: tuple[int, ...], attempts: int = 200) -> int:
    with _lock:
        for _ in range(attempts):
            port = _ephemeral(kinds[0])
            if port in _handed_out:
                continue
            if all(_bindable(port, k) for k in kinds[1:]):
                _handed_out.add(port)
                return port
    raise RuntimeError(f"no free loopback port found in {attempts} attempts")


def free_tcp_port() -> int:
    """A TCP port free on 127.0.0.1."""
    return _pick((socket.SOCK_STREAM,))


def free_udp_port() -> int:
    """A UDP port free on 127.0.0.1."""
    return _pick((socket.SOCK_DGRAM,))


def free_port() -> int:
    """Alias of `free_tcp_port` (the common case: a server's listening port)."""
    return free_tcp_port()


def free_sip_port() -> int:
    """A port free for BOTH TCP and UDP on 127.0.0.1 (Kamailio listens on udp+tcp SIP_PORT)."""
    return _pick((socket.SOCK_STREAM, socket.SOCK_DGRAM))


def free_sip_port_pair(attempts: int = 200) -> int:
    """A SIP port free for TCP and UDP whose next port is free for TCP too: baresip 1.0 also
    listens for SIP/TLS on sip_port + 1, and fails to start when that one is taken."""
    with _lock:
        for _ in range(attempts):
            port = _ephemeral(socket.SOCK_STREAM)
            if port in _handed_out or port + 1 in _handed_out or port + 1 > 65535:
                continue
            if _bindable(port, socket.SOCK_DGRAM) and _bindable(port + 1, socket.SOCK_STREAM):
                _handed_out.update((port, port + 1))
                return port
    raise RuntimeError(f"no free SIP port pair found in {attempts} attempts")


def free_udp_range(count: int, low: int = 20000, high: int = 32000, attempts: int = 200) -> int:
    """First port of `count` consecutive UDP ports, all free now on 127.0.0.1 (RTP ranges).

    Ranges are taken from [low, high), below the kernel's default ephemeral range (32768-60999)
    so that `free_tcp_port()`/`free_udp_port()` (ephemeral picks) and outgoing connections do not
    land inside them. Returns the first port; the range is `first .. first + count - 1`.
    """
    if count < 1:
        raise ValueError("count must be >= 1")
    with _lock:
        for _ in range(attempts):
            first = random.randrange(low, high - count)
            ports = range(first, first + count)
            if any(p in _handed_out for p in ports):
                continue
            if all(_bindable(p, socket.SOCK_DGRAM) for p in ports):
                _handed_out.update(ports)
                return first
    raise RuntimeError(f"no {count} consecutive free UDP ports found in {attempts} attempts")
