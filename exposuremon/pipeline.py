"""The path of one scan, in the order it runs: the daemon's only way from a probe to a message.

1. **scan**: the engine probes the target's ports (`scan/engine.py`, `scan/target.py`).
2. **confirm**: ports newly seen open are probed once more, so one odd answer pages nobody.
3. **fingerprint**: what is newly open (every open port on quick and full scans) is looked at
   (`scan/fingerprint.py`): banner, TLS certificate, HTTP Server header.
4. **observation**: the engine's result becomes detection's input (`observation`, `model.py`).
5. **evaluate**: `detect.evaluate` (pure) turns the previous state and the observation into an
   `Evaluation`: the new state, the events and the findings created or changed.
6. **apply or hold**: a scan after which only time passed (of any kind) is held in memory and
   its times are written in batches (`flush_quiet`). Anything else goes to the store in one
   transaction (`store.Store.apply`): the state, the findings, the events, and one outbox row
   per event and notification channel (`notify.channels_for_events` picks the channels).
7. **notify**: the notifier is told which channels have new outbox rows
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
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Protocol

from exposuremon import detect
from exposuremon.config import Config, TargetConfig
from exposuremon.logs import get_logger
from exposuremon.metrics import Metrics
from exposuremon.model import (
    EvidenceTimes,
    Fingerprint,
    Observation,
    Observed,
    ScanKind,
    TargetState,
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
from exposuremon.store import Fence, FencedWrite, ScanRecord, Store

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
        **times,
    )


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
    ) -> None:
        self._config = config  # a callable: a reload replaces the config between scans
        # Fleet mode: the lease a target's results are written under (None: its shard is not
        # this node's). Taken when a scan starts, so a result is written only under the lease
        # it was observed under. None (one node): every target is ours, writes unfenced.
        self._fence_for = fence_for
        self._quiet_fences: dict[str, Fence] = {}
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
        self._running: dict[tuple[str, ScanKind], TargetScan] = {}
        self._store_mark: int | None = None  # the store's change stamp `seen` is current with
        self._locks: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(
            asyncio.Lock
        )

    @contextlib.asynccontextmanager
    async def target_lock(self, name: str) -> AsyncIterator[None]:
        """Held while a target's state is read, evaluated and written (scans and acks)."""
        async with self._locks[name]:
            yield

    def forget(self, name: str) -> None:
        """Drop what is held of a target: its next scan reads the store (after an ack)."""
        self.seen.pop(name, None)

    def let_go(self, names: Iterable[str]) -> None:
        """Targets whose shard changed hands (fleet): drop everything held of them.

        Another node may write them meanwhile, so what this node holds is no longer the
        state to start from; quiet times not flushed yet are lost (a minute at most).
        """
        for name in names:
            self.seen.pop(name, None)
            self.quiet.pop(name, None)
            self._quiet_fences.pop(name, None)

    async def refresh_changed(self) -> frozenset[str]:
        """Forget what is held of targets written by someone else since the last call.

        Besides this service only `exposuremon ack` (another process) writes a target's
        state. Asking the store which targets changed, once per sweep tick, replaces a read
        of every state with a finding before each of its scans. Our own writes come back too;
        forgetting those costs one read at their next scan. Returns the names forgotten.
        """
        if self._store_mark is None:
            self.seen.clear()  # the first call sets the mark: nothing held may predate it
        changed, self._store_mark = await self._store.changed_since(self._store_mark)
        for name in changed:
            self.seen.pop(name, None)
        return changed

    async def preload(self, names: list[str]) -> None:
        """Hold the stored state of `names` (one read); an empty one for those never scanned."""
        stored = await self._store.states_of(names)
        self.seen.update({name: stored.get(name) or TargetState(name=name) for name in names})

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
        self, target: TargetConfig, kind: ScanKind, *, hold_quiet: bool = True
    ) -> ScanDone | None:
        """Scan `target`, confirm, fingerprint, evaluate, and apply (or hold) the outcome.

        `hold_quiet=False` writes a quiet scan at once (one somebody asked for and will look up).
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
        ports = sorted(target.ports_for(kind, ever_open(before)))
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
        obs = observation(target.name, kind, looked, confirmed, fingerprints)
        async with self.target_lock(target.name):
            prev = await self._previous_state(target.name)
            evaluation = detect.evaluate(prev, obs, target.policy(config.scan), self._clock())
            if hold_quiet and is_quiet(result.complete, prev, evaluation):
                self.quiet[target.name] = self.seen[target.name] = evaluation.state
                if fence is not None:
                    self._quiet_fences[target.name] = fence
            else:
                record = ScanRecord.from_result(kind, result, config.fleet.vantage)
                try:
                    await self._apply(config, record, evaluation, fence)
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
                    return None
        self._log_recorded(target.name, kind, result, evaluation)
        return ScanDone(result, evaluation)

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
        overlapped = any(name == target.name for name, _ in self._running)
        self._running[(target.name, kind)] = running
        self.log.debug("scan started", target=target.name, kind=kind.value, ports=len(ports))
        try:
            # The engine names results by what it resolved; the store knows the target's name.
            result = dataclasses.replace(await running.wait(), target=target.name)
        except asyncio.CancelledError:
            running.stop()  # wait() is shielded: cancelling it alone would leave it scanning
            raise
        finally:
            self._running.pop((target.name, kind), None)
        others = [s for (name, _), s in self._running.items() if name == target.name]
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
        stored = seen if seen is not None else await self._store.load_state(name)
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
    ) -> None:
        """Write the evaluation and its outbox rows in one transaction; tell the notifier."""
        route = channels_for_events(config.notify, evaluation.events, evaluation.findings)
        applied = await self._store.apply(
            record, evaluation.state, evaluation.events, evaluation.findings, route, fence=fence
        )
        name = evaluation.state.name
        self.quiet.pop(name, None)
        self.seen[name] = applied.state
        if applied.events:
            self._notifier.outbox_written({c for e in applied.events for c in route(e)})

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
