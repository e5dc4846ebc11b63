"""The scan engine against test-bed routers: firewall policies, latency and loss, exact results."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from exposuremon.scan import PortState, Scanner, ScanOptions, ScanResult
from tests.support.testbed import Router

pytestmark = pytest.mark.netns

RouterFactory = Callable[..., Router]


def assert_exact(result: ScanResult, truth: dict[int, PortState]) -> None:
    """Every port's state equals the ground truth the test bed was built with."""
    wrong = {p: (result.state(p).label, s.label) for p, s in truth.items() if result.state(p) != s}
    assert not wrong, f"{len(wrong)} ports wrong (got, want): {dict(list(wrong.items())[:10])}"
    assert result.complete


def expected(
    ports: range,
    open_: set[int],
    filtered: set[int] = frozenset(),  # type: ignore[assignment]
) -> dict[int, PortState]:
    """Ground truth: the given open and filtered ports, every other port closed."""
    return {
        p: PortState.OPEN
        if p in open_
        else PortState.FILTERED
        if p in filtered
        else PortState.CLOSED
        for p in ports
    }


async def scan(
    address: str, ports: range, hints: tuple[int, ...] = (), **options: float | None
) -> ScanResult:
    """One scan with a fresh Scanner."""
    scanner = Scanner()
    try:
        opts = ScanOptions(**options)  # type: ignore[arg-type]
        return await scanner.scan(address, ports, opts, hints=hints)
    finally:
        scanner.close()


async def test_mixed_policy_is_classified_exactly(router: Router) -> None:
    """Accept, reject (RST), drop and ICMP-prohibit rules give open, closed, filtered, filtered."""
    for port in (22, 443, 8080):
        router.listen(port)
    router.set_policy(
        "reject",
        {
            22: "accept",
            443: "accept",
            8080: "drop",
            (80, 89): "drop",
            (440, 449): "reject",
            (100, 110): "prohibit",
        },
    )
    ports = range(1, 3001)
    result = await scan(router.addr, ports)
    filtered = set(range(80, 90)) | set(range(100, 111)) | {8080}
    assert_exact(result, expected(ports, {22, 443}, filtered & set(ports)))
    assert result.stats.answered >= 3000 - len(filtered)


async def test_filtered_host_with_few_open_ports(router: Router) -> None:
    """A host that drops all but three open ports: exact, and its drops are not congestion."""
    open_ = {22, 443, 2999}
    for port in open_:
        router.listen(port)
    router.set_policy("drop", {p: "accept" for p in open_})
    ports = range(1, 3001)
    # A wrong hint (an "expected open" port that is dropped) must not pass for packet loss.
    result = await scan(router.addr, ports, hints=(1000,))
    assert_exact(result, expected(ports, open_, set(ports) - open_))
    assert result.stats.loss_events == 0  # drops of a firewall are not congestion
    assert result.stats.max_cwnd > 64  # so the window opened instead of collapsing


async def test_40ms_rtt(router_factory: RouterFactory) -> None:
    """Behind a 40 ms RTT the scan is exact and measures the round trip."""
    router = router_factory(rtt=0.040)
    open_ = {22, 443, 4500}
    for port in open_:
        router.listen(port)
    router.set_policy("reject", {p: "accept" for p in open_})
    assert router.delayed_addr is not None
    ports = range(1, 5001)
    result = await scan(router.delayed_addr, ports)
    assert_exact(result, expected(ports, open_))
    assert result.stats.srtt is not None
    assert 0.035 <= result.stats.srtt < 0.5


async def test_2pct_loss_misses_no_open_port(router: Router) -> None:
    """With 2% loss each way no open port is missed and no closed port is reported open."""
    open_ = {22, 443, 8443, 12345, 19999}
    for port in open_:
        router.listen(port)
    router.set_policy("reject", {p: "accept" for p in open_}, loss=0.02)
    ports = range(1, 20001)
    result = await scan(router.addr, ports)
    assert set(result.open) == open_
    assert result.complete
    assert result.stats.loss_events > 0  # the loss was seen…
    assert result.counts["filtered"] <= 2  # …and retried instead of calling ports filtered


async def test_concurrent_targets_on_two_routers(router_factory: RouterFactory) -> None:
    """Two routers scanned at once by one Scanner each get their own exact result."""
    a, b = router_factory(), router_factory()
    a.listen(443)
    b.listen(80)
    a.set_policy("reject", {443: "accept"})
    b.set_policy("drop", {80: "accept"})
    ports = range(1, 1001)
    scanner = Scanner(max_sockets=200)
    try:
        ra = scanner.start(a.addr, ports)
        rb = scanner.start(b.addr, ports)
        res_a, res_b = await ra.wait(), await rb.wait()
    finally:
        scanner.close()
    assert_exact(res_a, expected(ports, {443}))
    assert_exact(res_b, expected(ports, {80}, set(ports) - {80}))


async def test_immediate_answers_never_stall_a_queued_scan(router: Router) -> None:
    """A scan whose probes fail at once (no route) completes while a big scan holds the budget."""
    unrouted = "198.19.255.254"  # inside the test bed's range, routed nowhere: fails locally
    scanner = Scanner(max_sockets=4)
    try:
        big = scanner.start(router.addr, range(1, 65536))
        small = await asyncio.wait_for(scanner.scan(unrouted, range(1, 200)), 30)
        big.stop()
    finally:
        scanner.close()
    assert small.complete
    assert small.counts["filtered"] == 199
