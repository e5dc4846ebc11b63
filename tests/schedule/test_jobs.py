"""Scan scheduling: staggered first runs (pure) and real APScheduler jobs firing."""

from __future__ import annotations

import asyncio
import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from exposuremon.model import ScanKind
from exposuremon.schedule import JobSpec, ScanScheduler, first_run, follow_ups, kind_of_job

NOW = dt.datetime(2026, 11, 26, 3, 0, tzinfo=dt.UTC)


def test_not_yet_due_runs_when_due() -> None:
    """A full scan done an hour ago with a 24 h interval next runs 23 h from now."""
    spec = JobSpec("r", ScanKind.FULL, 86400)
    last = NOW - dt.timedelta(hours=1)
    assert first_run(spec, last, NOW, 0, 1) == last + dt.timedelta(hours=24)


@given(st.integers(min_value=1, max_value=2000))
def test_overdue_full_scans_are_spread(count: int) -> None:
    """After a restart, overdue full scans of many targets are spread over their interval."""
    spec = JobSpec("r", ScanKind.FULL, 86400)
    runs = [first_run(spec, None, NOW, i, count) for i in range(count)]
    assert runs == sorted(runs)
    assert runs[0] == NOW  # the first one at once
    assert all(NOW <= r < NOW + dt.timedelta(hours=24) for r in runs)
    assert len(set(runs)) == count


@given(st.integers(min_value=2, max_value=10_000))
def test_first_quick_scans_are_spread_over_their_interval(count: int) -> None:
    """A fresh store's quick scans are spread evenly over the quick interval, not run at start."""
    spec = JobSpec("r", ScanKind.QUICK, 900)
    runs = [first_run(spec, None, NOW, i, count) for i in (0, count // 2, count - 1)]
    assert runs[0] == NOW
    # The middle one half-way through, the last within the interval: about count/900 a second.
    assert abs((runs[1] - NOW).total_seconds() - 900 * (count // 2) / count) < 1e-3
    assert NOW + dt.timedelta(seconds=900 * (count - 1) / count - 1e-3) <= runs[2]
    assert runs[2] < NOW + dt.timedelta(seconds=900)


def test_job_ids_name_their_kind() -> None:
    """Skipped runs are counted by kind: every scan job id names one, upkeep jobs none."""
    assert kind_of_job("router/quick") is ScanKind.QUICK
    assert kind_of_job("a/b/full") is ScanKind.FULL  # a target name may hold slashes
    assert kind_of_job("router/now/quick") is ScanKind.QUICK
    assert [kind_of_job(f"router/reboot/{n}") for n in range(4)] == [
        ScanKind.QUICK,
        ScanKind.FULL,
        ScanKind.QUICK,
        ScanKind.QUICK,
    ]
    assert kind_of_job("maintenance/prune") is None
    assert kind_of_job("router/reboot/9") is None


def test_window_never_exceeds_interval() -> None:
    """A 10 s sentinel interval is never staggered by more than 10 s."""
    spec = JobSpec("r", ScanKind.SENTINEL, 10)
    assert first_run(spec, None, NOW, 99, 100) < NOW + dt.timedelta(seconds=10)


def test_an_explicit_window_spreads_overdue_scans_over_it() -> None:
    """Overdue scans spread over a given window (a fleet takeover: 5 s), not the kind's."""
    spec = JobSpec("r", ScanKind.SENTINEL, 30)
    overdue = NOW - dt.timedelta(minutes=5)
    starts = [first_run(spec, overdue, NOW, i, 100, 5.0) for i in range(100)]
    assert max(starts) < NOW + dt.timedelta(seconds=5)
    assert max(starts) > NOW + dt.timedelta(seconds=4)  # spread, not all at once
    assert first_run(spec, overdue, NOW, 99, 100) > NOW + dt.timedelta(seconds=25)


def test_reboot_follow_ups() -> None:
    """A suspected reboot means a quick scan now, a full one soon, quick ones at +5 and +15 min."""
    plan = follow_ups(NOW)
    assert plan[0] == (ScanKind.QUICK, NOW)
    assert (ScanKind.FULL, NOW + dt.timedelta(minutes=1)) in plan
    assert (ScanKind.QUICK, NOW + dt.timedelta(minutes=5)) in plan
    assert (ScanKind.QUICK, NOW + dt.timedelta(minutes=15)) in plan


async def test_jobs_fire_and_follow_config_changes() -> None:
    """Jobs run repeatedly; a removed target stops running; follow-ups run once each, fresh."""
    calls: list[tuple[str, ScanKind]] = []
    fresh_calls: list[tuple[str, ScanKind]] = []
    fired = asyncio.Event()

    async def run_scan(target: str, kind: ScanKind, *, fresh: bool = False) -> None:
        calls.append((target, kind))
        if fresh:
            fresh_calls.append((target, kind))
        fired.set()

    sched = ScanScheduler(run_scan)
    sched.start()
    try:
        now = dt.datetime.now(dt.UTC)
        specs = [JobSpec("a", ScanKind.SENTINEL, 0.2, 0.0), JobSpec("b", ScanKind.SENTINEL, 0.2, 0)]
        sched.sync(specs, {}, now)
        assert set(sched.next_runs()) == {"a/sentinel", "b/sentinel"}
        async with asyncio.timeout(10):
            while sum(1 for c in calls if c[0] == "a") < 3:
                fired.clear()
                await fired.wait()
        sched.sync(specs[:1], {}, dt.datetime.now(dt.UTC))
        assert set(sched.next_runs()) == {"a/sentinel"}
        sched.after_reboot("a", dt.datetime.now(dt.UTC))
        async with asyncio.timeout(10):
            while ("a", ScanKind.QUICK) not in calls:
                fired.clear()
                await fired.wait()
        assert any(job.startswith("a/reboot/") for job in sched.next_runs())
        assert fresh_calls == [("a", ScanKind.QUICK)]  # only the follow-up must see it anew
        sched.after_reboot("gone", dt.datetime.now(dt.UTC))  # unknown targets are ignored
        assert not any(job.startswith("gone/") for job in sched.next_runs())
    finally:
        await sched.shutdown()
    assert not sched.running


async def test_first_run_now_is_not_skipped() -> None:
    """A job whose first run is due now runs now, not one interval later."""
    ran = asyncio.Event()

    async def run_scan(target: str, kind: ScanKind) -> None:
        ran.set()

    sched = ScanScheduler(run_scan)
    sched.start()
    try:
        sched.sync([JobSpec("a", ScanKind.SENTINEL, 3600, 0)], {}, dt.datetime.now(dt.UTC))
        async with asyncio.timeout(10):
            await ran.wait()
    finally:
        await sched.shutdown()


async def test_a_run_skipped_while_the_last_one_runs_is_reported() -> None:
    """APScheduler skipping a run (the previous one still going) reaches on_skipped, by kind."""
    skipped: list[ScanKind] = []
    release = asyncio.Event()

    async def run_scan(target: str, kind: ScanKind) -> None:
        await release.wait()  # still running when the next run is due

    sched = ScanScheduler(run_scan, on_skipped=skipped.append)
    sched.start()
    try:
        sched.sync([JobSpec("a", ScanKind.QUICK, 0.1, 0)], {}, dt.datetime.now(dt.UTC))
        async with asyncio.timeout(10):
            while not skipped:  # noqa: ASYNC110 - APScheduler's listener has no awaitable
                await asyncio.sleep(0.05)
        assert set(skipped) == {ScanKind.QUICK}
    finally:
        release.set()
        await sched.shutdown()
