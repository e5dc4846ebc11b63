"""Sentinel sweeps: every target due on its interval (pure plan), started by one loop."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exposuremon.schedule import (
    BEHIND_AFTER,
    CAUGHT_UP_POLL,
    SentinelSweeper,
    SweepPlan,
    SweepSpec,
)


def planned(count: int, interval: float = 30.0, jitter: float = 0.0) -> SweepPlan:
    """`count` targets due first spread over one interval, as after a start."""
    plan = SweepPlan(random.Random(7))
    for i in range(count):
        plan.set(f"t{i}", SweepSpec(interval, jitter), interval * i / count)
    return plan


def test_due_targets_are_taken_once_in_due_order() -> None:
    """Targets due by now are taken earliest first, and not again until their scan is done."""
    plan = planned(4, interval=8.0)  # due at 0, 2, 4, 6
    assert plan.take(-1.0) == []
    assert plan.take(4.0) == [("t0", 0.0), ("t1", 2.0), ("t2", 4.0)]
    assert plan.take(100.0) == [("t3", 6.0)]
    assert plan.take(100.0) == []  # all four are running
    assert plan.next_due() is None


def test_done_plans_the_next_scan_one_interval_after_the_last_due() -> None:
    """Intervals do not drift with scan durations: next due = last due + interval (+ jitter)."""
    plan = planned(1, interval=30.0)
    assert plan.take(0.5) == [("t0", 0.0)]
    assert plan.done("t0", now=12.0) == 30.0  # a 12 s scan does not push the next one
    assert plan.due_at("t0") == 30.0


def test_jitter_is_a_share_of_the_interval_added_to_the_due_time() -> None:
    """A jitter of 0.1 on 30 s puts each next scan 30 to 33 s after the last due time."""
    plan = planned(1, interval=30.0, jitter=0.1)
    dues = []
    for _ in range(200):
        ((name, due),) = plan.take(math.inf)
        dues.append(due)
        plan.done(name, due)
    offsets = [due - 30.0 * k for k, due in enumerate(dues)]  # the nominal schedule holds
    assert all(0.0 <= offset <= 3.0 for offset in offsets[1:])
    assert len({round(offset, 6) for offset in offsets}) > 100  # it does jitter


def test_a_target_far_behind_starts_over_instead_of_catching_up() -> None:
    """After a stall longer than an interval, the next scan is due now, not a burst of them."""
    plan = planned(1, interval=30.0)
    plan.take(0.0)
    assert plan.done("t0", now=500.0) == 500.0
    plan.take(500.0)
    assert plan.done("t0", now=501.0) == 530.0


def test_removed_and_replanned_targets() -> None:
    """A removed target is never due again; a new schedule for a running one waits for it."""
    plan = planned(2, interval=10.0)  # due at 0 and 5
    plan.remove("t1")
    assert plan.take(100.0) == [("t0", 0.0)]
    assert plan.done("t1", 100.0) is None
    plan.set("t0", SweepSpec(60.0, 0.0), first_due=0.0)  # changed while its scan runs
    assert plan.due_at("t0") is None  # still running: nothing due twice at once
    assert plan.done("t0", now=1.0) == 60.0
    assert "t1" not in plan
    assert len(plan) == 1


@pytest.mark.parametrize("interval", [0.0, -1.0, math.nan, math.inf])
def test_unusable_intervals_are_refused(interval: float) -> None:
    """A zero, negative or non-finite interval cannot be planned (a reload refuses it)."""
    with pytest.raises(ValueError, match="sentinel interval"):
        SweepSpec(interval)


@settings(max_examples=25, deadline=None)
@given(
    count=st.integers(1, 3000),
    duration=st.floats(0.0, 25.0),
    jitter=st.sampled_from([0.0, 0.1, 0.5]),
)
def test_every_target_is_scanned_within_its_interval(
    count: int, duration: float, jitter: float
) -> None:
    """Ticking once a second, with scans of any duration under the interval, every target's
    sentinel scan starts within interval x (1 + jitter) + one tick of its last one."""
    interval, tick = 30.0, 1.0
    plan = planned(count, interval, jitter)
    started: dict[str, list[float]] = {}
    running: list[tuple[float, str]] = []
    now = 0.0
    while now <= 200.0:
        for end, name in [r for r in running if r[0] <= now]:
            plan.done(name, end)
            running.remove((end, name))
        for name, _due in plan.take(now):
            started.setdefault(name, []).append(now)
            running.append((now + duration, name))
        now += tick
    assert len(started) == count  # every target within the first interval
    for starts in started.values():
        assert starts[0] <= interval
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert all(gap <= interval * (1 + jitter) + tick + 1e-9 for gap in gaps)


async def test_the_sweeper_starts_each_target_when_due_and_follows_changes() -> None:
    """A real loop: 40 targets every 0.3 s are each scanned repeatedly, with the due time;
    a target synced away is scanned no more, and after stop nothing starts."""
    starts: dict[str, list[tuple[float, float]]] = {}
    enough = asyncio.Event()

    async def scan(name: str, due: float) -> None:
        starts.setdefault(name, []).append((time.monotonic(), due))
        if len(starts) == 40 and all(len(s) >= 3 for s in starts.values()):
            enough.set()
        await asyncio.sleep(0.01)

    sweeper = SentinelSweeper(scan)
    specs = {f"t{i}": SweepSpec(0.3, 0.0) for i in range(40)}
    now = time.monotonic()
    sweeper.sync(specs, lambda _name, spec, i, n: now + spec.interval * i / n)
    sweeper.start()
    try:
        async with asyncio.timeout(30):
            await enough.wait()
        assert sweeper.running
        for runs in starts.values():
            assert all(started >= due for started, due in runs)  # never before it is due
            dues = [due for _, due in runs]
            # One interval apart at least (more only when a busy loop made it start over).
            assert all(b - a >= 0.3 - 1e-9 for a, b in itertools.pairwise(dues))
        del specs["t0"]
        sweeper.sync(specs, lambda _name, spec, i, n: time.monotonic())
        seen_t0 = len(starts["t0"])
        counted = sum(len(s) for s in starts.values())
        async with asyncio.timeout(30):
            while sum(len(s) for s in starts.values()) < counted + 80:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert len(starts["t0"]) <= seen_t0 + 1  # at most the one that was already running
    finally:
        await sweeper.stop()
    assert not sweeper.running
    after_stop = sum(len(s) for s in starts.values())
    await asyncio.sleep(0)  # any scan the loop had started has had its turn
    assert sum(len(s) for s in starts.values()) == after_stop


async def test_quick_and_full_scans_wait_while_sentinel_scans_are_behind() -> None:
    """With its one slot held, a sentinel scan due over BEHIND_AFTER s ago puts the sweeper
    behind; caught_up() returns only once that scan has started on time again."""
    clock = [1000.0]
    release = asyncio.Event()
    started: list[str] = []

    async def scan(name: str, due: float) -> None:
        started.append(name)
        if name == "slow":
            await release.wait()

    sweeper = SentinelSweeper(scan, monotonic=lambda: clock[0], slots=1)
    specs = {"slow": SweepSpec(30.0, 0.0), "next": SweepSpec(30.0, 0.0)}
    sweeper.sync(specs, lambda name, _spec, _i, _n: 1000.0 if name == "slow" else 1001.0)
    sweeper.start()
    try:
        async with asyncio.timeout(10):
            while started != ["slow"]:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            clock[0] = 1002.0  # "next" is due and waits for the slot "slow" holds
            while "next" not in sweeper._unstarted:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert not sweeper.behind()  # 1 s past due: not yet behind
        clock[0] = 1001.0 + BEHIND_AFTER + 1
        assert sweeper.behind()
        waiter = asyncio.create_task(sweeper.caught_up())
        await asyncio.sleep(CAUGHT_UP_POLL * 2)
        assert not waiter.done()  # quick and full scans wait
        release.set()
        async with asyncio.timeout(10):
            while "next" not in started:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert sweeper.behind()  # "next" started late: the last lag says so
        async with asyncio.timeout(10):
            while not sweeper.plan.due_at("next"):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        clock[0] = 1031.0  # both due again now, a slot free: they start on time
        async with asyncio.timeout(10):
            await waiter
        assert not sweeper.behind()
    finally:
        release.set()
        await sweeper.stop()


async def test_a_target_whose_scans_overrun_does_not_hold_up_the_others() -> None:
    """A scan that outlasts its interval makes the next one start late (its lag), but it was
    ready only when the last ended: the sweeper is not behind, quick and full scans go on."""
    clock = [1000.0]
    lags: list[float] = []

    async def scan(name: str, due: float) -> None:
        lags.append(clock[0] - due)
        if len(lags) == 1:
            clock[0] += 18.0  # a slow router: 18 s for a scan due every 10 s

    sweeper = SentinelSweeper(scan, monotonic=lambda: clock[0])
    sweeper.sync({"slow": SweepSpec(10.0, 0.0)}, lambda _name, _spec, _i, _n: 1000.0)
    sweeper.start()
    try:
        async with asyncio.timeout(10):
            while len(lags) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert lags[1] >= 8.0  # due at 1010, started at 1018: late, and counted so
        assert not sweeper.behind()
        async with asyncio.timeout(1):
            await sweeper.caught_up()
    finally:
        await sweeper.stop()
