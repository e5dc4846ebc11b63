"""Quick and full scans, reboot follow-ups and upkeep as APScheduler 3 jobs.

The decisions (when a target's first scan after start-up runs, which follow-ups a suspected
reboot triggers) are pure functions; `ScanScheduler` only turns them into jobs. Sentinel
scans have their own loop (`sweep.py`); `first_run` spreads their first runs too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from exposuremon.model import ScanKind

RunScan = Callable[..., Awaitable[None]]  # (target, kind, *, on_demand=False, fresh=False)
Skipped = Callable[[ScanKind], None]

# How far first scans after a start-up are spread, per kind (capped by the interval):
# overdue targets get their look within this window, staggered, not all at once. Sentinel
# scans come first, within 30 s. Quick and full scans spread over their whole interval:
# 10,000 fresh targets x 1000 quick ports in two minutes would be 83k probes a second ahead
# of the sentinel scans; over 15 minutes it is the steady rate of quick scans anyway.
FIRST_RUN_WINDOW = {
    ScanKind.SENTINEL: 30.0,
    ScanKind.QUICK: float("inf"),
    ScanKind.FULL: float("inf"),
}
# After a suspected reboot: quick at once, full soon, quick again as late services come up.
REBOOT_FOLLOW_UPS: tuple[tuple[ScanKind, float], ...] = (
    (ScanKind.QUICK, 0.0),
    (ScanKind.FULL, 60.0),
    (ScanKind.QUICK, 300.0),
    (ScanKind.QUICK, 900.0),
)


@dataclasses.dataclass(frozen=True, slots=True)
class SyncPlan:
    """Jobs to remove (ids) and to add or replace (spec, trigger, first run), made by `plan`."""

    remove: tuple[str, ...]
    add: tuple[tuple[JobSpec, IntervalTrigger, dt.datetime], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class JobSpec:
    """One recurring scan: a target, a kind, its interval and jitter (a share of it)."""

    target: str
    kind: ScanKind
    interval: float
    jitter: float = 0.1

    @property
    def job_id(self) -> str:
        """Stable APScheduler job id."""
        return f"{self.target}/{self.kind.value}"


def first_run(
    spec: JobSpec,
    last: dt.datetime | None,
    now: dt.datetime,
    index: int,
    count: int,
    window: float | None = None,
) -> dt.datetime:
    """When a job first runs after (re)start: due time from the last scan, staggered.

    A scan that is not yet due runs when due. One that is overdue (or never ran) runs within
    a window (`window` s, or the kind's `FIRST_RUN_WINDOW`; at most the interval), the
    targets spread evenly over it by `index` of `count`, so a restart does not launch every
    full scan at once.
    """
    window = min(spec.interval, FIRST_RUN_WINDOW[spec.kind] if window is None else window)
    stagger = dt.timedelta(seconds=window * index / max(count, 1))
    if last is not None:
        due = last + dt.timedelta(seconds=spec.interval)
        if due > now + stagger:
            return due
    return now + stagger


def follow_ups(now: dt.datetime) -> list[tuple[ScanKind, dt.datetime]]:
    """The extra scans a suspected reboot schedules."""
    return [(kind, now + dt.timedelta(seconds=delay)) for kind, delay in REBOOT_FOLLOW_UPS]


def kind_of_job(job_id: str) -> ScanKind | None:
    """The scan kind a job id names (`t/quick`, `t/now/quick`, `t/reboot/1`); None: upkeep."""
    head, _, last = job_id.rpartition("/")
    if head.endswith("/reboot") and last.isdigit() and int(last) < len(REBOOT_FOLLOW_UPS):
        return REBOOT_FOLLOW_UPS[int(last)][0]
    if head.startswith("maintenance"):
        return None
    try:
        return ScanKind(last)
    except ValueError:
        return None


class ScanScheduler:
    """Keeps APScheduler's jobs in line with the configured targets."""

    def __init__(self, run_scan: RunScan, on_skipped: Skipped | None = None) -> None:
        self._run_scan = run_scan
        self._scheduler = AsyncIOScheduler(timezone=dt.UTC)
        self._specs: dict[str, JobSpec] = {}
        self._on_skipped = on_skipped
        # A run APScheduler does not start (the last one still runs, or it is past its grace
        # time) is a late scan: counted by the service, not logged once per job.
        self._scheduler.add_listener(self._skipped, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)

    def _skipped(self, event: JobEvent) -> None:
        kind = kind_of_job(event.job_id)
        if kind is not None and self._on_skipped is not None:
            self._on_skipped(kind)

    @property
    def running(self) -> bool:
        """True between start() and shutdown()."""
        return bool(self._scheduler.running)

    def start(self) -> None:
        """Start firing jobs (needs a running event loop)."""
        self._scheduler.start()

    def pause(self) -> None:
        """Fire no more jobs; those running go on (they finish before shutdown)."""
        if self._scheduler.running:
            self._scheduler.pause()

    async def shutdown(self) -> None:
        """Stop firing jobs; jobs still running are cancelled, so finish them first."""
        if self._scheduler.running:
            # AsyncIOScheduler defers its shutdown to the next loop iteration.
            self._scheduler.shutdown(wait=False)
            async with asyncio.timeout(5):
                while self._scheduler.running:  # noqa: ASYNC110
                    await asyncio.sleep(0)

    def plan(
        self,
        specs: Sequence[JobSpec],
        last_scans: Mapping[tuple[str, ScanKind], dt.datetime],
        now: dt.datetime,
    ) -> SyncPlan:
        """Everything `apply` needs to schedule exactly `specs`, built without changing a job.

        A reload builds its plan first, so that a spec the scheduler cannot take (an interval
        APScheduler refuses) rejects the new config while the old jobs run on untouched.
        """
        wanted = {spec.job_id: spec for spec in specs}
        jobs: list[tuple[JobSpec, IntervalTrigger, dt.datetime]] = []
        for kind in ScanKind:
            ofkind = [s for s in specs if s.kind is kind]
            for index, spec in enumerate(ofkind):
                if self._specs.get(spec.job_id) == spec:
                    continue  # unchanged: keep its place in the schedule
                if not (math.isfinite(spec.interval) and spec.interval > 0):
                    raise ValueError(f"{spec.job_id}: interval {spec.interval!r} is not usable")
                last = last_scans.get((spec.target, spec.kind))
                start = first_run(spec, last, now, index, len(ofkind))
                trigger = IntervalTrigger(
                    seconds=spec.interval,
                    jitter=spec.interval * spec.jitter or None,
                    timezone=dt.UTC,
                )
                jobs.append((spec, trigger, start))
        return SyncPlan(remove=tuple(set(self._specs) - set(wanted)), add=tuple(jobs))

    def apply(self, plan: SyncPlan) -> None:
        """Schedule a plan made by `plan` (no other change in between)."""
        for job_id in plan.remove:
            self._remove(job_id)
        for spec, trigger, start in plan.add:
            self._scheduler.add_job(
                self._run_scan,
                trigger=trigger,
                # Explicit: an interval trigger's start date in the past (a first run
                # "now") would otherwise be skipped to the next interval.
                next_run_time=start,
                args=[spec.target, spec.kind],
                id=spec.job_id,
                name=spec.job_id,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(spec.interval)),
                replace_existing=True,
            )
            self._specs[spec.job_id] = spec

    def sync(
        self,
        specs: Sequence[JobSpec],
        last_scans: Mapping[tuple[str, ScanKind], dt.datetime],
        now: dt.datetime,
    ) -> None:
        """Add, change and remove jobs so that exactly `specs` are scheduled."""
        self.apply(self.plan(specs, last_scans, now))

    def after_reboot(self, target: str, now: dt.datetime) -> None:
        """Schedule the follow-up scans of a suspected reboot (replacing earlier ones)."""
        if target not in {s.target for s in self._specs.values()}:
            return
        for n, (kind, when) in enumerate(follow_ups(now)):
            self._scheduler.add_job(
                self._run_scan,
                trigger=DateTrigger(run_date=when, timezone=dt.UTC),
                args=[target, kind],
                kwargs={"fresh": True},
                id=f"{target}/reboot/{n}",
                max_instances=1,
                misfire_grace_time=120,
                replace_existing=True,
            )

    def run_soon(self, target: str, kind: ScanKind) -> None:
        """Run one scan of a target now (API / CLI request); it is recorded even if quiet."""
        self._scheduler.add_job(
            self._run_scan,
            trigger=DateTrigger(timezone=dt.UTC),
            args=[target, kind],
            kwargs={"on_demand": True},
            id=f"{target}/now/{kind.value}",
            max_instances=1,
            misfire_grace_time=60,
            replace_existing=True,
        )

    def add_maintenance(self, func: Callable[[], Awaitable[None]], interval: float) -> None:
        """Run a housekeeping coroutine (e.g. retention) every `interval` seconds."""
        self._scheduler.add_job(
            func,
            trigger=IntervalTrigger(seconds=interval, timezone=dt.UTC),
            id=f"maintenance/{getattr(func, '__name__', 'job')}",
            max_instances=1,
            coalesce=True,
            replace_existing=True,
        )

    def next_runs(self) -> dict[str, dt.datetime | None]:
        """Next fire time of every job, by job id (for status and tests)."""
        return {job.id: job.next_run_time for job in self._scheduler.get_jobs()}

    def _remove(self, job_id: str) -> None:
        spec = self._specs.pop(job_id)
        for job in self._scheduler.get_jobs():
            if job.id == job_id or job.id.startswith(f"{spec.target}/reboot/"):
                job.remove()
