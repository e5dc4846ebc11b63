"""The daemon's data model: what a scan observed, what we know of a target, what happened.

Plain frozen dataclasses shared by detection (pure), the store (persistence), the API and the
notifier. Times are timezone-aware UTC datetimes. Nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
from collections.abc import Iterator, Mapping
from typing import Any

_DIGITS = re.compile(r"\d+")
# Event details key: the severity by which an event's notification channels are chosen, when
# higher than its own (the end of a flap episode, a cleared advisory: to every channel that
# was told of the beginning).
NOTIFY_AS = "notify_as"
DEFAULT_VANTAGE = "default"  # the vantage of a node whose config names none


class Severity(enum.IntEnum):
    """How urgent an event is; ordered so that `min_severity` filters compare."""

    INFO = 10
    WARNING = 20
    CRITICAL = 30

    @property
    def label(self) -> str:
        """Lower-case name as used in config, JSON and metrics."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        """`info` / `warning` / `critical` (any case)."""
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown severity {text!r} (use info, warning or critical)") from None


class EventType(enum.StrEnum):
    """Every event detection emits (docs/architecture.md "Detection")."""

    PORT_OPENED = "port_opened"
    PORT_CLOSED = "port_closed"
    FINDING_OPENED = "finding_opened"
    FINDING_REOPENED = "finding_reopened"
    FINDING_RESOLVED = "finding_resolved"
    EXPECTED_PORT_CLOSED = "expected_port_closed"
    TARGET_DOWN = "target_down"
    TARGET_UP = "target_up"
    REBOOT_SUSPECTED = "reboot_suspected"
    FINGERPRINT_CHANGED = "fingerprint_changed"
    ADDRESS_CHANGED = "address_changed"
    ANOMALY_ALL_OPEN = "anomaly_all_open"
    # Raised around detection by flap damping (flap.py) and advisories (advisories.py).
    PORT_FLAPPING = "port_flapping"
    PORT_FLAP_ENDED = "port_flap_ended"
    ADVISORY_MATCHED = "advisory_matched"
    ADVISORY_CLEARED = "advisory_cleared"
    # Maintenance windows (schedule/maintenance.py): notifications held, then one summary.
    MAINTENANCE_STARTED = "maintenance_started"
    MAINTENANCE_ENDED = "maintenance_ended"
    VANTAGE_DEGRADED = "vantage_degraded"  # of a vantage, not a target (pipeline.py)
    VANTAGE_RECOVERED = "vantage_recovered"


class ScanKind(enum.StrEnum):
    """The three scan schedules (docs/architecture.md "Scan kinds")."""

    SENTINEL = "sentinel"
    QUICK = "quick"
    FULL = "full"


class Observed(enum.StrEnum):
    """A port's state as the store and detection keep it (the scan's UNKNOWN is never stored)."""

    OPEN = "open"
    CLOSED = "closed"
    FILTERED = "filtered"


class TargetStatus(enum.StrEnum):
    """Liveness of a target: `unknown` until it gave any answer (silence proves nothing)."""

    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


class DeliveryStatus(enum.StrEnum):
    """Where one outbox row stands: waiting for (another) attempt, delivered, or given up."""

    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"


class FindingState(enum.StrEnum):
    """Lifecycle of a finding (an unexpected open port)."""

    OPEN = "open"
    ACKED = "acked"
    RESOLVED = "resolved"


@dataclasses.dataclass(frozen=True, slots=True)
class Fingerprint:
    """A light look at an open port's service; a change hints at a reboot or a new firmware."""

    banner: str | None = None  # first bytes the service sent, decoded leniently, truncated
    tls_sha256: str | None = None  # hex SHA-256 of the DER certificate
    tls_subject: str | None = None
    tls_not_after: dt.datetime | None = None
    http_server: str | None = None  # the `Server` header
    http_title: str | None = None  # the page's <title>
    tls_issuer: str | None = None  # the certificate's issuer (CN, O)

    def identity(self) -> tuple[str | None, ...]:
        """What must stay equal for the service to count as unchanged.

        Digits in a banner are masked: SMTP greetings carry the time and POP3 ones a
        challenge, which change on every connection without any reboot.
        """
        banner = None if self.banner is None else _DIGITS.sub("#", self.banner)[:64]
        return (banner, self.tls_sha256, self.http_server)

    def is_empty(self) -> bool:
        """True when the look learned nothing (a silent service)."""
        return not any(dataclasses.astuple(self))

    def describe(self) -> str:
        """One short line for messages, e.g. `HTTP Server: nginx; TLS CN=router`."""
        parts = []
        if self.http_server:
            parts.append(f"HTTP Server: {self.http_server}")
        if self.http_title:
            parts.append(f"title: {self.http_title}")
        if self.tls_subject:
            parts.append(f"TLS {self.tls_subject}")
        if self.banner and not parts:
            parts.append(f"banner: {self.banner}")
        return "; ".join(parts)


class EvidenceTimes(Mapping[int, dt.datetime]):
    """When each port's evidence was observed: `base` plus seconds per port, made on lookup.

    A full scan finishes 65535 ports; this keeps one float per port instead of a datetime.
    """

    __slots__ = ("_base", "_offsets")

    def __init__(self, base: dt.datetime, offsets: Mapping[int, float]) -> None:
        self._base = base
        self._offsets = offsets

    def __getitem__(self, port: int) -> dt.datetime:
        return self._base + dt.timedelta(seconds=self._offsets[port])

    def __iter__(self) -> Iterator[int]:
        return iter(self._offsets)

    def __len__(self) -> int:
        return len(self._offsets)


@dataclasses.dataclass(frozen=True, slots=True)
class Observation:
    """What one scan of one target saw, as detection consumes it.

    Evidence carries its own time: a long scan that overlaps an outage saw its answers when
    it sent those probes, not when it finished. Where the engine gave no times, detection
    assumes the oldest time the scan can vouch for (`started`).
    """

    target: str
    kind: ScanKind
    address: str  # the address scanned (a hostname is resolved at every scan)
    started: dt.datetime
    finished: dt.datetime
    complete: bool  # False: cancelled or cut short; unfinished ports are simply absent
    states: Mapping[int, Observed]  # the ports the scan finished, nothing else
    confirmed_open: frozenset[int]  # open on the scan AND on the immediate re-probe
    fingerprints: Mapping[int, Fingerprint] = dataclasses.field(default_factory=dict)
    responded: bool = False  # any TCP answer (SYN-ACK or RST) from the target
    # When the probe that decided each port was sent (absent: `started`).
    seen_at: Mapping[int, dt.datetime] = dataclasses.field(default_factory=dict)
    # When the newest probe the target answered was sent (None: `started`, if it answered).
    answered_at: dt.datetime | None = None
    # Filtered ports during whose silence the target answered other probes of this scan;
    # None: not known (then a scan that answered vouches for all its filtered ports).
    filtered_live: frozenset[int] | None = None
    # The target dropped probes that should have answered (a retry answered where the first
    # attempt got nothing, a timing ping to an answering port went unanswered): its silence
    # on other ports proves nothing.
    dropped: bool = False
    # The vantage point the scan ran from ([fleet] vantage; one node alone: "default").
    vantage: str = DEFAULT_VANTAGE


@dataclasses.dataclass(frozen=True, slots=True)
class PortRecord:
    """What we know of one port of one target, with its history counters."""

    port: int
    state: Observed
    first_seen: dt.datetime  # first observation of any state
    last_seen: dt.datetime  # last observation
    last_change: dt.datetime
    times_opened: int = 0
    times_closed: int = 0
    times_reopened: int = 0
    first_open: dt.datetime | None = None
    last_open: dt.datetime | None = None  # last time seen open
    closed_streak: int = 0  # consecutive closed/filtered observations while the target was up
    fingerprint: Fingerprint | None = None
    # When the evidence behind `state` was observed (the probe's send time); None: `last_seen`
    # (records stored before evidence times). Only newer evidence may change the port.
    observed_at: dt.datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    """An unexpected open port. `id` is None until the store has saved it."""

    id: int | None
    target: str
    port: int
    severity: Severity
    state: FindingState
    opened_at: dt.datetime
    resolved_at: dt.datetime | None = None
    reopen_count: int = 0  # how many earlier findings of this port were resolved
    previous_resolved_at: dt.datetime | None = None  # set on a reopened finding
    ack_until: dt.datetime | None = None
    ack_reason: str | None = None
    fingerprint: Fingerprint | None = None
    # With more than one vantage: the vantages by what they last saw of the port, e.g.
    # {"open": ("fra",), "filtered": ("nyc",)}; None with a single vantage. Not hashed (a
    # mapping): the store keys findings by their value while it saves them.
    seen_from: Mapping[str, tuple[str, ...]] | None = dataclasses.field(default=None, hash=False)

    @property
    def is_active(self) -> bool:
        """Open or acknowledged: the port is (believed) still open."""
        return self.state is not FindingState.RESOLVED


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to a target, stored append-only and notified by severity.

    `finding_port` links an event to the finding of that port changed by the same evaluation;
    the store resolves it to `finding_id` when it saves both in one transaction. A vantage's
    event (`vantage_degraded`, `vantage_recovered`) has no target and names its `vantage`.
    """

    type: EventType
    severity: Severity
    target: str | None
    observed_at: dt.datetime
    summary: str
    port: int | None = None
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    finding_id: int | None = None
    id: int | None = None
    vantage: str | None = None  # set on a vantage's events only


@dataclasses.dataclass(frozen=True, slots=True)
class VantageStatus:
    """A vantage's health as shared in the store (vantage.py judges it, one node sets it)."""

    vantage: str
    degraded: bool
    since: dt.datetime
    node: str  # whose judgement set it
    silent: int  # targets silent when it was set
    answering: int  # of the targets that were answering


@dataclasses.dataclass(frozen=True, slots=True)
class Notable:
    """A target-level happening kept so that a reopened finding can say what happened since."""

    type: EventType
    at: dt.datetime
    detail: str = ""  # short human text, e.g. `443/tcp` or `198.51.100.7 -> 203.0.113.9`


@dataclasses.dataclass(frozen=True, slots=True)
class PortFlap:
    """Flap damping's memory of one port (flap.py): its recent changes, and an episode.

    `changes` holds the times of the port's recent state changes (open <-> not open), newest
    last, bounded by the threshold. While `since` is set the port is flapping: its events are
    recorded but not notified until it has been stable for `flap_settle` scans (`stable`).
    """

    changes: tuple[dt.datetime, ...] = ()
    since: dt.datetime | None = None  # when the episode began; None: not flapping
    stable: int = 0  # scans of the port without a change, during an episode
    episode_changes: int = 0  # changes during the episode (the threshold's included)
    severity: Severity = Severity.WARNING  # of the episode's port_flapping (and its end)


@dataclasses.dataclass(frozen=True, slots=True)
class AdvisoryMatch:
    """An advisory rule that matches a target's fingerprints (advisories.py)."""

    since: dt.datetime
    port: int  # the (lowest) port whose fingerprint matched
    severity: Severity
    fingerprint: Fingerprint


@dataclasses.dataclass(frozen=True, slots=True)
class VantagePort:
    """What one vantage last saw of one port: its own evidence, merged by detection."""

    state: Observed
    observed_at: dt.datetime  # when the deciding probe was sent
    closed_streak: int = 0  # consecutive closed/filtered observations from this vantage
    # When this vantage first saw the port in `state` (this run of it); None: `observed_at`.
    since: dt.datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class VantageView:
    """One vantage's latest evidence of a target: liveness, and the ports detection keeps."""

    answered_at: dt.datetime | None = None  # newest answer from this vantage
    silent_until: dt.datetime | None = None  # end of its newest silent scan
    ports: Mapping[int, VantagePort] = dataclasses.field(default_factory=dict)

    def answering(self) -> bool:
        """Whether this vantage's newest liveness evidence is an answer."""
        if self.answered_at is None:
            return False
        return self.silent_until is None or self.answered_at > self.silent_until


@dataclasses.dataclass(frozen=True, slots=True)
class TargetState:
    """Everything detection needs to remember about one target between scans."""

    name: str
    address: str | None = None  # last address scanned
    status: TargetStatus = TargetStatus.UNKNOWN
    status_since: dt.datetime | None = None
    ports: Mapping[int, PortRecord] = dataclasses.field(default_factory=dict)
    # Active findings (open or acked) by port, and the last resolved one of each port.
    findings: Mapping[int, Finding] = dataclasses.field(default_factory=dict)
    resolved: Mapping[int, Finding] = dataclasses.field(default_factory=dict)
    expected_refusing: bool = False  # every expected port refused on the last reachable scan
    last_reboot: dt.datetime | None = None
    last_scan: Mapping[ScanKind, dt.datetime] = dataclasses.field(default_factory=dict)
    reopened_total: int = 0
    reboots_total: int = 0
    # Newest `finished` applied: a result not later than it is late (a replay, or overtaken by
    # a newer scan) and only updates ports no newer scan has seen.
    last_observed: dt.datetime | None = None
    anomaly_since: dt.datetime | None = None  # scans look like a middlebox answers every port
    # Liveness evidence: when the newest answer applied was sent, and until when the newest
    # silent scan applied was silent. Up needs an answer newer than the silence; down needs
    # a silence that began after the newest answer.
    answered_at: dt.datetime | None = None
    silent_until: dt.datetime | None = None
    recent: tuple[Notable, ...] = ()  # newest last, bounded by detection
    # Kept around detection, not by it: flap damping per port (flap.py), and the advisory
    # rules matching now by rule name (advisories.py).
    flaps: Mapping[int, PortFlap] = dataclasses.field(default_factory=dict)
    advisories: Mapping[str, AdvisoryMatch] = dataclasses.field(default_factory=dict)
    # Per vantage, its own latest evidence (detection merges them into the fields above).
    # Empty on a single node of the vantage "default": there the merged state is all there is.
    vantages: Mapping[str, VantageView] = dataclasses.field(default_factory=dict)
