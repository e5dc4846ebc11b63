"""What a scan produces: per-port states in a compact table, plus what the engine learned."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Iterator, Mapping, Sequence


class PortState(enum.IntEnum):
    """Outcome of probing one TCP port. UNKNOWN means the scan never finished that port."""

    UNKNOWN = 0
    OPEN = 1
    CLOSED = 2
    FILTERED = 3

    @property
    def label(self) -> str:
        """Lower-case name as used in JSON and metrics."""
        return self.name.lower()


@dataclasses.dataclass(frozen=True, slots=True)
class ScanStats:
    """Counters of the engine's work on one scan (for metrics and for tuning)."""

    probes_sent: int = 0
    answered: int = 0
    timeouts: int = 0
    retries: int = 0
    loss_events: int = 0
    resource_waits: int = 0
    srtt: float | None = None
    timeout: float = 0.0
    max_cwnd: int = 0
    # Connects per second the target accepts, when the scan found it limits new connections
    # (SYN-flood protection) or started from an earlier scan's rate; pass it to the next scan
    # of this target as `ScanOptions.start_rate`. None: no limit known.
    learned_rate: float | None = None
    rate_limited: bool = False  # this scan saw the target drop connects over a rate limit
    drops: int = 0  # probes the target dropped, shown by a later attempt that was answered


@dataclasses.dataclass(frozen=True, slots=True)
class Evidence:
    """When the scan saw what it saw, in seconds after `ScanResult.started` (issue 13).

    `sent`: per finished port, when the probe that decided it was sent (an answered attempt;
    for a filtered port its first attempt). `answered`: when the newest probe the target
    answered was sent. `filtered_live`: filtered ports during whose silence the target
    answered other probes of this scan.
    """

    sent: Mapping[int, float] = dataclasses.field(default_factory=dict)
    answered: float | None = None
    filtered_live: frozenset[int] = frozenset()


@dataclasses.dataclass(frozen=True, slots=True)
class ScanResult:
    """The states of the ports a scan finished; unfinished ports are UNKNOWN, never CLOSED."""

    target: str
    address: str
    ports: Sequence[int]
    started: dt.datetime
    finished: dt.datetime
    complete: bool
    # One byte per port number (index = port) up to the highest port scanned, holding a
    # PortState; ports past its end are UNKNOWN.
    table: bytes
    stats: ScanStats = dataclasses.field(default_factory=ScanStats)
    evidence: Evidence | None = None  # None: a result made without evidence times

    def state(self, port: int) -> PortState:
        """State of one port (UNKNOWN when it was not scanned or not finished)."""
        table = self.table
        return PortState(table[port]) if 0 <= port < len(table) else PortState.UNKNOWN

    def items(self) -> Iterator[tuple[int, PortState]]:
        """(port, state) for every scanned port, in port order, unfinished ones as UNKNOWN."""
        table = self.table
        for port in sorted(self.ports):
            yield port, PortState(table[port])

    def ports_in(self, state: PortState) -> tuple[int, ...]:
        """Sorted ports in the given state."""
        table = self.table
        return tuple(p for p in sorted(self.ports) if table[p] == state)

    @property
    def open(self) -> tuple[int, ...]:
        """Sorted open ports."""
        return self.ports_in(PortState.OPEN)

    @property
    def counts(self) -> dict[str, int]:
        """How many ports ended in each state (unknown = not finished)."""
        totals = [0, 0, 0, 0]
        table = self.table
        for p in self.ports:
            totals[table[p]] += 1
        return {
            s.label: totals[s] for s in (PortState.OPEN, PortState.CLOSED, PortState.FILTERED)
        } | {"unknown": totals[PortState.UNKNOWN]}

    @property
    def responded(self) -> bool:
        """True when the target gave any TCP answer (SYN-ACK or RST): evidence it is up."""
        return self.stats.answered > 0

    @property
    def duration(self) -> float:
        """Wall-clock seconds from start to finish."""
        return (self.finished - self.started).total_seconds()
