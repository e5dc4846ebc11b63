"""Prometheus metrics of the daemon, in the service's own registry (never the global one).

Counters of work done (probes, scans, notifications) are ordinary prometheus-client metrics
and start from zero with the process. Metrics describing state (open ports, findings, target
up, last scans, reopen and reboot totals) are computed from the store at scrape time by
`StateCollector`, so they are right after a restart. Port labels appear only for open ports
(and ports with an active finding: reopened, acknowledged), which keeps the label sets bounded
by what is actually exposed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Iterator, Mapping
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from exposuremon.config import Config, ScheduleConfig, TargetConfig
from exposuremon.metrics import exposition
from exposuremon.metrics.exposition import Family
from exposuremon.model import FindingState, ScanKind, TargetState, TargetStatus
from exposuremon.scan import ScanResult
from exposuremon.store import GaugeMark, GaugeSnapshot, TargetGauges

PREFIX = "exposuremon"
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_LAG_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 300, 900, 3600)


class Metrics:
    """The work counters; one instance per service, each with a fresh registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.probes = Counter(
            f"{PREFIX}_probes",
            "TCP connect probes by outcome (open, closed, filtered answers and timeouts).",
            ["result"],
            registry=self.registry,
        )
        self.scan_duration = Histogram(
            f"{PREFIX}_scan_duration_seconds",
            "Wall-clock duration of scans by kind.",
            ["kind"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.scans = Counter(
            f"{PREFIX}_scans",
            "Scans finished by kind and whether they completed.",
            ["kind", "complete"],
            registry=self.registry,
        )
        self.scans_late = Counter(
            f"{PREFIX}_scans_late",
            "Scans that started more than 15 s after they were due, or did not run at all "
            "because the previous run of the same scan was still going, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.scan_lag = Histogram(
            f"{PREFIX}_scan_lag_seconds",
            "How long after it was due each scan started (waiting for the loop or a slot), "
            "by kind.",
            ["kind"],
            buckets=_LAG_BUCKETS,
            registry=self.registry,
        )
        for kind in ScanKind:  # zero from the start, so that increase() sees the first one
            self.scans_late.labels(kind=kind.value)
            self.scan_lag.labels(kind=kind.value)
        self.notifications = Counter(
            f"{PREFIX}_notifications",
            "Notification delivery attempts by channel and result: sent, failed (will be "
            "retried) or dead (given up: permanent error or retry horizon passed).",
            ["channel", "result"],
            registry=self.registry,
        )
        self.start_time = Gauge(
            f"{PREFIX}_start_time_seconds",
            "When this daemon process started (unix seconds); alerts use it as uptime.",
            registry=self.registry,
        )
        self.start_time.set_to_current_time()
        self.reload_failures = Counter(
            f"{PREFIX}_config_reload_failures",
            "Config reloads (SIGHUP) rejected: the file was invalid or something it needs could "
            "not be built; the previous config runs on.",
            registry=self.registry,
        )
        self.reload_successful = Gauge(
            f"{PREFIX}_config_last_reload_successful",
            "1 when the last config reload was applied (or none was tried), 0 when it was "
            "rejected and the previous config runs on.",
            registry=self.registry,
        )
        self.reload_successful.set(1)
        self.connection_rate = Gauge(
            f"{PREFIX}_target_accepted_connection_rate",
            "New connections per second a target accepts, where the scans found it limits them "
            "(SYN-flood protection); scans of it are paced to this rate. Absent: no limit seen.",
            ["target"],
            registry=self.registry,
        )
        self.maintenance = Gauge(
            f"{PREFIX}_maintenance",
            "1 while the target is in a maintenance window (notifications held), else 0. "
            "Alert rules use it to stay quiet during windows.",
            ["target"],
            registry=self.registry,
        )
        # Fleet mode (docs/fleet.md): the lease keeper sets the first four, whoever catches
        # a FencedWrite counts it.
        self.shards_held = Gauge(
            f"{PREFIX}_shards_held",
            "Shards of targets this node holds a lease on (it scans only their targets).",
            registry=self.registry,
        )
        self.lease_takeovers = Counter(
            f"{PREFIX}_lease_takeovers",
            "Shard leases this node took over from a previous holder (a dead, paused or "
            "departing node, or its own lapsed lease).",
            registry=self.registry,
        )
        self.fleet_nodes = Gauge(
            f"{PREFIX}_fleet_nodes",
            "Live nodes of a vantage (heartbeat within lease_ttl), as this node last saw them; "
            "every vantage of the fleet, so aggregate with max by (vantage).",
            ["vantage"],
            registry=self.registry,
        )
        self.fleet_shards = Gauge(
            f"{PREFIX}_fleet_shards",
            "The fixed number of shards targets hash into, labelled with this node's vantage: "
            "the shards_held of a vantage's nodes add up to it when every shard is held.",
            ["vantage"],
            registry=self.registry,
        )
        self.vantage_up = Gauge(
            f"{PREFIX}_vantage_up",
            "1 while this node's vantage is up, 0 while its scans went silent for most of the "
            "targets that answered it (degraded: its silent results change no target). "
            "One series per node, so aggregate with min by (vantage).",
            ["vantage"],
            registry=self.registry,
        )
        self.fenced_writes = Counter(
            f"{PREFIX}_fenced_writes",
            "Scan results the store refused because their shard's lease had moved on (this "
            "node was paused or cut off past its lease); nothing of them was written.",
            registry=self.registry,
        )
        self.build_info = Gauge(
            f"{PREFIX}_build_info",
            "Always 1; the version label says which exposuremon runs.",
            ["version"],
            registry=self.registry,
        )
        self.build_info.labels(version=build_version()).set(1)

    def forget_connection_rate(self, target: str) -> None:
        """A target no longer shows a connection-rate limit: drop its series."""
        with contextlib.suppress(KeyError):
            self.connection_rate.remove(target)

    def record_start(self, kind: ScanKind, lag: float, late: bool) -> None:
        """A scan started `lag` s after it was due (`late`: past the threshold)."""
        self.scan_lag.labels(kind=kind.value).observe(max(0.0, lag))
        if late:
            self.scans_late.labels(kind=kind.value).inc()

    def record_skipped(self, kind: ScanKind) -> None:
        """A scheduled scan did not run: the previous run of it was still going."""
        self.scans_late.labels(kind=kind.value).inc()

    def record_scan(self, kind: ScanKind, result: ScanResult) -> None:
        """Count one finished scan and its probes."""
        stats = result.stats
        self.scan_duration.labels(kind=kind.value).observe(result.duration)
        self.scans.labels(kind=kind.value, complete=str(result.complete).lower()).inc()
        counts = result.counts
        for label in ("open", "closed", "filtered"):
            if counts[label]:
                self.probes.labels(result=label).inc(counts[label])
        if stats.timeouts:
            self.probes.labels(result="timeout").inc(stats.timeouts)


def build_version() -> str:
    """This installation's version (the package metadata), "unknown" outside one."""
    try:
        return metadata.version("exposuremon")
    except metadata.PackageNotFoundError:
        return "unknown"


Read = Callable[[GaugeMark | None], Awaitable[GaugeSnapshot]]  # e.g. `Store.gauges`
_FINDING_STATES = tuple(state.value for state in FindingState)
_KINDS = tuple(ScanKind)  # iterating an Enum class costs more than the line it names
_MICROS = 1e6


class StateCollector(Collector):
    """State gauges from the store, read by `refresh()` just before each scrape.

    Only configured targets are shown: a target removed from the config keeps its history
    in the store, but its open ports must not keep alerts firing. Every configured target
    has its zero-valued series (unexpected ports, findings, totals) from the first scrape,
    so `increase()` sees the first reopen and an absent series never hides a target.

    Incremental: the first `refresh()` reads every target, later ones only the targets the
    store stamped as written since (their rows, or only their scan times). Each target's
    lines are kept as one piece per family and remade only when what they show changed, so
    a scrape of 10,000 targets costs their join, not their rendering.
    """

    def __init__(
        self,
        read: Read,
        config: Callable[[], Config],
        held: Callable[[], Mapping[str, TargetState]] = dict,
        owns: Callable[[str], bool] = lambda _name: True,
    ) -> None:
        self._read = read
        self._config = config
        # In a fleet every node reads the whole store, but shows only the targets whose shard
        # it holds: each state series appears once across the fleet, so alerts fire once.
        self._owns = owns
        # Quiet scans the service has not written yet: their times are newer.
        self._held = held
        self._mark: GaugeMark | None = None  # None: the next read is a full one
        self._rows: dict[str, TargetGauges] = {}  # every stored target, as of the last read
        self._times: dict[str, Mapping[str, int]] = {}  # kind -> micros, as of the last read
        self._pending = 0
        self._pieces: dict[str, _Piece] = {}
        # Concurrent scrapes read one after the other: each read starts at the last one's
        # mark, and an older read can never overwrite a newer one's rows.
        self._reading = asyncio.Lock()

    async def refresh(self) -> None:
        """Read what changed in the store; the next `collect()` shows this snapshot."""
        async with self._reading:
            snap = await self._read(self._mark)
            if snap.complete:
                self._rows, self._times = {}, {}
            self._rows.update(snap.rows)
            # A re-read row brings its times; a new object either way (pieces compare identity).
            self._times.update((name, row.last_scan) for name, row in snap.rows.items())
            self._times.update(snap.times)
            self._pending = snap.pending
            self._mark = snap.mark

    def describe(self) -> Iterator[Metric]:
        """The families (without samples), so registering does not read the store."""
        return _parse(exposition.render(_Families().all(), openmetrics=False))

    def collect(self) -> Iterator[Metric]:
        """The families as prometheus-client metrics (scrapes use the faster `render`)."""
        return _parse(self.render(False).decode())

    def render(self, openmetrics: bool) -> bytes:
        """The families in the text format or OpenMetrics, from the last `refresh()`."""
        return exposition.render(self.families(), openmetrics=openmetrics).encode()

    def families(self) -> list[Family]:
        """The state families from the last `refresh()`, one sample set per configured target."""
        rows, times = self._rows, self._times
        held = self._held()
        config = self._config()
        f = _Families()
        pieces: dict[str, _Piece] = {}
        owns = self._owns
        for target in config.targets:
            name = target.name
            if not owns(name):
                continue
            row = rows.get(name, _UNSCANNED)
            stamped = times.get(name, _NO_TIMES)
            newer = held.get(name)
            piece = self._pieces.get(name)
            # Most targets are unchanged between scrapes: their pieces are reused as they are;
            # identity tells (a re-read row or times is a new object, so is a reloaded target).
            if piece is None or piece.target is not target:
                schedule = target.effective_schedule(config.schedule)
                piece = _Piece(target, row, _static_lines(f, target.name, schedule, row))
            elif piece.row is not row:
                if piece.row != row:  # re-read, but an apply may have changed only times
                    schedule = target.effective_schedule(config.schedule)
                    piece.lines = _static_lines(f, target.name, schedule, row)
                piece.row = row
            if piece.times is not stamped or piece.held is not newer or piece.time_lines is None:
                piece.times, piece.held = stamped, newer
                piece.time_lines = _time_lines(f, name, stamped, newer)
            pieces[name] = piece
        self._pieces = pieces
        ordered = list(pieces.values())
        for i, family in enumerate(f.static()):
            family.lines = [p.lines[i] for p in ordered]
        f.last_scan.lines = [p.time_lines or "" for p in ordered]
        f.outbox.add((), self._pending)
        return f.all()


@dataclasses.dataclass(slots=True, eq=False)
class _Piece:
    """One target's lines, one string per family, and what they were made from."""

    target: TargetConfig
    row: TargetGauges
    lines: tuple[str, ...]  # per family of `_Families.static()`
    times: Mapping[str, int] | None = None
    held: TargetState | None = None
    time_lines: str | None = None  # of the last-scan family; None until made


_UNSCANNED = TargetGauges(TargetStatus.UNKNOWN.value, {}, 0, 0)
_NO_TIMES: Mapping[str, int] = {}


def _static_lines(
    f: _Families, target: str, schedule: ScheduleConfig, row: TargetGauges
) -> tuple[str, ...]:
    """One target's lines of each of `f.static()`, in that order, each family's as one string."""
    name = exposition.escape(target)
    number = exposition.number
    unexpected = f.unexpected.template
    port_open = f.port_open.template
    up = ""
    if row.status != TargetStatus.UNKNOWN.value:  # never answered nor failed: no guess
        up = f.up.template.format(name, 1 if row.status == TargetStatus.UP.value else 0)
    return (
        "".join([port_open.format(name, port, 1) for port in row.open_ports]),
        "".join([unexpected.format(name, port, severity, 1) for port, severity in row.unexpected]),
        "".join([f.port_reopened.template.format(name, port, 1) for port in row.reopened_ports]),
        "".join([f.port_acked.template.format(name, port, 1) for port in row.acked_ports]),
        f.unexpected_n.template.format(name, len(row.unexpected)),
        "".join([f.flapping.template.format(name, port, 1) for port in row.flapping]),
        up,
        "".join(
            [f.findings.template.format(name, s, row.findings.get(s, 0)) for s in _FINDING_STATES]
        ),
        f.reopened.template.format(name, row.reopened_total),
        f.reboots.template.format(name, row.reboots_total),
        "".join(
            [
                f.interval.template.format(name, kind.value, number(schedule.interval(kind)))
                for kind in _KINDS
            ]
        ),
    )


def _time_lines(
    f: _Families, target: str, stored: Mapping[str, int], held: TargetState | None
) -> str:
    """One target's last-scan lines: the stored times, or the held ones where newer."""
    times = {kind: micros / _MICROS for kind, micros in stored.items()}
    if held is not None:
        for kind, when in held.last_scan.items():
            times[kind.value] = max(times.get(kind.value, 0.0), when.timestamp())
    name = exposition.escape(target)
    template, number = f.last_scan.template, exposition.number
    return "".join([template.format(name, kind, number(s)) for kind, s in sorted(times.items())])


def _parse(text: str) -> Iterator[Metric]:
    # prometheus-client's own parser: what `collect()` yields is exactly what was served.
    return iter(text_string_to_metric_families(text))


class _Families:
    """A fresh set of the state metric families (one per scrape)."""

    def __init__(self) -> None:
        p = PREFIX
        self.port_open = Family(
            f"{p}_port_open", "gauge", "1 for each open port of a target.", ("target", "port")
        )
        self.unexpected = Family(
            f"{p}_port_unexpected",
            "gauge",
            "1 for each open port that is not expected (an active finding), by severity.",
            ("target", "port", "severity"),
        )
        # Per port, and only for ports with such a finding (bounded like port_unexpected): the
        # reopen alert is exact per port and silenced per acknowledged port.
        self.port_reopened = Family(
            f"{p}_port_reopened",
            "gauge",
            "1 for each port whose active finding is a reopen (a port closed before that is "
            "open again), acknowledged or not; absent otherwise.",
            ("target", "port"),
        )
        self.port_acked = Family(
            f"{p}_port_acked",
            "gauge",
            "1 for each port whose active finding is acknowledged (silenced until its expiry); "
            "absent otherwise.",
            ("target", "port"),
        )
        self.unexpected_n = Family(
            f"{p}_unexpected_open_ports",
            "gauge",
            "How many unexpected ports of a target are open (active findings).",
            ("target",),
        )
        self.flapping = Family(
            f"{p}_port_flapping",
            "gauge",
            "1 for each port of a target in a flapping episode (its changes are recorded, not "
            "notified, until it is stable for flap_settle scans).",
            ("target", "port"),
        )
        self.up = Family(
            f"{p}_target_up",
            "gauge",
            "1 when the target answered its last scan, 0 when it did not (absent until known).",
            ("target",),
        )
        self.findings = Family(
            f"{p}_findings", "gauge", "Findings of a target by state.", ("target", "state")
        )
        self.reopened = Family(
            f"{p}_findings_reopened",
            "counter",
            "Findings reopened: a port that had been closed was seen open again (kept in the "
            "store, so it survives restarts).",
            ("target",),
        )
        self.reboots = Family(
            f"{p}_reboots_suspected",
            "counter",
            "Reboots suspected from the target going down and up or its open ports changing.",
            ("target",),
        )
        self.last_scan = Family(
            f"{p}_last_scan_success_timestamp_seconds",
            "gauge",
            "When the last complete scan of each kind finished (unix seconds).",
            ("target", "kind"),
        )
        self.interval = Family(
            f"{p}_schedule_interval_seconds",
            "gauge",
            "The configured interval of each scan kind per target (for staleness alerts).",
            ("target", "kind"),
        )
        self.outbox = Family(
            f"{p}_outbox_pending", "gauge", "Notification deliveries waiting to be sent.", ()
        )

    def static(self) -> list[Family]:
        """The families whose lines depend only on the stored row and the target's config."""
        return [
            self.port_open,
            self.unexpected,
            self.port_reopened,
            self.port_acked,
            self.unexpected_n,
            self.flapping,
            self.up,
            self.findings,
            self.reopened,
            self.reboots,
            self.interval,
        ]

    def all(self) -> list[Family]:
        """Every family, in exposition order."""
        return [*self.static(), self.last_scan, self.outbox]
