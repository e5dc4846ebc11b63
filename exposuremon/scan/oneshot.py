"""A one-shot scan, sharded across worker processes when one core is not enough.

A full 1-65535 scan of a host that answers every port at once is bound by CPU: about 10 µs
of syscalls and 4 µs of Python per probe. One process cannot match nmap there, so the ports
are split across up to one process per core: the parent resolves the target once, forks the
workers *before* any event loop exists (forking a running asyncio loop is unsafe), and each
worker runs its own `Scanner` over an interleaved share of the probe order with its
share of the per-target concurrency and rate, so the target sees the same bounds as from one
process. Workers publish progress in a shared page and send back their state table (one byte
per port) through a pipe; the tables of disjoint shards merge with a bitwise OR.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import mmap
import os
import signal
import struct
from collections.abc import Callable, Sequence

from exposuremon.scan.engine import Scanner
from exposuremon.scan.ports import MOST_COMMON, probe_order
from exposuremon.scan.result import PortState, ScanResult, ScanStats
from exposuremon.scan.target import ScanError, resolve_blocking
from exposuremon.scan.timing import ScanOptions

Progress = Callable[[int, int], None]
SHARD_MIN_PORTS = 8192  # below this a worker's fork costs more than it saves
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def auto_workers(n_ports: int, options: ScanOptions) -> int:
    """Worker processes worth using: one per core for big, CPU-bound scans, else one."""
    if n_ports < SHARD_MIN_PORTS or options.rate is not None:
        return 1  # a rate-limited scan is bound by the rate, not by CPU
    return max(1, min(len(os.sched_getaffinity(0)), 4))


def share_options(options: ScanOptions, workers: int) -> ScanOptions:
    """One worker's share of the per-target bounds, so all together keep the original ones."""
    if workers == 1:
        return options
    return dataclasses.replace(
        options,
        concurrency=max(1, math.ceil(options.concurrency / workers)),
        initial_cwnd=max(1, math.ceil(options.initial_cwnd / workers)),
        rate=None if options.rate is None else options.rate / workers,
        start_rate=None if options.start_rate is None else options.start_rate / workers,
    )


def scan_blocking(
    target: str,
    ports: Sequence[int],
    options: ScanOptions,
    *,
    hints: Sequence[int] = (),
    workers: int | None = None,
    progress: Progress | None = None,
) -> ScanResult:
    """Scan one target to the end (or until SIGINT/SIGTERM: then the result is incomplete)."""
    address = resolve_blocking(target)
    n = workers or auto_workers(len(ports), options)
    order = probe_order(ports, hints, options.shuffle_seed)
    found: list[tuple[bool, ScanStats, bytes] | None] = []
    if n > 1:
        # Probe the hints and most common ports first, in this process, so that every worker
        # starts with the path's RTT and with ports known to answer (for its timing pings).
        # Without that, a worker whose share holds no answering port would wait out the
        # initial timeout on every probe of a host that drops most ports.
        wanted = set(order)
        head = len(dict.fromkeys(p for p in (*hints, *MOST_COMMON) if p in wanted))
        first = _discover(target, address, order[:head], options, hints)
        found.append((first.complete, first.stats, first.table))
        if not first.complete:  # interrupted already
            return _merge(first, [], tuple(ports))
        options, hints = _tuned(options, first, hints)
        order = order[head:]
    shards = [order[i::n] for i in range(n)]
    shared = share_options(options, n)
    counters = mmap.mmap(-1, 8 * n)  # anonymous and shared: survives fork, read by the parent
    children: list[tuple[int, int]] = []  # (pid, read end of its result pipe)
    try:
        for index in range(1, n):
            children.append(
                _fork_worker(index, target, address, shards[index], shared, hints, counters)
            )
        before = len(ports) - len(order)  # finished by the first, in-process look
        shown = None if progress is None else _offset(progress, before, len(ports))
        result = asyncio.run(
            _parent(
                target, address, shards[0], len(order), shared, hints, counters, children, shown
            )
        )
        partials = found + [_collect(pid, fd) for pid, fd in children]
    finally:
        for pid, fd in children:
            # Normally collected already; after an error, no worker may outlive the command.
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                if os.waitpid(pid, os.WNOHANG) == (0, 0):
                    os.kill(pid, signal.SIGTERM)
                    os.waitpid(pid, 0)
            with contextlib.suppress(OSError):
                os.close(fd)
        counters.close()
    return _merge(result, partials, tuple(ports))


def _offset(progress: Progress, before: int, total: int) -> Progress:
    return lambda done, _: progress(before + done, total)


def _discover(
    target: str, address: str, ports: list[int], options: ScanOptions, hints: Sequence[int]
) -> ScanResult:
    async def run() -> ScanResult:
        scanner = Scanner()
        running = scanner.start(target, ports, options, hints, ordered=True, address=address)
        loop = asyncio.get_running_loop()
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, running.stop)
        try:
            return await running.wait()
        finally:
            for sig in _STOP_SIGNALS:
                loop.remove_signal_handler(sig)
            scanner.close()

    return asyncio.run(run())


def _tuned(
    options: ScanOptions, first: ScanResult, hints: Sequence[int]
) -> tuple[ScanOptions, tuple[int, ...]]:
    """Start the workers from what the first ports taught: timeout, and ports that answer."""
    answering = [p for p in first.ports if first.state(p) in (PortState.OPEN, PortState.CLOSED)]
    if first.stats.srtt is not None:
        options = dataclasses.replace(options, timeout_initial=first.stats.timeout)
    return options, tuple(dict.fromkeys((*answering, *hints)))  # known to answer first


def _fork_worker(
    index: int,
    target: str,
    address: str,
    ports: list[int],
    options: ScanOptions,
    hints: Sequence[int],
    counters: mmap.mmap,
) -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        return pid, read_fd
    # Child: scan its shard, send the result, and leave without running the parent's cleanup.
    status = 1
    try:
        os.close(read_fd)
        result = asyncio.run(_worker(index, address, ports, options, hints, counters))
        payload = _encode(result)
        view = memoryview(payload)
        while view:
            view = view[os.write(write_fd, view) :]
        status = 0
    finally:
        os._exit(status)


async def _worker(
    index: int,
    address: str,
    ports: list[int],
    options: ScanOptions,
    hints: Sequence[int],
    counters: mmap.mmap,
) -> ScanResult:
    scanner = Scanner()
    running = scanner.start(address, ports, options, hints=hints, ordered=True)
    loop = asyncio.get_running_loop()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, running.stop)
    waiter = asyncio.ensure_future(running.wait())
    try:
        while not waiter.done():
            struct.pack_into("Q", counters, 8 * index, running.done)
            await asyncio.wait([waiter], timeout=0.05)
        return waiter.result()
    finally:
        scanner.close()


async def _parent(
    target: str,
    address: str,
    ports: list[int],
    total: int,
    options: ScanOptions,
    hints: Sequence[int],
    counters: mmap.mmap,
    children: list[tuple[int, int]],
    progress: Progress | None,
) -> ScanResult:
    scanner = Scanner()
    running = scanner.start(target, ports, options, hints=hints, ordered=True, address=address)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        running.stop()
        for pid, _ in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stop)
    waiter = asyncio.ensure_future(running.wait())
    try:
        while not waiter.done():
            if progress is not None:
                others = sum(struct.unpack_from(f"{len(children)}Q", counters, 8))
                progress(running.done + others, total)
            await asyncio.wait([waiter], timeout=0.1)
        result = waiter.result()
    finally:
        for sig in _STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        scanner.close()
    return result


def _encode(result: ScanResult) -> bytes:
    header = json.dumps(
        {"complete": result.complete, "stats": dataclasses.asdict(result.stats)}
    ).encode()
    return struct.pack("I", len(header)) + header + result.table


def _collect(pid: int, fd: int) -> tuple[bool, ScanStats, bytes] | None:
    """Read a worker's result; None when it died without one."""
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.waitpid(pid, 0)
    data = b"".join(chunks)
    if len(data) < 4:
        return None
    (size,) = struct.unpack_from("I", data)
    head = json.loads(data[4 : 4 + size])
    return head["complete"], ScanStats(**head["stats"]), data[4 + size :]


def _sum_rates(rates: list[float | None]) -> float | None:
    known = [r for r in rates if r is not None]
    return sum(known) if known else None


def _merge(
    first: ScanResult,
    others: list[tuple[bool, ScanStats, bytes] | None],
    ports: tuple[int, ...],
) -> ScanResult:
    # A worker that died without a result leaves its ports UNKNOWN: the scan is incomplete.
    complete = first.complete and all(o is not None and o[0] for o in others)
    table = int.from_bytes(first.table, "little")
    size = max([len(first.table), *(len(o[2]) for o in others if o is not None)])
    stats = [first.stats]
    for other in others:
        if other is not None:
            table |= int.from_bytes(other[2], "little")  # shards are disjoint: OR merges them
            stats.append(other[1])
    merged = ScanStats(
        probes_sent=sum(s.probes_sent for s in stats),
        answered=sum(s.answered for s in stats),
        timeouts=sum(s.timeouts for s in stats),
        retries=sum(s.retries for s in stats),
        loss_events=sum(s.loss_events for s in stats),
        resource_waits=sum(s.resource_waits for s in stats),
        srtt=first.stats.srtt,
        timeout=first.stats.timeout,
        max_cwnd=sum(s.max_cwnd for s in stats),
        # The shards share the target's limit, so their learned rates add up; others[0], when
        # there are others, is the first in-process look, which ran alone before them.
        learned_rate=_sum_rates(
            [first.stats.learned_rate, *(o[1].learned_rate for o in others[1:] if o is not None)]
        ),
        rate_limited=any(s.rate_limited for s in stats),
        drops=sum(s.drops for s in stats),
    )
    return dataclasses.replace(
        first,
        ports=ports,
        complete=complete,
        table=table.to_bytes(size, "little"),
        stats=merged,
    )


__all__ = ["ScanError", "auto_workers", "scan_blocking", "share_options"]
