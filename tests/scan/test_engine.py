"""The scan engine on loopback: exact results against the kernel's own listener table."""

from __future__ import annotations

import _socket
import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from exposuremon.scan import PortState, ScanError, Scanner, ScanOptions
from exposuremon.scan import target as target_module
from exposuremon.scan.engine import socket_budget
from tests.support.loopback import (
    Listeners,
    exact_against_listeners,
    listening_ports,
    open_fds,
)


@pytest.fixture
def listeners() -> Iterator[Listeners]:
    """Listening sockets on loopback, closed after the test."""
    ls = Listeners()
    yield ls
    ls.close()


async def test_full_range_matches_kernel_listeners(listeners: Listeners) -> None:
    """A 1-65535 scan of 127.0.0.1 reports exactly the ports the kernel listens on."""
    mine = {listeners.open() for _ in range(5)}
    before = listening_ports("127.0.0.1")
    scanner = Scanner()
    try:
        result = await scanner.scan("127.0.0.1", range(1, 65536))
    finally:
        scanner.close()
    after = listening_ports("127.0.0.1")
    assert mine <= before & after
    assert result.complete
    assert exact_against_listeners(set(result.open), before, after) == []
    assert result.counts == {
        "open": len(result.open),
        "closed": 65535 - len(result.open),
        "filtered": 0,
        "unknown": 0,
    }
    assert result.stats.answered >= 65535
    assert result.state(next(iter(mine))) is PortState.OPEN


async def test_ipv6_loopback(listeners: Listeners) -> None:
    """IPv6 works: ::1 scans find a listener bound to ::1 and report the v6 address."""
    port = listeners.open("::1")
    scanner = Scanner()
    try:
        result = await scanner.scan("::1", range(port - 200, port + 200))
    finally:
        scanner.close()
    assert result.address == "::1"
    assert port in result.open
    assert set(result.open) == listening_ports("::1") & set(range(port - 200, port + 200))


async def test_a_small_scan_keeps_a_small_table(listeners: Listeners) -> None:
    """A scan's result holds one byte per port up to the highest scanned, not 64 KiB; the
    ports past it read as unknown, the scanned ones as what they are."""
    port = listeners.open("127.0.0.9")
    scanner = Scanner()
    try:
        result = await scanner.scan("127.0.0.9", [port, port - 1])
    finally:
        scanner.close()
    assert len(result.table) == port + 1
    assert result.state(port) is PortState.OPEN
    assert result.state(port - 1) is (
        PortState.OPEN if port - 1 in listening_ports("127.0.0.9") else PortState.CLOSED
    )
    assert result.state(port + 1) is PortState.UNKNOWN  # past the table: not scanned
    assert result.counts["unknown"] == 0


async def test_hostname_resolved_at_scan_time(listeners: Listeners) -> None:
    """A hostname is resolved when the scan runs and the scanned address is reported."""
    port = listeners.open("127.0.0.1")
    scanner = Scanner()
    try:
        result = await scanner.scan("localhost", [port])
    finally:
        scanner.close()
    assert result.target == "localhost"
    assert result.address in {"127.0.0.1", "::1"}
    if result.address == "127.0.0.1":
        assert result.open == (port,)


async def test_unresolvable_host_is_a_scan_error() -> None:
    """An unresolvable name raises ScanError naming the host, and leaves no socket."""
    scanner = Scanner()
    try:
        with pytest.raises(ScanError, match=r"no-such-host\.invalid"):
            await scanner.scan("no-such-host.invalid", [80])
    finally:
        scanner.close()


async def test_stop_reports_unfinished_ports_as_unknown(listeners: Listeners) -> None:
    """Stopping closes every socket; finished ports keep their states, the rest are unknown."""
    port = listeners.open()
    before = open_fds()
    scanner = Scanner()
    running = scanner.start("127.0.0.1", range(1, 65536), ScanOptions(rate=2000), hints=[port])
    await _until(lambda: running.done >= 50)
    running.stop()
    result = await running.wait()
    assert not result.complete
    counts = result.counts
    assert counts["unknown"] > 0
    assert counts["open"] + counts["closed"] + counts["filtered"] == running.done
    assert result.state(port) is PortState.OPEN  # the hint went first and finished
    scanner.close()
    assert open_fds() <= before


async def test_cancelling_the_caller_closes_every_socket() -> None:
    """Cancelling the task that awaits Scanner.scan leaves no probe socket open."""
    before = open_fds()
    scanner = Scanner()
    task = asyncio.ensure_future(scanner.scan("127.0.0.1", range(1, 65536), ScanOptions(rate=500)))
    await _until(lambda: scanner.in_flight > 0 or task.done())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert scanner.in_flight == 0
    scanner.close()
    assert open_fds() <= before


async def test_rate_limit_is_respected() -> None:
    """With rate=N the engine opens no more than about N connections per second."""
    scanner = Scanner()
    try:
        result = await scanner.scan("127.0.0.1", range(20000, 20300), ScanOptions(rate=1000))
    finally:
        scanner.close()
    # 300 connects at 1000/s with a burst of at most rate/10 cannot finish sooner than this.
    assert result.duration >= (300 - 100) / 1000
    assert result.complete


async def test_small_scan_not_starved_by_big_one(listeners: Listeners) -> None:
    """Under a tiny global budget, a small scan started later finishes long before a big one."""
    port = listeners.open("127.0.0.2")
    scanner = Scanner(max_sockets=16)
    try:
        big = scanner.start("127.0.0.1", range(1, 65536))
        await _until(lambda: big.done > 1000)
        small = await scanner.scan("127.0.0.2", range(port - 30, port + 30))
        big_done_then = big.done
        assert scanner.in_flight <= 16
        big.stop()
    finally:
        scanner.close()
    assert small.complete
    assert big_done_then < 65535
    assert port in small.open


async def test_many_targets_share_the_budget(listeners: Listeners) -> None:
    """Twenty concurrent scans under one small budget all complete with exact results."""
    port = listeners.open("127.0.0.1")
    for i in range(2, 21):
        listeners.open(f"127.0.0.{i}", port)
    scanner = Scanner(max_sockets=24)
    ports = range(port - 100, port + 100)
    try:
        results = await asyncio.gather(*(scanner.scan(f"127.0.0.{i}", ports) for i in range(1, 21)))
    finally:
        scanner.close()
    for result in results:
        assert result.complete
        assert port in result.open
        assert set(result.open) <= listening_ports("127.0.0.1") | {port}


def test_socket_budget_keeps_a_reserve() -> None:
    """The global budget leaves descriptors for the rest of the process."""
    assert socket_budget(256) == 208
    assert socket_budget(20000) == 20000 - 256
    assert socket_budget(16) == 8


_LOW_NOFILE_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, resource, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    from exposuremon.scan import Scanner
    async def main():
        # Ask for far more sockets than the limit allows: EMFILE must shrink the budget.
        scanner = Scanner(max_sockets=int(sys.argv[1]))
        result = await scanner.scan("127.0.0.1", range(1, 65536))
        scanner.close()
        print(json.dumps({"open": list(result.open), "complete": result.complete,
                          "counts": result.counts, "waits": result.stats.resource_waits}))
    asyncio.run(main())
    """
)


@pytest.mark.parametrize("max_sockets", [None, 5000])
def test_scan_completes_under_ulimit_256(listeners: Listeners, max_sockets: int | None) -> None:
    """Under `ulimit -n 256` a full scan completes exactly, even when asked for 5000 sockets."""
    mine = {listeners.open() for _ in range(3)}
    before = listening_ports("127.0.0.1")
    arg = "None" if max_sockets is None else str(max_sockets)
    script = _LOW_NOFILE_SCRIPT.replace("int(sys.argv[1])", arg)
    doc = _run_low_nofile(script)
    assert doc["complete"]
    after = listening_ports("127.0.0.1")
    assert exact_against_listeners(set(doc["open"]), before, after) == []
    assert mine <= set(doc["open"])
    assert doc["counts"]["unknown"] == 0
    if max_sockets == 5000:
        assert doc["waits"] > 0  # it did run out, and recovered


_MANY_SCANS_LOW_NOFILE_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, resource, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    from exposuremon.scan import Scanner
    async def main():
        errors = []
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, ctx: errors.append(repr(ctx.get("exception"))))
        scanner = Scanner(max_sockets=5000)
        scans = [scanner.scan("127.0.0.1", range(2000 + 40 * i, 2040 + 40 * i))
                 for i in range(600)]
        results = await asyncio.wait_for(asyncio.gather(*scans), 60)
        held = scanner.in_flight
        scanner.close()
        print(json.dumps({
            "open": sorted({p for r in results for p in r.open}),
            "complete": sum(r.complete for r in results),
            "unknown": sum(r.counts["unknown"] for r in results),
            "waits": sum(r.stats.resource_waits for r in results),
            "errors": errors, "held": held}))
    asyncio.run(main())
    """
)


def test_many_scans_waiting_for_descriptors_all_complete(listeners: Listeners) -> None:
    """600 scans at once under `ulimit -n 256` all complete exactly, with no error in the loop.

    Before, a launch that failed with EMFILE handed its slot straight to the next waiting scan,
    whose launch failed too: one scan deeper each time, a RecursionError inside the engine, and
    scans that never finished.
    """
    scanned = range(2000, 26_000)
    mine = {_listen_in(listeners, scanned, start) for start in (2000, 13_000, 25_900)}
    before = listening_ports("127.0.0.1")
    doc = _run_low_nofile(_MANY_SCANS_LOW_NOFILE_SCRIPT)
    assert doc["errors"] == []
    assert doc["complete"] == 600
    assert doc["unknown"] == 0
    assert doc["waits"] > 0  # it did run out of descriptors, and recovered
    assert doc["held"] == 0  # every slot came back: spares and probes alike
    after = listening_ports("127.0.0.1")
    assert mine <= set(doc["open"])
    in_range = [{p for p in ports if p in scanned} for ports in (before, after)]
    assert exact_against_listeners(set(doc["open"]), *in_range) == []


async def test_sockets_held_never_exceed_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spare sockets count against the budget: 200 scans through 50 slots never hold 51.

    Before, a finished probe's slot was handed on while its socket was still kept as a spare,
    so a busy scanner held more descriptors than its budget (the 10,000-target daemon then
    ran out of descriptors).
    """
    live = 0
    most = 0

    class CountedSocket(_socket.socket):
        """The engine's C socket type, counting how many are open at once."""

        def __init__(self, *args: Any) -> None:
            nonlocal live, most
            super().__init__(*args)
            live += 1
            most = max(most, live)

        def close(self) -> None:
            nonlocal live
            if self.fileno() != -1:
                live -= 1
            super().close()

    monkeypatch.setattr(target_module, "_socket", types.SimpleNamespace(socket=CountedSocket))
    scanner = Scanner(max_sockets=50)
    try:
        scans = [scanner.scan("127.0.0.1", range(3000 + 30 * i, 3030 + 30 * i)) for i in range(200)]
        results = await asyncio.wait_for(asyncio.gather(*scans), 60)
    finally:
        scanner.close()
    assert all(r.complete for r in results)
    assert 0 < most <= 50
    assert live == 0


def _run_low_nofile(script: str) -> dict[str, Any]:
    """Run a script that lowers its own descriptor limit; what it printed, as JSON."""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def _listen_in(listeners: Listeners, ports: range, start: int) -> int:
    """Listen on the first free port of `ports` from `start` on (other tests hold some)."""
    for port in range(start, ports.stop):
        try:
            return listeners.open(port=port)
        except OSError:
            continue
    raise AssertionError(f"no free port in {start}..{ports.stop - 1}")


async def _until(predicate: Callable[[], bool], deadline: float = 20.0) -> None:
    """Wait for a condition with a deadline (no sleeps standing in for synchronisation)."""
    async with asyncio.timeout(deadline):
        # The engine exposes counters, not events: poll them, bounded by the deadline.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def test_accepted_then_reset_is_open() -> None:
    """A service that accepts and resets at once is open, not filtered, however the race goes."""

    async def reset_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(reset_at_once, "127.0.0.5", 0)
    port = server.sockets[0].getsockname()[1]
    scanner = Scanner()
    try:
        for _ in range(20):
            result = await scanner.scan("127.0.0.5", [port])
            assert result.state(port) is PortState.OPEN
    finally:
        scanner.close()
        server.close()
        await server.wait_closed()
