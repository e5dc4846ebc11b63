"""The scan pipeline's pure decisions: contended silences, and the connection rate to keep."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from exposuremon.config import parse_config
from exposuremon.model import Event, EventType, Severity
from exposuremon.pipeline import contended_silence, kept_rate, notified_route
from exposuremon.scan import PortState, ScanResult, ScanStats

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
PORTS = (80, 443, 8080)
rates = st.none() | st.floats(0.5, 50_000)


def result(answered: int) -> ScanResult:
    """A scan of three ports; silent (filtered everywhere) unless something answered."""
    state = PortState.OPEN if answered else PortState.FILTERED
    table = bytearray(65536)
    for port in PORTS:
        table[port] = int(state)
    stats = ScanStats(answered=answered)
    return ScanResult("r", "198.18.0.2", PORTS, NOW, NOW, True, bytes(table), stats)


def test_a_silence_while_another_scan_is_answered_is_no_outage() -> None:
    """A sentinel that heard nothing while the quick scan of the same router was answered
    (both drew on the router's bucket) is contended: no evidence that the router is down."""
    assert contended_silence(result(0), started_at=100.0, others_answered_at=[100.5])


def test_a_real_silence_stays_evidence() -> None:
    """Silence with no other scan running, or one answered only before this scan began, or one
    never answered, is a real silence; a scan that was answered is never contended."""
    assert not contended_silence(result(0), 100.0, [])
    assert not contended_silence(result(0), 100.0, [99.0])
    assert not contended_silence(result(0), 100.0, [None])
    assert not contended_silence(result(3), 100.0, [100.5])


@given(started=st.floats(0, 1e6), others=st.lists(st.none() | st.floats(0, 1e6), max_size=3))
def test_contended_means_silent_and_another_answered_meanwhile(
    started: float, others: list[float | None]
) -> None:
    """Contended exactly when this scan was silent and another one was answered after it began."""
    expected = any(at is not None and at >= started for at in others)
    assert contended_silence(result(0), started, others) is expected
    assert contended_silence(result(1), started, others) is False


@given(stored=rates, learned=rates)
def test_a_scan_alone_has_the_last_word(stored: float | None, learned: float | None) -> None:
    """A scan that ran alone sets the kept rate to what it learned, even to none."""
    assert kept_rate(stored, learned, overlapped=False) == learned


@given(stored=rates, learned=rates)
def test_a_scan_sharing_the_bucket_never_lowers_the_rate(
    stored: float | None, learned: float | None
) -> None:
    """A scan that shared the target's bucket with another may raise the kept rate, not lower
    it, and does not forget it: it saw only its share of the tokens."""
    kept = kept_rate(stored, learned, overlapped=True)
    if stored is not None:
        assert kept is not None
        assert kept >= stored
    if learned is not None:
        assert kept is not None
        assert kept >= learned


def test_held_events_go_to_no_channel_and_bring_no_context() -> None:
    """A held event (of a flapping port) has no channel and makes no channel busy, so a
    target-level event of the same scan is not dragged along; an end with `notify_as` goes
    to the channels of its beginning's severity."""
    config = parse_config(
        '[[targets]]\nname = "t"\naddress = "198.51.100.7"\n'
        '[[notify]]\nname = "pager"\ntype = "webhook"\nurl = "https://hook.example/x"\n'
        'min_severity = "critical"\n',
        Path("."),
    )
    now = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)

    def event(type_: EventType, severity: Severity, port: int | None, **details: str) -> Event:
        return Event(type_, severity, "t", now, type_.value, port=port, details=details)

    held = event(EventType.FINDING_REOPENED, Severity.CRITICAL, 8081, held="flapping")
    context = event(EventType.REBOOT_SUSPECTED, Severity.INFO, None)
    end = event(EventType.PORT_FLAP_ENDED, Severity.INFO, 8081, notify_as="critical")
    route = notified_route(config, [held, context], [])
    assert route(held) == []
    assert route(context) == []
    route = notified_route(config, [held, end], [])
    assert route(end) == ["pager"]
