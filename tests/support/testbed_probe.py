"""Small connect probes for tests of (and with) the test bed; they refuse foreign addresses.

A test bed must never send a packet to the outside world, so every helper here checks its target
against the only ranges tests may use: loopback and the 198.18.0.0/15 benchmark range in which
tests/support/testbed.py builds its routers.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import selectors
import socket
import struct
import time
from collections.abc import Callable, Sequence

ALLOWED = [ipaddress.ip_network(n) for n in ("127.0.0.0/8", "::1/128", "198.18.0.0/15")]

LINGER0 = struct.pack("ii", 1, 0)
STATE_BY_ERRNO = {
    0: "open",
    errno.ECONNREFUSED: "closed",
    errno.ETIMEDOUT: "filtered",
    errno.EHOSTUNREACH: "unreachable",
    errno.ENETUNREACH: "unreachable",
}


def check_target(addr: str) -> None:
    """Raise unless `addr` is loopback or inside 198.18.0.0/15."""
    ip = ipaddress.ip_address(addr)
    if not any(ip in net for net in ALLOWED):
        raise ValueError(f"test bed refuses to probe {addr}: not loopback or 198.18.0.0/15")


def probe_many(addr: str, ports: Sequence[int], timeout: float = 0.3) -> list[str]:
    """Connect to all `ports` at once (repeats allowed) and wait at most `timeout`.

    Returns one state per entry, in order: "open" (handshake done), "closed" (RST),
    "filtered" (no answer in time) or "unreachable" (ICMP / no route).
    """
    check_target(addr)
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    states = ["filtered"] * len(ports)
    sockets: list[socket.socket] = []
    selector = selectors.DefaultSelector()
    try:
        for index, port in enumerate(ports):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setblocking(False)
            err = sock.connect_ex((addr, port))
            if err == errno.EINPROGRESS:
                selector.register(sock, selectors.EVENT_WRITE, index)
            else:
                states[index] = _state(err, addr, port)
        deadline = time.monotonic() + timeout
        # Each turn either settles at least one socket or ends at the deadline.
        for _ in range(len(ports) + 1):
            remaining = deadline - time.monotonic()
            if not selector.get_map() or remaining <= 0:
                break
            for key, _events in selector.select(remaining):
                sock = key.fileobj  # type: ignore[assignment]
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                states[key.data] = _state(err, addr, ports[key.data])
                selector.unregister(sock)
    finally:
        selector.close()
        for sock, state in zip(sockets, states, strict=False):
            if state == "open":
                # An RST instead of FIN: no TIME_WAIT left on either side.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
            sock.close()
    return states


def _state(err: int, addr: str, port: int) -> str:
    if err in STATE_BY_ERRNO:
        return STATE_BY_ERRNO[err]
    raise OSError(err, f"connect to {addr}:{port}: {errno.errorcode.get(err, err)}")


def ping(addr: str, timeout: float = 0.5) -> bool:
    """One ICMP echo to an IPv4 address; True if the reply came back within `timeout`.

    Uses an unprivileged ping socket where net.ipv4.ping_group_range allows it, else a raw
    socket (root): this host ships with ping_group_range "1 0", which allows nobody.
    """
    check_target(addr)
    ident = os.getpid() & 0xFFFF
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
        raw = False
    except PermissionError:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        raw = True
    with sock:
        header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
        checksum = _inet_checksum(header + b"emtb")
        sock.sendto(struct.pack("!BBHHH", 8, 0, checksum, ident, 1) + b"emtb", (addr, 0))
        deadline = time.monotonic() + timeout
        # A raw socket sees every ICMP packet of the host: skip what is not our reply.
        for _ in range(100):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            sock.settimeout(remaining)
            try:
                data, (source, _port) = sock.recvfrom(2048)
            except TimeoutError:
                return False
            icmp = data[(data[0] & 0x0F) * 4 :] if raw else data
            if source != addr or len(icmp) < 8 or icmp[0] != 0:
                continue
            if not raw or struct.unpack("!H", icmp[4:6])[0] == ident:
                return True
    return False


def _inet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def tcp_state(addr: str, port: int, timeout: float = 0.3) -> str:
    """One connect: "open", "closed", "filtered" or "unreachable" (see probe_many)."""
    return probe_many(addr, [port], timeout)[0]


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll `condition` until true or `timeout` passes; bounded in time and iterations."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        if condition():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    return condition()
