"""The path of one scan, in the order it runs: the daemon's only way from a probe to a message.

1. **scan**: the engine probes the target's ports (`scan/engine.py`, `scan/target.py`).
2. **confirm**: ports newly seen open are probed once more, so one odd answer pages nobody.
3. **fingerprint**: what is newly open (every open port on quick and full scans) is looked at
   (`scan/fingerprint.py`): banner, TLS certificate, HTTP Server header.
4. **observation**: the engine's result becomes detection's input (`observation`, `model.py`).
5. **evaluate**: `detect.evaluate` (pure) turns the previous state and the observation into an
   `Evaluation`: the new state, the events and the findings created or changed. Around it,
   also pure: `flap.damp` marks the events of a flapping port as held (recorded, not
   notified) and raises `port_flapping` / `port_flap_ended`; `advisories.check` raises
   `advisory_matched` / `advisory_cleared` from the fingerprints.
6. **vantage health** (before 5): a silent result (no SYN-ACK, no RST) of a target that was
   answering waits (vantage.py) until the vantage's other targets tell whether the silence
   is the target's (then it is evaluated and recorded, with what queued behind it, in order)
   or the scanner's own outage (the vantage is degraded: it is dropped, raising one
   `vantage_degraded` for all).
7. **apply or hold**: a scan after which only time passed (of any kind) is held in memory and
   its times are written in batches (`flush_quiet`). Anything else goes to the store in one
   transaction (`store.Store.apply`): the state, the findings, the events, and one outbox row
   per event and notification channel (`notify.channels_for_events` picks the channels; a
   held event gets none). A target in a maintenance window gets its rows held instead
   (`holding`), for the summary at the window's end (service.py, schedule/maintenance.py).
8. **notify**: the notifier is told which channels have new outbox rows
   (`notify.Notifier.outbox_written`) and delivers them (`notify/notifier.py`).

`Service` (service.py) owns the lifecycle around this: which scans run when, and how many at
once. The pipeline owns what one scan does, and the last state it applied per target, which
the next scan starts from without a database read.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import itertools
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from typing import Any, Protocol

from exposuremon import advisories, detect, flap, vantage
from exposuremon.config import AdvisoryConfig, Config, TargetConfig
from exposuremon.logs import get_logger
from exposuremon.metrics import Metrics
from exposuremon.model import (
    DEFAULT_VANTAGE,
    Event,
    EvidenceTimes,
    Finding,
    Fingerprint,
    Observation,
    Observed,
    ScanKind,
    TargetState,
    TargetStatus,
    VantageStatus,
)
from exposuremon.notify import channels_for_events
from exposuremon.scan import (
    PortState,
    Scanner,
    ScanOptions,
    ScanResult,
    TargetScan,
    fingerprint_many,
)
from exposuremon.store import Fence, FencedWrite, Route, ScanRecord, Store, StoreError

MAX_FINGERPRINTS = 64  # ports fingerprinted per scan at most


class OutboxReader(Protocol):
    """What the pipeline needs of the notifier: to hear that channels have new outbox rows."""

    def outbox_written(self, channels: Iterable[str]) -> None: ...


def ever_open(state: TargetState) -> frozenset[int]:
    """Ports of a target that were ever seen open: the sentinel scans keep watching them."""
    return frozenset(
        p for p, rec in state.ports.items() if rec.times_opened or rec.state is Observed.OPEN
    )


def observation(
    target: str,
    kind: ScanKind,
    result: ScanResult,
    confirmed: Iterable[int],
    fingerprints: Mapping[int, Fingerprint],
    vantage: str = DEFAULT_VANTAGE,
) -> Observation:
    """The detection input built from an engine result (unfinished ports left out)."""
    states = {
        port: Observed(state.label)
        for port, state in result.items()
        if state is not PortState.UNKNOWN
    }
    # Evidence carries its own time: when each probe was sent, not when the scan (or its
    # confirmation and fingerprints) finished; see detect.py, "Evidence and its time".
    evidence = result.evidence
    times: dict[str, Any] = {}
    if evidence is not None:
        times = {
            "seen_at": EvidenceTimes(result.started, evidence.sent),
            "answered_at": None
            if evidence.answered is None
            else result.started + dt.timedelta(seconds=evidence.answered),
            "filtered_live": evidence.filtered_live,
        }
    return Observation(
        target=target,
        kind=kind,
        address=result.address,
        started=result.started,
        finished=result.finished,
        complete=result.complete,
        states=states,
        confirmed_open=frozenset(confirmed),
        fingerprints=fingerprints,
        responded=result.responded,
        # Any sign that the target dropped probes (random loss, or a rate limit's bucket):
        # a silence in this scan is then no evidence that a port closed.
        dropped=result.stats.loss_events > 0 or result.stats.drops > 0 or result.stats.rate_limited,
        vantage=vantage,
        **times,
    )


def evaluate(
    prev: TargetState,
    obs: Observation,
    policy: detect.TargetPolicy,
    flaps: flap.FlapPolicy,
    rules: Sequence[advisories.Rule],
    now: dt.datetime,
    *,
    degraded: frozenset[str] = frozenset(),
) -> detect.Evaluation:
    """Detection, then flap damping and advisories on what it made (all pure)."""
    evaluation = detect.evaluate(prev, obs, policy, now, degraded=degraded)
    evaluation = flap.damp(prev, obs, evaluation, policy, flaps, now)
    return advisories.check(evaluation, rules, now)


def notified_route(
    config: Config, events: Sequence[Event], findings: Sequence[Finding]
) -> Callable[[Event], list[str]]:
    """Channels per event: `notify.channels_for_events` over the events that are not held.

    A held event (of a flapping port) goes to no channel and does not make a channel busy,
    so it brings no target-level context along either.
    """
    route = channels_for_events(config.notify, [e for e in events if not flap.is_held(e)], findings)
    return lambda e: [] if flap.is_held(e) else route(e)


def is_quiet(complete: bool, prev: TargetState, ev: detect.Evaluation) -> bool:
    """A complete scan after which only time has passed: no write needed now.

    Any kind: at 10,000 targets a quick scan every 15 minutes that found what the last one
    found is 11 writes a second and 86 million rows of `scans` over the retention.
    """
    return (
        complete
        and not ev.events
        and not ev.findings
        and not ev.reboot_suspected
        and prev.last_observed is not None  # the first scan of a target is always written
        and detect.only_time_advanced(prev, ev.state)
    )


def is_silent(obs: Observation) -> bool:
    """A result the target gave no TCP answer in (no SYN-ACK, no RST), having probed something."""
    return (
        bool(obs.states)
        and not obs.responded
        and all(s is Observed.FILTERED for s in obs.states.values())
    )


def health_params(config: Config) -> vantage.HealthParams:
    """How vantage health is judged under `config`: a round is the longest sentinel interval
    of its targets, with half as much again for jitter and lateness."""
    intervals = [
        t.effective_schedule(config.schedule).interval(ScanKind.SENTINEL) for t in config.targets
    ]
    longest = max(intervals, default=config.schedule.interval(ScanKind.SENTINEL))
    return vantage.HealthParams(
        silence_share=config.fleet.vantage_silence_share,
        min_targets=config.fleet.vantage_min_targets,
        round=1.5 * longest,
    )


def contended_silence(
    result: ScanResult, started_at: float, others_answered_at: Iterable[float | None]
) -> bool:
    """A scan the target did not answer at all while it answered another scan of ours.

    Both scans draw on one bucket when the target limits new connections: a quick scan's first
    window can empty it, and a sentinel scan at the same moment then hears nothing. That
    silence is our own doing, no outage: it must not take the target down (and the other
    scan's answers bring it "back up, reboot suspected"). `started_at` and the others' last
    answers are monotonic times.
    """
    return not result.responded and any(
        at is not None and at >= started_at for at in others_answered_at
    )


def kept_rate(stored: float | None, learned: float | None, overlapped: bool) -> float | None:
    """The connection rate to keep for a target's next scan after one scan learned `learned`.

    A scan that shared the target's bucket with another scan of ours saw only its share, so it
    may raise the stored rate but not lower it; a scan that ran alone has the last word.
    """
    if learned is None:
        return None if not overlapped else stored
    if overlapped and stored is not None:
        return max(stored, learned)
    return learned


@dataclasses.dataclass(slots=True)
class _Pending:
    """A scan result waiting to be recorded (behind a held silence of its target, maybe)."""

    target: TargetConfig
    kind: ScanKind
    result: ScanResult
    obs: Observation
    fence: Fence | None
    hold_quiet: bool
    evaluation: detect.Evaluation | None = None  # set once recorded


@dataclasses.dataclass(frozen=True, slots=True)
class ScanDone:
    """What one run of the pipeline recorded (None from `run` when nothing was observed)."""

    result: ScanResult
    evaluation: detect.Evaluation


class ScanPipeline:
    """Runs scans of targets and records them; holds the last state applied per target."""

    def __init__(
        self,
        *,
        config: Callable[[], Config],
        store: Store,
        scanner: Scanner,
        notifier: OutboxReader,
        metrics: Metrics,
        clock: Callable[[], dt.datetime],
        stopping: Callable[[], bool],
        fence_for: Callable[[str], Fence | None] | None = None,
        reprobe: Callable[[str, frozenset[int]], Awaitable[None]] | None = None,
        holding: Callable[[str], bool] | None = None,
        on_reboot: Callable[[str], None] | None = None,
    ) -> None:
        self._config = config  # a callable: a reload replaces the config between scans
        # Whether a target is in a maintenance window now: its notifications are held.
        self._holding = holding
        # Told of every target whose recorded result suspects a reboot (follow-up scans),
        # whichever scan's task recorded it (a held result is recorded by a later one).
        self._on_reboot = on_reboot
        # Fleet mode: the lease a target's results are written under (None: its shard is not
        # this node's). Taken when a scan starts, so a result is written only under the lease
        # it was observed under. None (one node): every target is ours, writes unfenced.
        self._fence_for = fence_for
        self._quiet_fences: dict[str, Fence] = {}
        # Fleet mode: asks the other vantages to re-probe ports this one saw open first.
        self._reprobe = reprobe
        # The store's change stamp each held state is at least as new as: the one our last
        # apply wrote, the one it was loaded with, or the mark it was preloaded under.
        # `refresh_changed` keeps a target whose newest stamp is this one; in fleet mode a
        # state evaluated against an older one is evaluated again when written (`Store.apply`).
        self._stamps: dict[str, int] = {}
        self._store = store
        self._scanner = scanner
        self._notifier = notifier
        self._metrics = metrics
        self._clock = clock
        self._stopping = stopping
        self.log = get_logger()
        self.seen: dict[str, TargetState] = {}  # last state applied (or held) per target
        # Quiet scans (nothing but time passed) are not written one by one: their times are
        # flushed every minute, and at stop. A crash loses only those.
        self.quiet: dict[str, TargetState] = {}
        self._last_batch: dict[str, TargetState] = {}  # what the last `flush_quiet` wrote
        # New connections per second each target accepts, where it limits them (SYN-flood
        # protection), learned by the engine: the next scan starts paced at it, not from
        # scratch (a quick scan that bursts into the bucket would see ports as silent).
        self.connection_rates: dict[str, float] = {}
        # Scans in progress by (target, kind, number): a re-probe may run beside the
        # scheduled scan of the same kind.
        self._running: dict[tuple[str, ScanKind, int], TargetScan] = {}
        self._scan_numbers = itertools.count()
        self._store_mark: int | None = None  # the store's change stamp `seen` is current with
        # The advisory rules compiled, with the config entries they were compiled from.
        self._rules: tuple[tuple[AdvisoryConfig, ...], tuple[advisories.Rule, ...]] = ((), ())
        self._locks: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(
            asyncio.Lock
        )
        # Vantage health (vantage.py): which results to record, hold or drop. Results to
        # record queue per target here, in the order the judgement let them through, and are
        # recorded under the target's lock by whichever task gets there first.
        self._health_of: Config | None = None
        self.health: vantage.VantageHealth[_Pending] = vantage.VantageHealth(
            health_params(config())
        )
        self._ready: dict[str, collections.deque[_Pending]] = {}
        self._unreported: tuple[vantage.Change, dt.datetime] | None = None  # not in the store yet
        self._degraded_since: dt.datetime | None = None
        # The vantages the store says are degraded (fleet mode: read every health tick); their
        # records count in no merge of other vantages' observations (detect.py).
        self._shared_degraded: frozenset[str] = frozenset()

    @contextlib.asynccontextmanager
    async def target_lock(self, name: str) -> AsyncIterator[None]:
        """Held while a target's state is read, evaluated and written (scans and acks)."""
        async with self._locks[name]:
            yield

    def forget(self, name: str) -> None:
        """Drop what is held of a target: its next scan reads the store (after an ack)."""
        self.seen.pop(name, None)
        self._stamps.pop(name, None)

    def let_go(self, names: Collection[str]) -> None:
        """Targets whose shard changed hands (fleet): drop everything held of them.

        Another node may write them meanwhile, so what this node holds is no longer the
        state to start from; quiet times not flushed yet are lost (a minute at most).
        """
        for name in names:
            self.seen.pop(name, None)
            self.quiet.pop(name, None)
            self._quiet_fences.pop(name, None)
            self._stamps.pop(name, None)
            self._ready.pop(name, None)
        self.health.forget(names)  # their held results are another node's business now

    async def refresh_changed(self) -> frozenset[str]:
        """Forget what is held of targets written by someone else since the last call.

        Besides this service, `exposuremon ack` (another process) and, in a fleet, other
        nodes write a target's state. Asking the store which targets changed, once per sweep
        tick, replaces a read of every state with a finding before each of its scans. Our own
        writes come back too: a target whose newest stamp is the one our last apply wrote is
        kept. Forgetting those cost a read at each one's next scan, which in the first-write
        storm of an empty store (every target written once) queued 10,000 reads behind the
        scans' writes until the connection pool timed out (issue 15's bench). Returns the
        names forgotten.
        """
        if self._store_mark is None:
            self.seen.clear()  # the first call sets the mark: nothing held may predate it
            self._stamps.clear()
        changed, self._store_mark = await self._store.changed_since(self._store_mark)
        forgotten = []
        for name, stamp in changed.items():
            if self._stamps.get(name) == stamp:
                continue  # nobody wrote it after us
            self._stamps.pop(name, None)
            self.seen.pop(name, None)
            forgotten.append(name)
        return frozenset(forgotten)

    async def preload(self, names: list[str]) -> None:
        """Hold the stored state of `names` (one read); an empty one for those never scanned."""
        stored = await self._store.states_of(names)
        self.seen.update({name: stored.get(name) or TargetState(name=name) for name in names})
        # Read after the mark: at least as new as it (an older stamp only costs a re-read).
        self._stamps.update({name: self._store_mark or 0 for name in names})
        # Targets stored up were answering: their first silence in this run is judged too
        # (a restart during an uplink outage must not down them all).
        self.health.seed(n for n, st in stored.items() if st.status is TargetStatus.UP)
        await self._resume_health()

    async def _resume_health(self) -> None:
        """Take up the vantage's shared health: degraded in the store (a restart during an
        outage, or another node of it judged so) is where this node's judgement starts, so
        that its recovery is reported and its silence dropped meanwhile."""
        vantage_name = self._config().fleet.vantage
        stored = (await self._store.vantage_health()).get(vantage_name)
        degraded = stored is not None and stored.degraded
        self._metrics.vantage_up.labels(vantage=vantage_name).set(0 if degraded else 1)
        if stored is not None and degraded and not self.health.degraded:
            self.health.resume_degraded()
            self._degraded_since = stored.since

    def stop_running(self) -> None:
        """Stop every scan in progress; each still records what it finished (incomplete)."""
        for running in list(self._running.values()):
            running.stop()

    def held(self) -> Mapping[str, TargetState]:
        """Quiet scans' states the store may not show yet: held, and the last batch flushed.

        The last batch stays until the next flush: a `/metrics` read of the store just before
        that batch committed, shown just after, would otherwise show every target's last scan
        a minute old (issue 15's bench caught such scrapes). Readers take the newer time.
        """
        return self._last_batch | self.quiet if self._last_batch else self.quiet

    async def flush_quiet(self) -> None:
        """Write the times of quiet scans held since the last flush."""
        batch, self.quiet = self.quiet, {}
        fences, self._quiet_fences = self._quiet_fences, {}
        self._last_batch = batch
        try:
            if self._fence_for is None:
                await self._store.touch(list(batch.values()))
            else:
                refused = await self._store.touch(list(batch.values()), fences=fences)
                if refused:
                    self._metrics.fenced_writes.inc(refused)
                    self.log.warning(
                        "quiet scan times refused: their leases moved on", count=refused
                    )
        except Exception:
            # Keep them for the next flush, unless newer ones arrived meanwhile.
            self.quiet = batch | self.quiet
            self._quiet_fences = fences | self._quiet_fences
            raise

    async def run(
        self,
        target: TargetConfig,
        kind: ScanKind,
        *,
        hold_quiet: bool = True,
        extra_ports: Iterable[int] = (),
    ) -> ScanDone | None:
        """Scan `target`, confirm, fingerprint, evaluate, and apply (or hold) the outcome.

        `hold_quiet=False` writes a quiet scan at once (one somebody asked for and will look up).
        `extra_ports` are scanned besides the kind's own (another vantage's re-probe request).
        """
        config = self._config()
        fence = None
        if self._fence_for is not None:
            fence = self._fence_for(target.name)
            if fence is None:
                return None  # not this node's target (any more): its owner scans it
        # What to scan comes from the last state this service saw (no database round trip);
        # detection below works on the state freshly loaded under the target's lock.
        before = self.seen.get(target.name) or await self._store.load_state(target.name)
        known_open = {p for p, rec in before.ports.items() if rec.state is Observed.OPEN}
        options = dataclasses.replace(
            target.effective_scan(config.scan).scan_options(),
            start_rate=self.connection_rates.get(target.name),
        )
        ports = sorted(set(target.ports_for(kind, ever_open(before))) | set(extra_ports))
        result, overlapped, contended = await self._scan(target, kind, ports, options, known_open)
        if not result.address:
            return None  # stopped before the name resolved: nothing was observed
        self._metrics.record_scan(kind, result)
        self._learn_rate(target.name, result, overlapped)
        if contended:
            self.log.info(
                "silent while another scan of the target was answered: not evidence of an outage",
                target=target.name,
                kind=kind.value,
            )
            return None
        confirmed = await self._confirm(target, result, known_open, options)
        fingerprints = await self._fingerprint(target, kind, result, confirmed, known_open)
        # The look ends after confirmation and fingerprints: dated then, a quick scan whose
        # fingerprints took seconds is not older than the sentinel scans that ran meanwhile.
        looked = dataclasses.replace(result, finished=max(result.finished, self._clock()))
        obs = observation(target.name, kind, looked, confirmed, fingerprints, config.fleet.vantage)
        item = _Pending(target, kind, result, obs, fence, hold_quiet)
        self._judge_with(config)
        await self._settle(self.health.offer(target.name, item, is_silent(obs), time.monotonic()))
        if item.evaluation is None:
            return None  # held behind a silence, dropped (degraded vantage) or refused
        return ScanDone(result, item.evaluation)

    # -- vantage health --------------------------------------------------------------------

    def _judge_with(self, config: Config) -> None:
        """Judge by the running config's parameters (a reload may change them)."""
        if self._health_of is not config:
            self.health.params = health_params(config)
            self._health_of = config

    async def tick_health(self) -> None:
        """Time passed: record silences held for a round; report a health change the store
        missed (call every second or so)."""
        self._judge_with(self._config())
        await self._settle(self.health.tick(time.monotonic()))
        await self._report_health()
        if self._fence_for is not None:
            try:
                health = await self._store.vantage_health()
            except StoreError as exc:  # the last known set stands until the next tick
                self.log.debug("could not read the vantages' health", error=str(exc))
            else:
                self._shared_degraded = frozenset(v for v, st in health.items() if st.degraded)

    async def _settle(self, out: vantage.Outcome[_Pending]) -> None:
        """Queue what the judgement lets through, record it in order; drop the rest."""
        for name, item in out.drop:
            self.log.debug(
                "silent result dropped: the vantage is degraded", target=name, kind=item.kind
            )
        for name, item in out.apply:
            self._ready.setdefault(name, collections.deque()).append(item)
        if out.change is not None:
            self._health_changed(out.change)
            await self._report_health()
        for name in dict.fromkeys(name for name, _ in out.apply):
            await self._drain(name)

    async def _drain(self, name: str) -> None:
        """Record the target's queued results, oldest first, under its lock."""
        async with self.target_lock(name):
            while ready := self._ready.get(name):
                item = ready.popleft()
                if not ready:
                    del self._ready[name]
                await self._record(item)

    def _health_changed(self, change: vantage.Change) -> None:
        vantage_name = self._config().fleet.vantage
        now = self._clock()
        self._metrics.vantage_up.labels(vantage=vantage_name).set(0 if change.degraded else 1)
        if change.degraded:
            self._degraded_since = now
            self.log.warning(
                "vantage degraded: its silent results change no target",
                vantage=vantage_name,
                silent=change.silent,
                answering=change.answering,
            )
        else:
            self.log.info("vantage recovered", vantage=vantage_name, silent=change.silent)
        self._unreported = (change, now)

    async def _report_health(self) -> None:
        """Share the latest health change in the store, with its event (once per vantage)."""
        if self._unreported is None:
            return
        change, at = self._unreported
        config = self._config()
        fleet = config.fleet
        status = VantageStatus(
            fleet.vantage, change.degraded, at, fleet.node_name, change.silent, change.answering
        )
        event = vantage.health_event(status, self._degraded_since)
        route = channels_for_events(config.notify, [event], [])
        try:
            saved = await self._store.set_vantage_health(status, event, route)
        except StoreError as exc:  # tried again at the next tick
            self.log.warning("could not record the vantage's health", error=str(exc))
            return
        if self._unreported is not None and self._unreported[0] is change:
            self._unreported = None
        if saved is not None:
            self.log.info(saved.type.value, vantage=fleet.vantage, summary=saved.summary)
            self._notifier.outbox_written(route(saved))

    def vantage_degraded(self) -> bool:
        """Whether this node judges its vantage degraded now."""
        return self.health.degraded

    # -- recording -------------------------------------------------------------------------

    async def _record(self, item: _Pending) -> None:
        """Evaluate one result and apply (or hold) it; call under the target's lock."""
        config = self._config()
        target, kind, result, fence = item.target, item.kind, item.result, item.fence
        prev = await self._previous_state(target.name)
        policy, degraded, now = target.policy(config.scan), self._degraded_now(), self._clock()
        flaps = target.effective_scan(config.scan).flap_policy()
        rules = self._advisory_rules(config)
        evaluation = evaluate(prev, item.obs, policy, flaps, rules, now, degraded=degraded)
        if item.hold_quiet and is_quiet(result.complete, prev, evaluation):
            self.quiet[target.name] = self.seen[target.name] = evaluation.state
            if fence is not None:
                self._quiet_fences[target.name] = fence
        else:
            record = ScanRecord.from_result(kind, result, config.fleet.vantage)

            def redo(stored: TargetState) -> detect.Evaluation:
                return evaluate(stored, item.obs, policy, flaps, rules, now, degraded=degraded)

            try:
                evaluation = await self._apply(config, record, evaluation, fence, redo)
            except FencedWrite:
                # This node's lease moved on while the scan ran (a pause, a lost
                # database): its owner now writes the target; this result is stale.
                self._metrics.fenced_writes.inc()
                self.let_go([target.name])
                self.log.warning(
                    "scan result refused: the target's lease moved on",
                    target=target.name,
                    kind=kind.value,
                )
                return
        item.evaluation = evaluation
        self._log_recorded(target.name, kind, result, evaluation)
        if evaluation.reboot_suspected and self._on_reboot is not None:
            self._on_reboot(target.name)
        if evaluation.reprobe and self._reprobe is not None and not self._stopping():
            await self._reprobe(target.name, evaluation.reprobe)

    def _degraded_now(self) -> frozenset[str]:
        """The vantages judged degraded: as the store last said (every vantage of the fleet),
        and this node's own judgement of its vantage, which may be newer."""
        own = frozenset({self._config().fleet.vantage}) if self.health.degraded else frozenset()
        return self._shared_degraded | own

    def _advisory_rules(self, config: Config) -> tuple[advisories.Rule, ...]:
        """The config's advisory rules, compiled once per config (a reload makes a new one)."""
        source, rules = self._rules
        if source is not config.advisories:
            rules = advisories.rules_of(config.advisories)
            self._rules = (config.advisories, rules)
        return rules

    def _learn_rate(self, name: str, result: ScanResult, overlapped: bool) -> None:
        """Keep the rate the target accepts for its next scan (and show it as a metric)."""
        learned = kept_rate(self.connection_rates.get(name), result.stats.learned_rate, overlapped)
        if learned is None:
            if self.connection_rates.pop(name, None) is not None:
                self._metrics.forget_connection_rate(name)
        else:
            self.connection_rates[name] = learned
            self._metrics.connection_rate.labels(target=name).set(learned)

    async def _scan(
        self,
        target: TargetConfig,
        kind: ScanKind,
        ports: list[int],
        options: ScanOptions,
        known_open: set[int],
    ) -> tuple[ScanResult, bool, bool]:
        """The result, whether another scan of the target ran meanwhile, and whether this one
        heard nothing while that one was answered (`contended_silence`)."""
        running = self._scanner.start(
            target.address, ports, options, hints=[*target.expected_open, *known_open]
        )
        overlapped = any(name == target.name for name, _, _ in self._running)
        key = (target.name, kind, next(self._scan_numbers))
        self._running[key] = running
        self.log.debug("scan started", target=target.name, kind=kind.value, ports=len(ports))
        try:
            # The engine names results by what it resolved; the store knows the target's name.
            result = dataclasses.replace(await running.wait(), target=target.name)
        except asyncio.CancelledError:
            running.stop()  # wait() is shielded: cancelling it alone would leave it scanning
            raise
        finally:
            self._running.pop(key, None)
        others = [s for (name, _, _), s in self._running.items() if name == target.name]
        contended = contended_silence(
            result, running.started_at, (s.last_answered_at for s in others)
        )
        return result, overlapped or bool(others), contended

    async def _confirm(
        self, target: TargetConfig, result: ScanResult, known_open: set[int], options: ScanOptions
    ) -> set[int]:
        """Open ports that were open before, plus new ones that answered open a second time."""
        open_now = set(result.open)
        new_open = open_now - known_open
        if not self._config().scan.confirm:
            return open_now
        confirmed = open_now & known_open
        if new_open and not self._stopping():
            again = await self._scanner.scan(
                target.name, sorted(new_open), options, address=result.address
            )
            confirmed |= new_open & set(again.open)
        return confirmed

    async def _fingerprint(
        self,
        target: TargetConfig,
        kind: ScanKind,
        result: ScanResult,
        confirmed: set[int],
        known_open: set[int],
    ) -> dict[int, Fingerprint]:
        """Fingerprints of what is new (or of every open port, off sentinel)."""
        scan_config = self._config().scan
        # Sentinel scans look only at what is newly open; quick and full ones look again at
        # every open port, so a new certificate after a reboot (the quick follow-up scan)
        # shows as a firmware change within seconds, not at the next full scan.
        look = confirmed - known_open if kind is ScanKind.SENTINEL else confirmed
        if len(look) > MAX_FINGERPRINTS:
            # A middlebox answering everything (detection calls it an anomaly) would keep us
            # busy for hours; a real router has few open ports.
            look = set(sorted(look)[:MAX_FINGERPRINTS])
        if not look or not scan_config.fingerprint or self._stopping():
            return {}
        with contextlib.suppress(Exception):  # a fingerprint is a hint, never a failure
            return dict(
                await fingerprint_many(
                    result.address,
                    sorted(look),
                    timeout=scan_config.fingerprint_timeout,
                    server_name=None if target.ip is not None else target.address,
                )
            )
        return {}

    async def _previous_state(self, name: str) -> TargetState:
        """The state to evaluate against (call under the target's lock)."""
        seen = self.seen.get(name)
        # Only `exposuremon ack` writes besides this service, and only to an active finding:
        # `refresh_changed` forgets a target it wrote, and an ack that lands between that
        # and this scan's write stands (the store writes only what detection changed).
        if seen is not None:
            stored = seen
        elif self._fence_for is not None:
            stored, self._stamps[name] = await self._store.load_state_stamped(name)
        else:
            stored = await self._store.load_state(name)
        held = self.quiet.get(name)
        # Times of quiet scans not yet written are newer than the stored ones; anything
        # else changed in the store (an ack) wins over what this service holds.
        return held if held and detect.only_time_advanced(stored, held) else stored

    async def _apply(
        self,
        config: Config,
        record: ScanRecord,
        evaluation: detect.Evaluation,
        fence: Fence | None = None,
        redo: Callable[[TargetState], detect.Evaluation] | None = None,
    ) -> detect.Evaluation:
        """Write the evaluation and its outbox rows in one transaction; tell the notifier.

        In a fleet, nodes of other vantages write the same target: if it was written since
        the state this evaluation started from, the store hands `redo` the state stored now
        and writes its outcome instead (returned: the evaluation that was written).
        """
        route = notified_route(config, evaluation.events, evaluation.findings)
        name = evaluation.state.name
        based = self._stamps.get(name, 0) if self._fence_for is not None else None
        redone: list[tuple[detect.Evaluation, Callable[[Event], list[str]]]] = []

        def again(
            stored: TargetState,
        ) -> tuple[TargetState, tuple[Event, ...], tuple[Finding, ...], Route]:
            assert redo is not None
            ev = redo(stored)
            routed = notified_route(config, ev.events, ev.findings)
            redone.append((ev, routed))
            return ev.state, ev.events, ev.findings, routed

        # Decided under the target's lock, which the end of its maintenance also takes: a
        # scan is held and then summed up, or sent; never held after its summary went out.
        hold = self._holding is not None and self._holding(name)
        applied = await self._store.apply(
            record,
            evaluation.state,
            evaluation.events,
            evaluation.findings,
            route,
            fence=fence,
            based_on=based,
            redo=again if redo is not None and based is not None else None,
            hold=hold,
        )
        if applied.redone:
            evaluation, route = redone[-1]
        self.quiet.pop(name, None)
        self.seen[name] = applied.state
        self._stamps[name] = applied.stamp
        if applied.events and not hold:
            self._notifier.outbox_written({c for e in applied.events for c in route(e)})
        return evaluation

    def _log_recorded(
        self, name: str, kind: ScanKind, result: ScanResult, evaluation: detect.Evaluation
    ) -> None:
        self.log.debug(
            "scan recorded",
            target=name,
            kind=kind.value,
            address=result.address,
            complete=result.complete,
            open=len(result.open),
            duration_s=round(result.duration, 3),
        )
        for event in evaluation.events:
            self.log.info(
                event.type.value,
                target=name,
                port=event.port,
                severity=event.severity.label,
                summary=event.summary,
            )
