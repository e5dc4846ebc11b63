"""Latency relay for the test bed: moves packets between two TUN devices, holding each one.

This kernel has no `netem` qdisc, so the test bed makes latency itself: the relay opens two TUN
devices (IFF_TUN | IFF_NO_PI), the parent moves device B into the router's namespace and gives
both an address, and every packet read from one device is written to the other after `delay`
seconds. The delay is constant, so a FIFO deque per direction is enough: the head is always the
next packet due, and poll() sleeps exactly until then.

Protocol on stdin/stdout (line based): after both devices exist the relay prints `ready`; a
`stats` line on stdin is answered with one JSON line; EOF on stdin (the parent died or closed
us) makes the relay print its final stats and exit. It also exits after `--max-lifetime`.

Run: `python tests/support/testbed_relay.py --tun-a A --tun-b B --delay 0.02`
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import fcntl
import json
import math
import os
import resource
import select
import struct
import sys
import time
from typing import Any

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
# One read() returns one packet; MTU stays 1500 and no offloads are negotiated, so this suffices.
READ_SIZE = 2048
# Upper bound on packets read per wakeup, so a flood in one direction cannot starve releases.
READ_BATCH = 256
# Even when idle, wake up now and then to check the lifetime bound.
IDLE_WAKE_MS = 1000


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


class Relay:
    def __init__(self, fd_a: int, fd_b: int, delay: float, coalesce: float = 0.0) -> None:
        self.coalesce = coalesce
        self.fd_a = fd_a
        self.fd_b = fd_b
        self.delay = delay
        # (release time, packet) in arrival order; constant delay keeps them sorted.
        self.a_to_b: collections.deque[tuple[float, bytes]] = collections.deque()
        self.b_to_a: collections.deque[tuple[float, bytes]] = collections.deque()
        self.counts = {"a_to_b": 0, "b_to_a": 0, "write_errors": 0, "max_held": 0}
        self.started = time.monotonic()

    def stats(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            **self.counts,
            "held": len(self.a_to_b) + len(self.b_to_a),
            "uptime": round(time.monotonic() - self.started, 3),
            "cpu_user": usage.ru_utime,
            "cpu_sys": usage.ru_stime,
        }

    def _release(self, queue: collections.deque[tuple[float, bytes]], fd: int, now: float) -> int:
        sent = 0
        write = os.write
        while queue and queue[0][0] <= now:
            packet = queue.popleft()[1]
            try:
                write(fd, packet)
                sent += 1
            except OSError:
                # A device that is down (reboot simulation) or a full queue is a lossy link.
                self.counts["write_errors"] += 1
        return sent

    def _read(self, fd: int, queue: collections.deque[tuple[float, bytes]], now: float) -> None:
        release = now + self.delay
        read = os.read
        append = queue.append
        for _ in range(READ_BATCH):
            try:
                append((release, read(fd, READ_SIZE)))
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EBADFD):
                    break
                raise
        held = len(queue)
        if held > self.counts["max_held"]:
            self.counts["max_held"] = held

    def run(self, max_lifetime: float) -> None:
        poller = select.poll()
        poller.register(self.fd_a, select.POLLIN)
        poller.register(self.fd_b, select.POLLIN)
        poller.register(0, select.POLLIN)
        stdin_buf = b""
        end = self.started + max_lifetime
        monotonic = time.monotonic
        while True:
            now = monotonic()
            if now >= end:
                return
            self.counts["a_to_b"] += self._release(self.a_to_b, self.fd_b, now)
            self.counts["b_to_a"] += self._release(self.b_to_a, self.fd_a, now)
            due = min(
                self.a_to_b[0][0] if self.a_to_b else math.inf,
                self.b_to_a[0][0] if self.b_to_a else math.inf,
            )
            # ceil: waking early only costs a loop turn, waking late adds latency, so round up.
            timeout = IDLE_WAKE_MS if due == math.inf else max(0, math.ceil((due - now) * 1000))
            events = poller.poll(min(timeout, IDLE_WAKE_MS))
            now = monotonic()
            if self.coalesce and events:
                # Let more packets queue up in the kernel so one wakeup moves a batch: far
                # fewer loop turns per packet, at the cost of up to `coalesce` extra delay
                # (never less than `delay`, as packets are stamped when read). Releases due
                # meanwhile are not held back.
                time.sleep(max(0.0, min(self.coalesce, due - now)))
                now = monotonic()
            for fd, _mask in events:
                if fd == self.fd_a:
                    self._read(self.fd_a, self.a_to_b, now)
                elif fd == self.fd_b:
                    self._read(self.fd_b, self.b_to_a, now)
                else:
                    chunk = os.read(0, 4096)
                    if not chunk:
                        return
                    stdin_buf += chunk
                    while b"\n" in stdin_buf:
                        line, stdin_buf = stdin_buf.split(b"\n", 1)
                        if line.strip() == b"stats":
                            emit(self.stats())


def emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tun-a", required=True)
    parser.add_argument("--tun-b", required=True)
    parser.add_argument("--delay", type=float, required=True, help="one-way delay in seconds")
    parser.add_argument("--coalesce", type=float, default=0.0, help="batching wait, seconds")
    parser.add_argument("--max-lifetime", type=float, default=6 * 3600.0)
    args = parser.parse_args(argv)
    fd_a = open_tun(args.tun_a)
    fd_b = open_tun(args.tun_b)
    relay = Relay(fd_a, fd_b, args.delay, args.coalesce)
    print("ready", flush=True)
    try:
        relay.run(args.max_lifetime)
    except KeyboardInterrupt:
        pass
    finally:
        with contextlib.suppress(OSError):  # parent already gone: nobody to tell
            emit({"final": True, **relay.stats()})
        os.close(fd_a)
        os.close(fd_b)
    return 0


if __name__ == "__main__":
    sys.exit(main())
