"""Throughput check of the test bed: a bare epoll connect scan through a Router's paths.

Run as root: `python -m tests.support.testbed_bench --rtt 0.04 --ports 65535`. Prints connects/s,
the
relay's packet counters and CPU seconds. The scanner here is deliberately minimal (no retries,
no adaptive timeout) so that it measures the test bed, not exposuremon's engine.
"""

from __future__ import annotations

import argparse
import collections
import errno
import json
import resource
import select
import socket
import struct
import time
from collections.abc import Sequence
from typing import Any

from tests.support.testbed import make_router

LINGER0 = struct.pack("ii", 1, 0)
STATES = {0: "open", errno.ECONNREFUSED: "closed", errno.EHOSTUNREACH: "unreachable"}


def connect_scan(
    addr: str, ports: Sequence[int], concurrency: int, timeout: float, deadline: float = 600.0
) -> dict[str, Any]:
    """Connect to every port with at most `concurrency` in flight; bounded by `deadline`."""
    epoll = select.epoll()
    pending: dict[int, tuple[socket.socket, int, float]] = {}  # fd -> socket, attempt, start
    answer_times: list[float] = []
    expiry: collections.deque[tuple[float, int, int]] = collections.deque()
    results = {"open": 0, "closed": 0, "filtered": 0, "unreachable": 0, "error": 0}
    todo = iter(ports)
    attempt = 0
    exhausted = False
    start = time.monotonic()
    stop = start + deadline

    def finish(fd: int, state: str) -> None:
        sock, _attempt, started = pending.pop(fd)
        epoll.unregister(fd)
        if state != "filtered":
            answer_times.append(time.monotonic() - started)
        if state == "open":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
        sock.close()
        results[state] += 1

    while (pending or not exhausted) and time.monotonic() < stop:
        while not exhausted and len(pending) < concurrency:
            port = next(todo, None)
            if port is None:
                exhausted = True
                break
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            started = time.monotonic()
            err = sock.connect_ex((addr, port))
            if err not in (0, errno.EINPROGRESS):
                sock.close()
                results["error"] += 1
                continue
            fd = sock.fileno()
            attempt += 1
            pending[fd] = (sock, attempt, started)
            epoll.register(fd, select.EPOLLOUT)
            expiry.append((time.monotonic() + timeout, fd, attempt))
        for fd, _ in epoll.poll(0.01, 1024):
            err = pending[fd][0].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            finish(fd, STATES.get(err, "error"))
        now = time.monotonic()
        # fds are reused after close: an expiry entry only applies to the attempt it was made for.
        while expiry and expiry[0][0] <= now:
            _, fd, number = expiry.popleft()
            if fd in pending and pending[fd][1] == number:
                finish(fd, "filtered")
    epoll.close()
    elapsed = time.monotonic() - start
    answer_times.sort()
    quantiles = {
        f"rtt_p{q}_ms": round(answer_times[int(q / 100 * (len(answer_times) - 1))] * 1000, 1)
        for q in (0, 50, 99)
        if answer_times
    }
    rate = round(len(ports) / elapsed)
    return {**results, "elapsed": round(elapsed, 3), "rate": rate, **quantiles}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rtt", type=float, default=0.04)
    parser.add_argument("--ports", type=int, default=65535)
    parser.add_argument("--concurrency", type=int, default=2048)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument(
        "--policy",
        choices=("accept", "reject", "prohibit"),
        default="accept",
        help="accept: kernel RST from closed ports; reject: nftables RST; prohibit: ICMP",
    )
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ports = range(1, args.ports + 1)
    with make_router(rtt=args.rtt) as router:
        # No listeners: every port answers with an RST, from the kernel or from nftables.
        router.set_policy(args.policy)
        for label, addr in (("direct", router.addr), ("delayed", router.delayed_addr)):
            assert addr is not None
            before = router.relay_stats() or {}
            result = connect_scan(addr, ports, args.concurrency, args.timeout)
            after = router.relay_stats() or {}
            user, system = (after.get(k, 0) - before.get(k, 0) for k in ("cpu_user", "cpu_sys"))
            pkts = {k: after.get(k, 0) - before.get(k, 0) for k in ("a_to_b", "b_to_a")}
            report = {"path": label, **result, **pkts}
            report.update(relay_cpu_user_s=round(user, 2), relay_cpu_sys_s=round(system, 2))
            report["relay_max_held"] = after.get("max_held")
            report["relay_write_errors"] = after.get("write_errors")
            print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
