"""Pure rendering of a scan result for the `scan` command: a JSON document and a rich table."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from exposuremon.scan.nmapxml import NmapHost, NmapPort, nmap_run
from exposuremon.scan.ports import HOT_PORTS
from exposuremon.scan.result import PortState, ScanResult
from exposuremon.units import format_duration, rfc3339

if TYPE_CHECKING:
    from rich.console import RenderableType

# nmap lists the ports of a state one by one up to this many, and counts them past it.
EXTRAPORTS_MIN = 25


def unexpected_open(result: ScanResult, expected: Collection[int] | None) -> tuple[int, ...]:
    """Open ports not in `expected` (none when no expectation was given)."""
    if expected is None:
        return ()
    return tuple(p for p in result.open if p not in expected)


def result_json(result: ScanResult, expected: Collection[int] | None = None) -> dict[str, Any]:
    """The `scan --json` document: a stable shape that scripts can rely on."""
    doc: dict[str, Any] = {
        "target": result.target,
        "address": result.address,
        "started_at": rfc3339(result.started, "milliseconds"),
        "finished_at": rfc3339(result.finished, "milliseconds"),
        "duration_s": round(result.duration, 3),
        "complete": result.complete,
        "ports_scanned": len(result.ports),
        "open": list(result.open),
        "counts": result.counts,
        "stats": {
            "probes_sent": result.stats.probes_sent,
            "answered": result.stats.answered,
            "timeouts": result.stats.timeouts,
            "retries": result.stats.retries,
            "srtt_ms": None if result.stats.srtt is None else round(result.stats.srtt * 1000, 3),
            "drops": result.stats.drops,
            "rate_limited": result.stats.rate_limited,
            "learned_rate": _rate(result.stats.learned_rate),
        },
    }
    if expected is not None:
        doc["expected_open"] = sorted(expected)
        doc["unexpected_open"] = list(unexpected_open(result, expected))
        doc["expected_not_open"] = sorted(p for p in expected if p not in set(result.open))
    return doc


def result_nmap_xml(
    result: ScanResult, args: str, version: str, expected: Collection[int] | None = None
) -> str:
    """The `scan --format nmap-xml` / `-oX` document: nmap's XML for one host (nmapxml.py).

    Open ports are listed; closed and filtered ones too while there are at most
    `EXTRAPORTS_MIN` of a state, else they are counted as `<extraports>`, as nmap does; ports
    the scan did not finish are left out. With `expected`, each open port carries an
    `exposuremon` script result: `verdict: expected` or `verdict: unexpected`.
    """
    ports = [
        NmapPort(port, "open", verdict="" if expected is None else _verdict(port, expected))
        for port in result.open
    ]
    extraports = {}
    for state in (PortState.CLOSED, PortState.FILTERED):
        found = result.ports_in(state)
        if len(found) > EXTRAPORTS_MIN:
            extraports[state.label] = len(found)
        else:
            ports += [NmapPort(port, state.label) for port in found]
    host = NmapHost(
        address=result.address,
        # No answer at all: nmap's "down" (it would not have scanned the host without -Pn).
        status="up" if result.responded else "down",
        hostname=None if result.target == result.address else result.target,
        ports=ports,
        extraports=extraports,
        started=result.started,
        finished=result.finished,
    )
    return nmap_run(
        [host],
        args=args,
        version=version,
        started=result.started,
        finished=result.finished,
        ports=result.ports,
    )


def _verdict(port: int, expected: Collection[int]) -> str:
    return "expected" if port in expected else "unexpected"


def _rate(rate: float | None) -> float | None:
    return None if rate is None else round(rate, 1)


def rate_limit_note(result: ScanResult) -> str | None:
    """One line for a person when the target limits new connections (SYN-flood protection)."""
    stats = result.stats
    if not stats.rate_limited:
        return None
    if stats.learned_rate is None:
        return "target dropped connections over a rate limit; scan paced"
    rate = stats.learned_rate
    shown = f"{rate:.0f}" if rate >= 10 else f"{rate:.1f}"
    return f"target limits new connections to ~{shown}/s; scan paced"


def result_table(result: ScanResult, expected: Collection[int] | None = None) -> RenderableType:
    """Open ports as a table, then one summary line of counts by state."""
    # Imported here: rich costs ~40 ms of start-up that `scan --json` need not pay.
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{result.target} ({result.address})", title_justify="left")
    table.add_column("port", justify="right")
    table.add_column("state")
    table.add_column("note")
    for port in result.open:
        notes = []
        if expected is not None:
            notes.append("expected" if port in expected else "UNEXPECTED")
        if port in HOT_PORTS:
            notes.append("hot/admin port")
        style = "bold red" if expected is not None and port not in expected else ""
        table.add_row(str(port), "open", ", ".join(notes), style=style)
    counts = result.counts
    summary = Text(
        f"{len(result.ports)} ports in {format_duration(result.duration)}: "
        f"{counts['open']} open, {counts['closed']} closed, {counts['filtered']} filtered"
    )
    if counts["unknown"]:
        summary.append(f", {counts['unknown']} not finished", style="yellow")
    if not result.complete:
        summary.append(" (INCOMPLETE scan)", style="bold yellow")
    if expected is not None:
        missing = sorted(p for p in expected if p not in set(result.open))
        if missing:
            summary.append(f"\nexpected but not open: {', '.join(map(str, missing))}")
    if not result.open:
        return Group(Text(f"{result.target} ({result.address}): no open ports"), summary)
    return Group(table, summary)
