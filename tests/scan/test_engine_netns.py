"""The scan engine against test-bed routers: firewall policies, latency and loss, exact results."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence

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
    ports: Iterable[int],
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
    address: str, ports: Sequence[int], hints: tuple[int, ...] = (), **options: float | None
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


# -- targets that limit new connections (SYN-flood protection) ------------------------------

BUCKET_OPEN = {*range(80, 90), *range(440, 450), 1500, 1777}
SENTINEL = sorted({21, 22, 23, *range(80, 90), *range(440, 450), 3389, *range(8080, 8091), 8443}
                  | BUCKET_OPEN)  # fmt: skip


def serve(router: Router, open_: set[int]) -> None:
    """Listen on `open_`, accept them, reset every other port."""
    for port in open_:
        router.listen(port)
    router.set_policy("reject", {p: "accept" for p in open_})


async def test_rate_limited_router_scanned_round_after_round_stays_exact(router: Router) -> None:
    """Under 20/s burst 5, sentinel rounds that pass on the learned rate are exact every time."""
    serve(router, BUCKET_OPEN)
    router.rate_limit(20, burst=5)
    start: float | None = None
    limited = []
    for _ in range(4):
        result = await scan(router.addr, SENTINEL, start_rate=start)
        assert_exact(result, expected(SENTINEL, BUCKET_OPEN))
        limited.append(result.stats.rate_limited)
        start = result.stats.learned_rate
        assert start is not None
        assert 5 <= start <= 80
    assert limited[0]  # the first round, unpaced, ran into the limit and learned it


async def test_slow_limit_is_found_by_checking_silent_ports(router: Router) -> None:
    """A 4/s bucket drops a small scan's burst; the check after a pause finds it, all exact."""
    open_ = {10, 20, 25}
    serve(router, open_)
    router.rate_limit(4, burst=3)
    ports = range(1, 31)
    result = await scan(router.addr, ports)
    assert_exact(result, expected(ports, open_))
    assert result.stats.rate_limited
    assert result.stats.learned_rate is not None
    assert result.stats.learned_rate < 20


async def test_silent_port_on_a_limited_target_is_unknown_not_filtered(router: Router) -> None:
    """Behind a rate limit a port that never answers is UNKNOWN (no evidence), not filtered."""
    router.listen(80)
    router.set_policy("reject", {80: "accept", 150: "drop"})
    router.rate_limit(50, burst=5)
    ports = range(1, 301)
    result = await scan(router.addr, ports)
    truth = expected(ports, {80})
    truth[150] = PortState.UNKNOWN
    assert_exact(result, truth)
    assert result.stats.rate_limited


async def test_silent_ports_without_a_limit_stay_filtered_after_the_check(router: Router) -> None:
    """Dropped ports on a host with no limit are filtered: the check after a pause finds none."""
    open_ = {22, 443}
    for port in open_:
        router.listen(port)
    router.set_policy("reject", {22: "accept", 443: "accept", (1000, 1099): "drop"})
    ports = range(900, 1201)
    result = await scan(router.addr, ports, hints=(22, 443))
    assert_exact(result, expected(ports, set(), set(range(1000, 1100))))
    assert not result.stats.rate_limited
    assert result.stats.learned_rate is None


async def test_a_target_that_comes_up_mid_scan_is_not_taken_for_a_rate_limit(
    router: Router,
) -> None:
    """Ports probed only while the target was down are probed again, and start no pacing."""
    open_ = {22, 80, 443}
    serve(router, open_)
    router.save_boot_state()
    router.power_off()

    def boot_after(downtime: float) -> None:
        # The downtime is the behaviour under test (the router boots while the scan runs),
        # not a stand-in for waiting on a condition.
        time.sleep(downtime)
        router.power_on()

    boot = asyncio.create_task(asyncio.to_thread(boot_after, 1.0))
    # At 20 connects a second the 80 ports take 4 s to send: the first ones (both attempts)
    # go out while the router is down, the later ones are answered.
    ports = range(1, 81)
    try:
        result = await scan(
            router.addr, ports, rate=20.0, timeout_initial=0.3, timeout_max=0.3, retries=1
        )
    finally:
        await boot
    assert result.stats.retries > 0  # attempts went out while it was down
    assert_exact(result, expected(ports, open_))
    assert not result.stats.rate_limited
    assert result.stats.learned_rate is None
