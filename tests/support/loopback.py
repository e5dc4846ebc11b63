"""Loopback helpers for tests: listeners we own, and ground truth from the kernel's tables."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from pathlib import Path


def listening_ports(address: str = "127.0.0.1") -> set[int]:
    """TCP ports the kernel would accept a connection on at `address` (from /proc/net/tcp*).

    The independent oracle for loopback scans: any listener on the machine counts, ours or not.
    """
    v6 = ":" in address
    want_local = {
        "00000000000000000000000000000000",  # ::, dual-stack unless IPV6_V6ONLY
        "00000000",
        "0100007F" if not v6 else "00000000000000000000000001000000",
    }
    ports: set[int] = set()
    files = ["/proc/net/tcp6"] if v6 else ["/proc/net/tcp", "/proc/net/tcp6"]
    for name in files:
        for line in Path(name).read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state != "0A":  # LISTEN
                continue
            host, port_hex = local.split(":")
            if host in want_local or (not v6 and host == "0000000000000000FFFF00000100007F"):
                ports.add(int(port_hex, 16))
    return ports


def exact_against_listeners(found: set[int], before: set[int], after: set[int]) -> list[str]:
    """How a full loopback scan differs from the kernel's listeners read before and after it.

    Other processes on the machine open and close listeners while a scan runs; a port that
    listened the whole time must be found, one that never listened must not, and one that
    changed during the scan may go either way. Empty when the scan is exact.
    """
    problems = []
    if missed := (before & after) - found:
        problems.append(f"listening throughout, not found: {sorted(missed)}")
    if invented := found - (before | after):
        problems.append(f"found open, never listening: {sorted(invented)}")
    return problems


class Listeners:
    """Listening sockets on loopback, closed at teardown."""

    def __init__(self) -> None:
        self._socks: list[socket.socket] = []

    def open(self, address: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on `address` (port 0: any free port); return the port."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(512)
        self._socks.append(sock)
        return int(sock.getsockname()[1])

    def wait_connection(self, port: int, timeout: float = 20.0) -> bool:
        """Block until a connection to our listener on `port` is waiting to be accepted."""
        sock = next(s for s in self._socks if s.getsockname()[1] == port)
        readable, _, _ = select.select([sock], [], [], timeout)
        return bool(readable)

    def close_port(self, address: str, port: int) -> None:
        """Close the listener on (`address`, `port`): connections to it are refused from now."""
        for sock in list(self._socks):
            if sock.getsockname()[:2] == (address, port):
                sock.close()
                self._socks.remove(sock)
                return
        raise KeyError(f"no listener on {address}:{port}")

    def close(self) -> None:
        """Close every listener."""
        for sock in self._socks:
            sock.close()
        self._socks.clear()

    def __iter__(self) -> Iterator[int]:
        return iter(int(s.getsockname()[1]) for s in self._socks)


def open_fds() -> int:
    """Descriptors this process has open now."""
    return len(list(Path("/proc/self/fd").iterdir()))
