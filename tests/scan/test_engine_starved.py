"""The engine under a starved event loop (issue 13): answers are never lost to a timer that
ran late, and never attributed to another port or attempt when sockets are reused."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from exposuremon.scan.engine import Scanner
from exposuremon.scan.result import PortState
from exposuremon.scan.target import TargetScan
from exposuremon.scan.timing import ScanOptions

HOST = "127.0.0.9"
LIMIT = 10.0  # seconds any wait in these tests may take before it fails


@pytest.fixture
def full_listener() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A listener (backlog 0) whose accept queue one unaccepted connection fills: it drops SYNs."""
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(0)
    listener.setblocking(False)
    blocker = socket.create_connection(listener.getsockname(), timeout=LIMIT)
    try:
        yield listener, blocker
    finally:
        blocker.close()
        listener.close()


async def launched(scan: TargetScan, probes: int) -> float:
    """Wait until the scan has sent `probes` probes; the monotonic time just after."""
    deadline = time.monotonic() + LIMIT
    while scan.probes_sent < probes:
        assert time.monotonic() < deadline, "probes not launched"
        await asyncio.sleep(0)
    return time.monotonic()


def accept_within(listener: socket.socket, limit: float) -> socket.socket:
    """Accept one connection, spinning (the loop is meant to be starved) until `limit` s."""
    deadline = time.monotonic() + limit
    while True:
        with contextlib.suppress(BlockingIOError):
            conn, _ = listener.accept()
            return conn
        assert time.monotonic() < deadline, "no connection to accept"


async def test_answer_while_the_loop_is_starved_is_open(
    full_listener: tuple[socket.socket, socket.socket],
) -> None:
    """A probe answered late, while the loop was starved past its deadline, counts as open.

    The listener drops the SYN (full queue). A callback hogs the loop past the probe's
    deadline; a second one, run in the same loop turn just before the timeout timer, frees
    the queue and spins until the kernel's SYN retransmission is answered. The timer then
    finds the answer waiting: judged against when the loop could look, it is open. (Without
    draining answers first, this probe was closed as a timeout and reported filtered.)
    """
    listener, blocker = full_listener
    port = listener.getsockname()[1]
    loop = asyncio.get_running_loop()
    scanner = Scanner(max_sockets=32)
    opts = ScanOptions(timeout_initial=0.5, timeout_min=0.5, timeout_max=0.5, retries=0)
    accepted: list[socket.socket] = []
    try:
        scan = scanner.start(HOST, [port], opts)
        sent = await launched(scan, 1)

        def hog() -> None:  # a long callback: the loop looks at nothing meanwhile
            while time.monotonic() < sent + 0.7:
                pass

        def free_queue_then_wait_for_the_answer() -> None:
            accepted.append(accept_within(listener, LIMIT))  # the blocker: room for one
            accepted.append(accept_within(listener, LIMIT))  # the probe, via SYN retransmit

        loop.call_soon(hog)
        # Falls due during `hog`, before the probe's deadline (0.5 s after it was sent): in
        # the turn after `hog` it runs just before the timeout timer, with nothing between.
        loop.call_at(loop.time() + 0.3, free_queue_then_wait_for_the_answer)
        result = await asyncio.wait_for(scan.wait(), LIMIT)
    finally:
        scanner.close()
        for conn in accepted:
            conn.close()
    assert len(accepted) == 2
    assert result.state(port) is PortState.OPEN
    assert result.stats.timeouts == 0
    assert blocker.fileno() >= 0


async def test_answers_once_then_silent_never_misattributed() -> None:
    """With reused sockets and a hogged loop, each port keeps its own outcome across scans.

    One listener answers once and then drops every SYN (backlog 0, never accepted); around
    it, closed ports refuse at once, so their sockets are reused for the next ports. The
    first scan sees it open, the second filtered; every closed port is closed in both.
    """
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    closed = [p for p in range(40000, 40200) if p != port]
    loop = asyncio.get_running_loop()
    scanner = Scanner(max_sockets=16)
    opts = ScanOptions(
        timeout_initial=0.2, timeout_min=0.2, timeout_max=0.2, retries=1, initial_cwnd=4
    )
    results = []
    try:
        for _ in range(2):
            scan = scanner.start(HOST, [port, *closed], opts, ordered=True)
            sent = await launched(scan, 1)

            def hog(until: float = sent + 0.5) -> None:
                while time.monotonic() < until:
                    pass

            loop.call_soon(hog)
            results.append(await asyncio.wait_for(scan.wait(), LIMIT))
    finally:
        scanner.close()
        listener.close()
    first, second = results
    assert first.state(port) is PortState.OPEN
    assert second.state(port) is PortState.FILTERED
    for result in results:
        assert result.complete
        assert set(result.ports_in(PortState.CLOSED)) == set(closed)
        assert result.evidence is not None
        assert set(result.evidence.sent) == {port, *closed}
    assert second.evidence is not None
    # The silent port's silence overlapped answers (the refusals) of the same scan.
    assert port in second.evidence.filtered_live


async def test_evidence_times_are_probe_send_times() -> None:
    """A result dates each port by when its probe went out, within the scan's run."""
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    scanner = Scanner(max_sockets=16)
    try:
        result = await scanner.scan(HOST, [port, 40500, 40501])
    finally:
        scanner.close()
        listener.close()
    assert result.evidence is not None
    assert result.evidence.answered is not None
    span = result.duration
    assert all(0 <= t <= span for t in result.evidence.sent.values())
    assert 0 <= result.evidence.answered <= span
    assert result.state(port) is PortState.OPEN
