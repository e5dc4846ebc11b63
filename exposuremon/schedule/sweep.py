"""Sentinel sweeps: every target's sentinel scan on its interval, many targets per tick.

At 10,000 targets a 30 s sentinel interval is 333 scans a second. One APScheduler job per
target (as quick and full scans have) cost a job lookup, a submission and a slot wait each,
and a sentinel waiting behind start-up quick scans for one of the 16 slots made APScheduler
skip its next run: after 4 minutes only 636 of 10,000 targets had had a sentinel scan.

So sentinel scans have their own loop. `SweepPlan` (pure: times are passed in, randomness is
injected) keeps each target's next due time in a heap; `SentinelSweeper` wakes when the
earliest is due (at most every `TICK` s), starts the scan of every target due by then, and
re-plans each target when its scan ends. All scans of a tick run at once in the one `Scanner`,
which shares the global socket budget round-robin between them, so a sweep is one engine pass
over many targets' sentinel ports. They do not wait for the quick and full scans' slots: a
sentinel scan is a few dozen probes, and it is what catches a reopened port within a minute.

Sentinel scans come first. When the machine cannot do everything (a CPU-starved loop, or more
targets than it can scan), the sweeper falls `behind`: a sentinel scan has waited more than
`BEHIND_AFTER` s to start since it was ready (due, and its last scan over), or one that just
started had. Quick and full scans wait for `caught_up()` before they start, so what is left of
the CPU goes to them, and the sentinel scans stay on time; the waiting shows in their lag and
`scans_late_total`. A target whose own scans overrun its interval (a slow, rate-limited
router) is late, but it does not hold up the others: its wait counts from when it was ready.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

TICK = 1.0  # seconds between looks at the plan when nothing is due sooner
MIN_TICK = 0.02  # never spin: targets due within this much of each other share a tick
# Sentinel scans running at once. A sentinel scan is a few dozen probes and the engine shares
# its socket budget fairly between scans, so many may run: 10,000 targets every 30 s is 333
# scans a second, and on routers that drop closed ports each takes a second or two.
SLOTS = 1024
BEHIND_AFTER = 5.0  # seconds a sentinel scan may wait past its due time before others wait
CAUGHT_UP_POLL = 0.25  # seconds between looks while quick and full scans wait


@dataclasses.dataclass(frozen=True, slots=True)
class SweepSpec:
    """One target's sentinel schedule: interval (s) and jitter (a share of the interval)."""

    interval: float
    jitter: float = 0.1

    def __post_init__(self) -> None:
        # Checked when built, so that a reload refuses a config before adopting any of it.
        if not (math.isfinite(self.interval) and self.interval > 0):
            raise ValueError(f"sentinel interval {self.interval!r} is not usable")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter {self.jitter!r} is not a share of the interval")


class SweepPlan:
    """When each target's next sentinel scan is due (monotonic seconds), pure.

    A target is *waiting* (with a due time) or *taken* (its scan runs; `done` plans the next).
    Due times advance from the nominal schedule, not from when a scan ended, so intervals do
    not drift; a jitter of up to `jitter × interval` is added to each. A target more than an
    interval behind (a stalled machine) starts over from now instead of catching up in a burst.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()
        self._specs: dict[str, SweepSpec] = {}
        self._nominal: dict[str, float] = {}  # due time without jitter, waiting or taken
        self._due: dict[str, float] = {}  # waiting targets' due times (jitter included)
        self._heap: list[tuple[float, str]] = []  # (due, name); entries not in _due are stale
        self._taken: set[str] = set()

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    @property
    def names(self) -> frozenset[str]:
        """Every planned target."""
        return frozenset(self._specs)

    def spec(self, name: str) -> SweepSpec | None:
        """A target's schedule, None when it is not planned."""
        return self._specs.get(name)

    def due_at(self, name: str) -> float | None:
        """When a waiting target is due; None when it is taken or not planned."""
        return self._due.get(name)

    def set(self, name: str, spec: SweepSpec, first_due: float) -> None:
        """Plan a target (new or changed schedule) to be due first at `first_due`."""
        self._specs[name] = spec
        self._nominal[name] = first_due
        if name not in self._taken:  # a running scan plans its next one when it ends
            self._wait(name, first_due)

    def remove(self, name: str) -> None:
        """Stop planning a target (a running scan of it ends unplanned)."""
        self._specs.pop(name, None)
        self._nominal.pop(name, None)
        self._due.pop(name, None)
        self._taken.discard(name)

    def next_due(self) -> float | None:
        """The earliest due time of a waiting target, None when none waits."""
        heap = self._heap
        while heap and self._due.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # stale: taken, removed or re-planned since
        return heap[0][0] if heap else None

    def take(self, now: float) -> list[tuple[str, float]]:
        """Every waiting target due at `now` or before, with its due time, earliest first."""
        taken: list[tuple[str, float]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, name = heapq.heappop(heap)
            if self._due.get(name) != due:
                continue
            del self._due[name]
            self._taken.add(name)
            taken.append((name, due))
        return taken

    def done(self, name: str, now: float) -> float | None:
        """A taken target's scan ended at `now`: plan its next one; returns when it is due."""
        if name not in self._taken:
            return None
        self._taken.discard(name)
        spec = self._specs[name]
        nominal = self._nominal[name] + spec.interval
        if nominal < now - spec.interval:
            nominal = now  # fell behind by more than an interval: no burst of catch-up scans
        self._nominal[name] = nominal
        return self._wait(name, nominal + self._rng.uniform(0.0, spec.jitter * spec.interval))

    def _wait(self, name: str, due: float) -> float:
        self._due[name] = due
        heapq.heappush(self._heap, (due, name))
        # Stale entries pile up when targets are re-planned often (reloads): compact then.
        if len(self._heap) > 2 * len(self._due) + 64:
            self._heap = [(d, n) for n, d in self._due.items()]
            heapq.heapify(self._heap)
        return due


ScanDue = Callable[[str, float], Awaitable[Any]]  # (target, due on the monotonic clock)
FirstDue = Callable[[str, SweepSpec, int, int], float]  # (target, spec, index, count) -> due


class SentinelSweeper:
    """Starts every sentinel scan when the plan says it is due; `start()` → run → `stop()`."""

    def __init__(
        self,
        scan: ScanDue,
        *,
        plan: SweepPlan | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        slots: int = SLOTS,
    ) -> None:
        self._scan = scan
        self.plan = plan if plan is not None else SweepPlan()
        self._monotonic = monotonic
        self._slots = asyncio.Semaphore(slots)
        self._planned_at: dict[str, float] = {}  # when each target's due time was set
        # Scans waiting for a slot: a heap of (ready since, entry number, name), and the entry
        # number of each name's live entry (a started scan's entry is skipped when on top).
        self._waiting: list[tuple[float, int, str]] = []
        self._unstarted: dict[str, int] = {}
        self._entries = 0
        self._last_wait = 0.0  # how long the last sentinel scan to start waited once ready
        self._last_start = -math.inf
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._scans: set[asyncio.Task[Any]] = set()  # a reference keeps each task alive
        self._wakes_at = float("inf")  # when the loop looks at the plan next

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._loop_task is not None and not self._loop_task.done()

    def start(self) -> None:
        """Start sweeping (needs a running event loop)."""
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._sweep())

    def pause(self) -> None:
        """Start no more scans; those running go on (the owner waits for or stops them)."""
        if self._loop_task is not None:
            self._loop_task.cancel()

    async def stop(self) -> None:
        """Stop the loop (scans still running are the owner's to finish or cancel)."""
        self.pause()
        if self._loop_task is not None:
            await asyncio.gather(self._loop_task, return_exceptions=True)

    def sync(self, specs: Mapping[str, SweepSpec], first_due: FirstDue) -> None:
        """Plan exactly `specs`: new or changed targets due first at `first_due(name, spec, i, n)`.

        `i` of `n` numbers the targets whose plan changes, so that their first scans can be
        spread; unchanged targets keep their place.
        """
        for name in self.plan.names - set(specs):
            self.plan.remove(name)
            self._planned_at.pop(name, None)
        changed = [name for name, spec in specs.items() if self.plan.spec(name) != spec]
        now = self._monotonic()
        for index, name in enumerate(changed):
            spec = specs[name]
            self.plan.set(name, spec, first_due(name, spec, index, len(changed)))
            self._planned_at[name] = now
        self._wake.set()

    def behind(self) -> bool:
        """Sentinel scans wait: one ready `BEHIND_AFTER` s ago has not started, or one that
        started within the last `BEHIND_AFTER` s had waited that long."""
        now = self._monotonic()
        if self._last_wait > BEHIND_AFTER and now - self._last_start <= BEHIND_AFTER:
            return True
        waiting = self._waiting_since()
        return waiting is not None and waiting < now - BEHIND_AFTER

    def _waiting_since(self) -> float | None:
        """Since when the longest-waiting unstarted sentinel scan was ready (None: none wait)."""
        waiting, unstarted = self._waiting, self._unstarted
        while waiting and unstarted.get(waiting[0][2]) != waiting[0][1]:
            heapq.heappop(waiting)  # started (or gone) since it was pushed
        return waiting[0][0] if waiting else None

    async def caught_up(self) -> None:
        """Return once sentinel scans are on time (at once when they are)."""
        # A condition of the clock as much as of events: looked at a few times a second.
        while self.running and self.behind():  # noqa: ASYNC110
            await asyncio.sleep(CAUGHT_UP_POLL)

    async def _sweep(self) -> None:
        plan = self.plan
        while True:
            now = self._monotonic()
            for name, due in plan.take(now):
                task = asyncio.get_running_loop().create_task(self._one(name, due))
                self._scans.add(task)
                task.add_done_callback(self._scans.discard)
            upcoming = plan.next_due()
            delay = TICK if upcoming is None else min(TICK, max(MIN_TICK, upcoming - now))
            self._wakes_at = now + delay
            self._wake.clear()
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _one(self, name: str, due: float) -> None:
        # Ready when due, or when its due time was set if that was later (the last scan of the
        # target overran its interval): only the wait after that is the machine's doing.
        ready = max(due, self._planned_at.get(name, due))
        self._entries += 1
        self._unstarted[name] = self._entries
        heapq.heappush(self._waiting, (ready, self._entries, name))
        try:
            async with self._slots:
                del self._unstarted[name]
                self._waiting_since()  # drops started entries, so the heap holds the waiting
                self._last_start = self._monotonic()
                self._last_wait = self._last_start - ready
                await self._scan(name, due)
        finally:
            self._unstarted.pop(name, None)
            now = self._monotonic()
            due_next = self.plan.done(name, now)
            if due_next is not None:
                self._planned_at[name] = now
                if due_next < self._wakes_at:
                    self._wake.set()  # due before the loop would look again (short intervals)
