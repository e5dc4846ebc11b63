"""Detection (pure): the incident walk, each rule on its own, and invariants under hypothesis."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exposuremon.detect import (
    MAX_RECENT,
    Evaluation,
    TargetPolicy,
    acknowledge,
    evaluate,
    expire_acks,
    only_time_advanced,
    severity_for,
)
from exposuremon.model import (
    Event,
    EventType,
    Finding,
    FindingState,
    Fingerprint,
    Observation,
    Observed,
    ScanKind,
    Severity,
    TargetState,
    TargetStatus,
)
from exposuremon.scan.ports import HOT_PORTS

T0 = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)
ADDR = "198.51.100.7"
NAME = "surgery-router"
BUG_PORTS = frozenset(range(80, 90)) | frozenset(range(440, 450))
SENTINEL = frozenset(HOT_PORTS | {443})
CERT_A = Fingerprint(tls_sha256="a" * 64, tls_subject="CN=router")
CERT_B = Fingerprint(tls_sha256="b" * 64, tls_subject="CN=router")
HTTPD = Fingerprint(http_server="bintec httpd")

E = EventType


class Walk:
    """Feeds observations to `evaluate` with an advancing clock, as the service does."""

    def __init__(
        self, policy: TargetPolicy | None = None, state: TargetState | None = None
    ) -> None:
        self.policy = policy or TargetPolicy()
        self.state = state or TargetState(name=NAME)
        self.now = T0

    def scan(
        self,
        open_: Iterable[int] = (),
        closed: Iterable[int] = (),
        filtered: Iterable[int] = (),
        *,
        confirmed: Iterable[int] | None = None,
        fingerprints: Mapping[int, Fingerprint] | None = None,
        responded: bool | None = None,
        complete: bool = True,
        kind: ScanKind = ScanKind.SENTINEL,
        address: str = ADDR,
        minutes: float = 1,
    ) -> Evaluation:
        """One scan `minutes` after the last: ports in `open_` confirmed unless told otherwise."""
        self.now += dt.timedelta(minutes=minutes)
        states = {p: Observed.FILTERED for p in filtered}
        states.update({p: Observed.CLOSED for p in closed})
        states.update({p: Observed.OPEN for p in open_})
        opened = frozenset(p for p, s in states.items() if s is Observed.OPEN)
        obs = Observation(
            target=NAME,
            kind=kind,
            address=address,
            started=self.now - dt.timedelta(seconds=5),
            finished=self.now,
            complete=complete,
            states=states,
            confirmed_open=opened if confirmed is None else frozenset(confirmed),
            fingerprints=dict(fingerprints or {}),
            responded=any(s is not Observed.FILTERED for s in states.values())
            if responded is None
            else responded,
        )
        out = evaluate(self.state, obs, self.policy, self.now)
        self.state = out.state
        return out

    def silent(self, ports: Iterable[int] = SENTINEL, minutes: float = 1) -> Evaluation:
        """A scan nobody answered."""
        return self.scan(filtered=ports, minutes=minutes)

    def sentinel(
        self,
        open_: Iterable[int],
        fingerprints: Mapping[int, Fingerprint] | None = None,
        address: str = ADDR,
    ) -> Evaluation:
        """A sentinel scan: `open_` open, the other sentinel ports refusing."""
        open_ = set(open_)
        return self.scan(open_, SENTINEL - open_, fingerprints=fingerprints, address=address)


def types(out: Evaluation) -> list[EventType]:
    """Event types in emission order."""
    return [e.type for e in out.events]


def of(out: Evaluation, kind: EventType) -> dict[int | None, list[Event]]:
    """Events of one type by port."""
    found: dict[int | None, list[Event]] = {}
    for e in out.events:
        if e.type is kind:
            found.setdefault(e.port, []).append(e)
    return found


def fp_map(ports: Iterable[int], http: Fingerprint, tls: Fingerprint) -> dict[int, Fingerprint]:
    """Fingerprints as the router shows them: HTTP on 80-89, TLS on 44x."""
    return {p: (http if p < 100 else tls) for p in ports}


def test_incident_walk() -> None:
    """Forward 443, bug opens 80-89/440-449, closed, reboot with a new cert, reopen is critical."""
    walk = Walk(TargetPolicy(expected_open=frozenset({443})))
    out = walk.sentinel({443}, fingerprints={443: CERT_A})
    assert types(out) == [E.PORT_OPENED]
    assert out.findings == ()
    assert walk.state.status is TargetStatus.UP

    # The bug: 20 of 36 sentinel ports open; a small scan, so the middlebox guard stays quiet.
    out = walk.sentinel(BUG_PORTS, fingerprints=fp_map(BUG_PORTS, HTTPD, CERT_A))
    unexpected = BUG_PORTS - {443}
    assert set(of(out, E.FINDING_OPENED)) == unexpected
    assert {f.port for f in out.findings} == unexpected
    assert all(f.severity is Severity.CRITICAL and f.id is None for f in out.findings)
    assert all(e.severity is Severity.CRITICAL for e in out.events if e.type is E.FINDING_OPENED)
    assert set(of(out, E.PORT_OPENED)) == unexpected
    assert E.ANOMALY_ALL_OPEN not in types(out)

    # The admin closes them: one closed scan is not enough to resolve.
    out = walk.sentinel({443})
    assert set(of(out, E.PORT_CLOSED)) == unexpected
    assert E.FINDING_RESOLVED not in types(out)
    out = walk.sentinel({443})
    assert types(out) == [E.FINDING_RESOLVED] * len(unexpected)
    assert all(f.state is FindingState.RESOLVED and f.resolved_at == walk.now for f in out.findings)
    resolved_at = walk.now
    assert walk.state.findings == {}
    assert set(walk.state.resolved) == unexpected

    # Reboot: the router stops answering, then comes back with a new certificate on 443.
    before = walk.state.ports
    out = walk.silent()
    assert types(out) == [E.TARGET_DOWN]
    assert out.events[0].severity is Severity.WARNING
    assert out.state.status is TargetStatus.DOWN
    assert walk.state.ports == before
    assert types(walk.silent()) == []
    out = walk.sentinel({443}, fingerprints={443: CERT_B})
    assert types(out) == [E.TARGET_UP, E.FINGERPRINT_CHANGED, E.REBOOT_SUSPECTED]
    assert out.reboot_suspected
    assert of(out, E.FINGERPRINT_CHANGED).keys() == {443}
    reboot = out.events[2]
    assert reboot.details["reasons"] == ["target_up", "fingerprint_changed"]
    reboot_at = walk.now
    assert walk.state.last_reboot == reboot_at
    assert walk.state.reboots_total == 1

    # The bug reopens everything: each port is a reopened, critical finding naming the reboot.
    out = walk.sentinel(BUG_PORTS, fingerprints=fp_map(BUG_PORTS, HTTPD, CERT_B))
    reopened = of(out, E.FINDING_REOPENED)
    assert set(reopened) == unexpected
    assert E.FINDING_OPENED not in types(out)
    # 440-449 changed certificate too, but the reboot already suspected explains that.
    assert set(of(out, E.FINGERPRINT_CHANGED)) == unexpected - set(range(80, 90))
    assert E.REBOOT_SUSPECTED not in types(out)
    assert not out.reboot_suspected
    for finding in out.findings:
        assert finding.severity is Severity.CRITICAL
        assert finding.reopen_count == 1
        assert finding.previous_resolved_at == resolved_at
        assert finding.id is None
    event = reopened[80][0]
    assert event.severity is Severity.CRITICAL
    assert event.summary == (
        "port 80/tcp open again (closed since 2026-11-20 09:04Z, reboot suspected 09:07Z, "
        "fingerprint changed 09:08Z)"
    )
    details = event.details
    assert details["previous_resolved_at"] == "2026-11-20T09:04:00.000Z"
    assert details["reopen_count"] == 1
    since = [(s["type"], s["at"]) for s in details["since"]]
    assert since == [
        ("target_down", "2026-11-20T09:05:00.000Z"),
        ("target_up", "2026-11-20T09:07:00.000Z"),
        ("fingerprint_changed", "2026-11-20T09:07:00.000Z"),
        ("reboot_suspected", "2026-11-20T09:07:00.000Z"),
        ("fingerprint_changed", "2026-11-20T09:08:00.000Z"),
    ]
    assert walk.state.reopened_total == len(unexpected)
    rec = walk.state.ports[80]
    assert (rec.times_opened, rec.times_closed, rec.times_reopened) == (2, 1, 1)
    assert rec.first_open == T0 + dt.timedelta(minutes=2)
    assert walk.state.ports[444].fingerprint == CERT_B


# Target-level kinds first, then per-port kinds, each group ordered by port.
RANK = {
    kind: rank
    for rank, kinds in enumerate(
        [
            [E.ADDRESS_CHANGED],
            [E.TARGET_DOWN, E.TARGET_UP],
            [E.ANOMALY_ALL_OPEN],
            [E.FINGERPRINT_CHANGED],
            [E.REBOOT_SUSPECTED],
            [E.PORT_OPENED, E.PORT_CLOSED, E.EXPECTED_PORT_CLOSED],
            [E.FINDING_RESOLVED],
            [E.FINDING_OPENED, E.FINDING_REOPENED],
        ]
    )
    for kind in kinds
}


def test_event_details_are_json() -> None:
    """Every event's details serialise to JSON, and events come in a stable order."""
    walk = Walk(TargetPolicy(expected_open=frozenset({443})))
    outs = [
        walk.sentinel({443}, fingerprints={443: CERT_A}),
        walk.sentinel(BUG_PORTS, fingerprints=fp_map(BUG_PORTS, HTTPD, CERT_A)),
        walk.sentinel(set()),
        walk.sentinel(set()),
        walk.silent(),
        walk.sentinel({443}, fingerprints={443: CERT_B}, address="203.0.113.9"),
        walk.sentinel(BUG_PORTS, fingerprints=fp_map(BUG_PORTS, HTTPD, CERT_B)),
    ]
    for out in outs:
        for event in out.events:
            json.dumps(dict(event.details))
            assert event.target == NAME
            assert event.observed_at.tzinfo is not None
        keys = [(RANK[e.type], e.port or 0) for e in out.events]
        assert keys == sorted(keys)


def test_expected_port_closed_once_per_transition() -> None:
    """An expected port closed warns once on the transition, also when it was never seen."""
    walk = Walk(TargetPolicy(expected_open=frozenset({443, 8443})))
    out = walk.scan({443}, {8443, 22})
    assert types(out) == [E.PORT_OPENED, E.EXPECTED_PORT_CLOSED]
    assert of(out, E.EXPECTED_PORT_CLOSED).keys() == {8443}
    assert out.events[1].severity is Severity.WARNING
    out = walk.scan({443}, filtered={8443}, closed={22})
    assert types(out) == []
    out = walk.scan(closed={443, 8443})
    assert types(out) == [E.EXPECTED_PORT_CLOSED]
    assert out.events[0].port == 443
    assert out.events[0].summary == "expected port 443/tcp closed"
    assert types(walk.scan(closed={443, 8443})) == []
    # Every expected port refused and one accepts again: that also looks like a reboot.
    assert types(walk.scan({443}, {8443})) == [E.REBOOT_SUSPECTED, E.PORT_OPENED]
    assert out.findings == ()


def test_down_target_keeps_states_and_never_resolves() -> None:
    """While the target is down, ports keep their state and findings never resolve."""
    walk = Walk(TargetPolicy(resolve_after=1))
    walk.scan({8080}, {22})
    finding = walk.state.findings[8080]
    walk.scan({8080}, {22})
    ports = walk.state.ports
    out = walk.silent([22, 8080])
    assert types(out) == [E.TARGET_DOWN]
    for _ in range(5):
        out = walk.silent([22, 8080])
        assert out.events == ()
        assert out.findings == ()
    assert walk.state.ports == ports
    assert walk.state.ports[8080].state is Observed.OPEN
    assert walk.state.findings == {8080: finding}
    assert walk.state.status is TargetStatus.DOWN
    assert walk.state.status_since == T0 + dt.timedelta(minutes=3)


def test_silence_from_a_target_never_seen_proves_nothing() -> None:
    """A target that never answered stays unknown, with no events and no records."""
    walk = Walk(TargetPolicy(expected_open=frozenset({443})))
    for _ in range(3):
        assert walk.silent().events == ()
    assert walk.state.status is TargetStatus.UNKNOWN
    assert walk.state.ports == {}
    assert walk.state.last_scan[ScanKind.SENTINEL] == walk.now


def test_incomplete_scan_never_closes_absent_ports() -> None:
    """An incomplete scan applies the ports it finished and nothing else."""
    walk = Walk(TargetPolicy(resolve_after=1))
    walk.scan({8080, 9000}, {22})
    out = walk.scan(closed={22}, complete=False, kind=ScanKind.FULL)
    assert out.events == ()
    assert walk.state.ports[8080].state is Observed.OPEN
    assert set(walk.state.findings) == {8080, 9000}
    assert ScanKind.FULL not in walk.state.last_scan
    # A silent incomplete scan that never reached a reference port says nothing about liveness.
    out = walk.scan(filtered={22}, complete=False)
    assert out.events == ()
    assert walk.state.status is TargetStatus.UP
    # The ports it did finish count.
    out = walk.scan(closed={9000}, complete=False)
    assert types(out) == [E.PORT_CLOSED, E.FINDING_RESOLVED]
    assert set(walk.state.findings) == {8080}


def test_ack_then_resolve_then_reopen() -> None:
    """An acked finding stays quiet, resolves like any other, and a new open is a reopen."""
    walk = Walk()
    walk.scan({8080}, {22})
    state, acked = acknowledge(
        walk.state, 8080, walk.now + dt.timedelta(days=7), " known test box ", walk.now
    )
    walk.state = state
    assert acked.state is FindingState.ACKED
    assert acked.ack_reason == "known test box"
    assert walk.state.findings[8080] == acked
    assert walk.scan({8080}, {22}).events == ()
    walk.scan(closed={8080, 22})
    out = walk.scan(closed={8080, 22})
    assert types(out) == [E.FINDING_RESOLVED]
    assert out.findings[0].state is FindingState.RESOLVED
    out = walk.scan({8080}, {22})
    assert types(out) == [E.PORT_OPENED, E.FINDING_REOPENED]
    (finding,) = out.findings
    assert (finding.state, finding.severity, finding.ack_until) == (
        FindingState.OPEN,
        Severity.CRITICAL,
        None,
    )


def test_ack_expiry() -> None:
    """Acks end at their expiry: `expire_acks` and `evaluate` turn the finding open again."""
    walk = Walk()
    walk.scan({8080, 8081}, {22})
    until = walk.now + dt.timedelta(minutes=30)
    walk.state, _ = acknowledge(walk.state, 8080, until, "maintenance", walk.now)
    same, expired = expire_acks(walk.state, until - dt.timedelta(seconds=1))
    assert (same, expired) == (walk.state, ())
    later, expired = expire_acks(walk.state, until)
    assert [(f.port, f.state, f.ack_until) for f in expired] == [(8080, FindingState.OPEN, None)]
    assert later.findings[8080].state is FindingState.OPEN
    out = walk.scan({8080, 8081}, {22}, minutes=31)
    assert out.events == ()
    assert [(f.port, f.state) for f in out.findings] == [(8080, FindingState.OPEN)]
    with pytest.raises(LookupError, match="22/tcp"):
        acknowledge(walk.state, 22, until, "", walk.now)
    with pytest.raises(ValueError, match="not after now"):
        acknowledge(walk.state, 8080, walk.now, "", walk.now)


def test_ignored_ports_are_tracked_silently() -> None:
    """Ignored ports get records and counters but no events and no findings."""
    walk = Walk(TargetPolicy(ignore=frozenset({8080})))
    out = walk.scan({8080}, {22})
    assert out.events == ()
    assert out.findings == ()
    assert walk.state.ports[8080].times_opened == 1
    out = walk.scan(closed={8080, 22})
    assert out.events == ()
    assert walk.state.ports[8080].times_closed == 1


def test_policy_change_resolves_findings() -> None:
    """A finding on a port now expected resolves, and is no basis for a later reopen."""
    walk = Walk()
    walk.scan({8443}, {22})
    walk.policy = TargetPolicy(expected_open=frozenset({8443}))
    out = walk.scan({8443}, {22})
    assert types(out) == [E.FINDING_RESOLVED]
    assert out.events[0].details["reason"] == "expected"
    assert walk.state.resolved == {}
    walk.policy = TargetPolicy()
    out = walk.scan({8443}, {22})
    assert types(out) == [E.FINDING_OPENED]


def test_unconfirmed_open_waits_for_confirmation() -> None:
    """An open port the re-probe did not confirm opens no finding until confirmed."""
    walk = Walk()
    out = walk.scan({8080}, {22}, confirmed=())
    assert types(out) == [E.PORT_OPENED]
    assert out.findings == ()
    assert walk.state.ports[8080].state is Observed.OPEN
    walk.scan(closed={8080, 22})
    out = walk.scan({8080}, {22}, confirmed=())
    assert out.findings == ()
    # Open on two scans in a row confirms it as well as a re-probe does.
    out = walk.scan({8080}, {22}, confirmed=())
    assert types(out) == [E.FINDING_OPENED]


def test_anomaly_guard() -> None:
    """A scan where most ports suddenly look open raises one anomaly and changes nothing."""
    walk = Walk(TargetPolicy(expected_open=frozenset({443})))
    walk.scan({443}, set(range(1, 1001)) - {443}, kind=ScanKind.QUICK)
    ports, findings = walk.state.ports, walk.state.findings
    out = walk.scan(range(1, 1001), kind=ScanKind.QUICK)
    assert types(out) == [E.ANOMALY_ALL_OPEN]
    assert out.events[0].severity is Severity.WARNING
    assert out.events[0].details == {"scanned": 1000, "open": 1000, "newly_open": 999}
    assert (walk.state.ports, walk.state.findings) == (ports, findings)
    assert walk.state.anomaly_since == walk.now
    # Still going: the quick scan repeats, a sentinel scan sees its ports open too. No noise.
    assert walk.scan(range(1, 1001), kind=ScanKind.QUICK).events == ()
    assert walk.scan(SENTINEL).events == ()
    assert walk.state.ports == ports
    # The middlebox is gone.
    out = walk.sentinel({443})
    assert out.events == ()
    assert walk.state.anomaly_since is None


def test_address_change() -> None:
    """A DDNS name that resolves elsewhere is reported once, and kept for reopen texts."""
    walk = Walk()
    walk.scan({22})
    out = walk.scan({22}, address="203.0.113.9")
    assert types(out) == [E.ADDRESS_CHANGED]
    assert out.events[0].details == {"previous": ADDR, "address": "203.0.113.9"}
    assert walk.state.address == "203.0.113.9"
    assert walk.state.recent[-1].type is E.ADDRESS_CHANGED
    assert walk.scan({22}, address="203.0.113.9").events == ()


def test_reboot_from_expected_ports_refusing_then_accepting() -> None:
    """Every expected port refusing then one accepting again is a suspected reboot."""
    walk = Walk(TargetPolicy(expected_open=frozenset({443, 1194})))
    walk.scan({443, 1194})
    walk.scan(closed={443, 1194})
    assert walk.state.expected_refusing
    out = walk.scan({443}, closed={1194})
    assert types(out) == [E.REBOOT_SUSPECTED, E.PORT_OPENED]
    assert out.reboot_suspected
    assert out.events[0].details == {"reasons": ["expected_ports_accepting"]}
    assert not walk.state.expected_refusing


def test_fingerprint_that_learned_less_is_no_change() -> None:
    """A fingerprint missing a field it had before is not a change; a differing field is."""
    walk = Walk()
    walk.policy = TargetPolicy(expected_open=frozenset({443}))
    walk.scan({443}, fingerprints={443: CERT_A})
    assert walk.scan({443}, fingerprints={443: HTTPD}).events == ()
    assert walk.scan({443}, fingerprints={443: Fingerprint()}).events == ()
    assert walk.state.ports[443].fingerprint == HTTPD
    out = walk.scan({443}, fingerprints={443: Fingerprint(http_server="lighttpd")})
    assert types(out) == [E.FINGERPRINT_CHANGED, E.REBOOT_SUSPECTED]
    assert out.events[0].details["changed"] == ["HTTP Server header"]


def test_a_new_certificate_soon_after_a_suspected_reboot_is_explained_by_it() -> None:
    """A reboot suspected, then 443 seen open without a look, then its new certificate a
    minute later: fingerprint_changed, no second reboot_suspected; a new certificate once
    REBOOT_EXPLAINS_FOR has passed is a reboot of its own."""
    walk = Walk(TargetPolicy(expected_open=frozenset({443})))
    walk.scan({443}, fingerprints={443: CERT_A})
    walk.scan(filtered={443}, responded=False)
    walk.scan(filtered={443}, responded=False)
    assert walk.state.status is TargetStatus.DOWN
    back = walk.scan({443})
    assert E.REBOOT_SUSPECTED in types(back)
    walk.scan({443})  # another sentinel: 443 open again, after the reboot, not looked at
    out = walk.scan({443}, fingerprints={443: CERT_B}, kind=ScanKind.QUICK)
    assert types(out) == [E.FINGERPRINT_CHANGED]
    assert out.events[0].details["after_reboot"] is not None
    later = walk.scan({443}, fingerprints={443: CERT_A}, minutes=16, kind=ScanKind.QUICK)
    assert types(later) == [E.FINGERPRINT_CHANGED, E.REBOOT_SUSPECTED]


def make_obs(
    finished: dt.datetime,
    states: Mapping[int, Observed],
    kind: ScanKind = ScanKind.QUICK,
    responded: bool = True,
) -> Observation:
    """An observation finished at `finished`, its open ports confirmed."""
    return Observation(
        target=NAME,
        kind=kind,
        address=ADDR,
        started=finished - dt.timedelta(seconds=10),
        finished=finished,
        complete=True,
        states=states,
        confirmed_open=frozenset(p for p, s in states.items() if s is Observed.OPEN),
        responded=responded,
    )


def test_replay_changes_nothing() -> None:
    """The same result applied twice changes nothing the second time, even later."""
    walk = Walk(TargetPolicy(resolve_after=1))
    walk.scan({8080})
    obs = make_obs(walk.now + dt.timedelta(seconds=10), {8080: Observed.CLOSED})
    first = evaluate(walk.state, obs, walk.policy, obs.finished)
    assert types(first) == [E.PORT_CLOSED, E.FINDING_RESOLVED]
    again = evaluate(first.state, obs, walk.policy, obs.finished + dt.timedelta(hours=1))
    assert again == Evaluation(first.state, (), (), False)


def test_late_result_updates_only_ports_not_seen_since() -> None:
    """A result applied after a newer one fills in the ports the newer one did not see."""
    walk = Walk()
    walk.scan({8080}, {22})
    full = make_obs(
        walk.now + dt.timedelta(seconds=50),
        {22: Observed.CLOSED, 8080: Observed.OPEN, 9000: Observed.OPEN},
        ScanKind.FULL,
    )
    sentinel = make_obs(
        walk.now + dt.timedelta(seconds=60),
        {22: Observed.CLOSED, 8080: Observed.CLOSED},
        ScanKind.SENTINEL,
    )
    walk.now += dt.timedelta(seconds=61)
    first = evaluate(walk.state, sentinel, walk.policy, walk.now)
    assert types(first) == [E.PORT_CLOSED]
    late = evaluate(first.state, full, walk.policy, walk.now + dt.timedelta(seconds=5))
    # 8080 keeps the newer sentinel state; 9000, only the full scan saw it, is a finding.
    assert types(late) == [E.PORT_OPENED, E.FINDING_OPENED]
    assert [f.port for f in late.findings] == [9000]
    assert late.state.ports[8080] == first.state.ports[8080]
    assert late.state.ports[9000].last_seen == full.finished
    assert late.state.last_observed == sentinel.finished
    assert late.state.last_scan[ScanKind.FULL] == full.finished
    # A late silent result proves nothing about the present.
    silent = make_obs(
        full.finished, {22: Observed.FILTERED, 8080: Observed.FILTERED}, responded=False
    )
    assert evaluate(late.state, silent, walk.policy, walk.now).events == ()
    assert evaluate(late.state, full, walk.policy, walk.now).events == ()


def test_bad_arguments_are_named() -> None:
    """TargetPolicy limits and mismatched arguments fail with a message naming what is wrong."""
    with pytest.raises(ValueError, match="resolve_after"):
        TargetPolicy(resolve_after=0)
    with pytest.raises(ValueError, match="anomaly_share"):
        TargetPolicy(anomaly_share=0)
    with pytest.raises(ValueError, match="anomaly_min_ports"):
        TargetPolicy(anomaly_min_ports=0)
    walk = Walk()
    obs = Observation(NAME, ScanKind.QUICK, ADDR, T0, T0, True, {}, frozenset())
    with pytest.raises(ValueError, match="'other'"):
        evaluate(TargetState(name="other"), obs, walk.policy, T0)
    with pytest.raises(ValueError, match="now"):
        evaluate(walk.state, obs, walk.policy, T0.replace(tzinfo=None))


@pytest.mark.parametrize(
    ("port", "reopened", "expected"),
    [
        (80, False, Severity.CRITICAL),
        (3389, False, Severity.CRITICAL),
        (9000, False, Severity.WARNING),
        (9000, True, Severity.CRITICAL),
        (443, False, Severity.INFO),
        (8080, False, Severity.INFO),
    ],
)
def test_severity_for(port: int, reopened: bool, expected: Severity) -> None:
    """Reopened and hot are critical, other unexpected ports warnings, expected/ignored info."""
    policy = TargetPolicy(expected_open=frozenset({443}), ignore=frozenset({8080}))
    assert severity_for(port, reopened, policy) is expected


def test_reopen_days_later_names_dates() -> None:
    """A reopen on another day gives dates; only happenings since the resolve are named."""
    walk = Walk(TargetPolicy(resolve_after=1))
    walk.scan({8080}, {22}, address="203.0.113.9")
    walk.scan({8080}, {22})
    walk.scan(closed={8080, 22})
    walk.scan(closed={8080, 22}, address="203.0.113.9", minutes=24 * 60)
    out = walk.scan({8080}, {22}, address="203.0.113.9", minutes=24 * 60)
    (event,) = of(out, E.FINDING_REOPENED)[8080]
    assert event.summary == (
        "port 8080/tcp open again (closed since 2026-11-20 09:03Z, "
        "address changed 2026-11-21 09:03Z)"
    )
    assert [s["type"] for s in event.details["since"]] == ["address_changed"]
    assert not event.details["since_truncated"]


def test_recent_history_is_bounded() -> None:
    """The notable history keeps the newest MAX_RECENT entries."""
    walk = Walk()
    for i in range(MAX_RECENT + 5):
        walk.scan({22}, address=f"203.0.113.{i % 2 + 1}")
    assert len(walk.state.recent) == MAX_RECENT
    assert walk.state.recent[-1].at == walk.now


# --- properties -------------------------------------------------------------------------------

UNIVERSE = (22, 80, 443, 444, 8080, 9000)


@dataclasses.dataclass(frozen=True)
class Step:
    """One generated scan (and maybe an ack before it)."""

    silent: bool
    states: tuple[Observed | None, ...]  # per UNIVERSE port; None = not in this scan
    unconfirmed: frozenset[int]
    complete: bool
    address: str
    fingerprints: dict[int, Fingerprint]
    minutes: int
    lag: int  # minutes the result finished before now: results can arrive out of order
    ack: tuple[int, int] | None


step_st = st.builds(
    Step,
    silent=st.integers(0, 3).map(lambda n: n == 0),
    states=st.tuples(*[st.sampled_from([None, *Observed]) for _ in UNIVERSE]),
    unconfirmed=st.frozensets(st.sampled_from(UNIVERSE), max_size=2),
    complete=st.integers(0, 3).map(lambda n: n != 0),
    address=st.sampled_from([ADDR] * 7 + ["203.0.113.9"]),
    fingerprints=st.dictionaries(
        st.sampled_from(UNIVERSE),
        st.sampled_from([CERT_A, CERT_B, HTTPD, Fingerprint()]),
        min_size=2,
    ),
    minutes=st.integers(1, 90),
    lag=st.sampled_from([0, 0, 0, 0, 2, 30, 200]),
    ack=st.none() | st.tuples(st.sampled_from(UNIVERSE), st.integers(1, 120)),
)
policy_st = st.builds(
    TargetPolicy,
    expected_open=st.frozensets(st.sampled_from((22, 443))),
    ignore=st.frozensets(st.just(9000)),
    resolve_after=st.integers(1, 3),
    anomaly_min_ports=st.sampled_from([4, 50, 50]),
)


def run_step(walk: Walk, step: Step) -> tuple[TargetState, Observation, Evaluation]:
    """Apply one generated step (maybe an ack first) and return (prev, observation, outcome)."""
    if step.ack is not None and step.ack[0] in walk.state.findings:
        until = walk.now + dt.timedelta(minutes=step.ack[1])
        walk.state, _ = acknowledge(walk.state, step.ack[0], until, "test", walk.now)
    walk.now += dt.timedelta(minutes=step.minutes)
    states = {p: s for p, s in zip(UNIVERSE, step.states, strict=True) if s is not None}
    if step.silent:
        states = dict.fromkeys(states, Observed.FILTERED)
    opened = frozenset(p for p, s in states.items() if s is Observed.OPEN)
    obs = Observation(
        target=NAME,
        kind=ScanKind.QUICK,
        address=step.address,
        started=walk.now - dt.timedelta(minutes=step.lag, seconds=3),
        finished=walk.now - dt.timedelta(minutes=step.lag),
        complete=step.complete,
        states=states,
        confirmed_open=opened - step.unconfirmed,
        fingerprints=step.fingerprints,
        responded=not step.silent,
    )
    prev = walk.state
    out = evaluate(prev, obs, walk.policy, walk.now)
    walk.state = out.state
    return prev, obs, out


def check_invariants(
    prev: TargetState, obs: Observation, out: Evaluation, policy: TargetPolicy
) -> None:
    """Everything that must hold after any single evaluation."""
    state = out.state
    new = {f.port: f for f in out.findings if f.id is None and f.state is FindingState.OPEN}
    new = {p: f for p, f in new.items() if prev.findings.get(p) is None}
    opened = {e.port for e in out.events if e.type in (E.FINDING_OPENED, E.FINDING_REOPENED)}
    # Every finding opened has its event and every such event its finding.
    assert opened == set(new)
    for event in out.events:
        if event.type is E.FINDING_REOPENED:
            # Reopened only follows resolved, and is always critical.
            assert event.port is not None
            assert event.port in prev.resolved
            assert event.severity is Severity.CRITICAL
            assert new[event.port].severity is Severity.CRITICAL
        if event.port is not None:
            assert event.port not in policy.ignore
    # No resolve while down, or on a silent scan.
    if state.status is not TargetStatus.UP or obs.responded is False:
        assert E.FINDING_RESOLVED not in types(out)
        assert all(f.state is not FindingState.RESOLVED for f in out.findings)
    # Ports the scan did not finish, or all ports on a silent scan, keep their records.
    for port, rec in prev.ports.items():
        if port not in obs.states or not obs.responded:
            assert state.ports[port] == rec
    # A late result (older than one applied before) says nothing about the target as a whole
    # but its liveness, which goes by evidence times: up only on an answer newer than the
    # silence it ends, down only on a silence that began after the newest answer.
    if prev.last_observed is not None and obs.finished <= prev.last_observed:
        assert not {E.ADDRESS_CHANGED, E.ANOMALY_ALL_OPEN} & set(types(out))
        assert state.address == prev.address
    if E.TARGET_UP in types(out):
        assert prev.silent_until is not None
        assert (obs.answered_at or obs.started) > prev.silent_until
    if E.TARGET_DOWN in types(out):
        assert prev.answered_at is not None
        assert obs.started > prev.answered_at
    # No port's record ever goes back in time, nor takes evidence older than it holds.
    for port, rec in prev.ports.items():
        assert state.ports[port].last_seen >= rec.last_seen
        after = state.ports[port]
        if dataclasses.replace(after, fingerprint=None) != dataclasses.replace(
            rec, fingerprint=None
        ):
            assert after.observed_at is not None
            assert rec.observed_at is None or after.observed_at > rec.observed_at
    # Findings are keyed by their port and live in the right map.
    for port, finding in state.findings.items():
        assert finding.port == port
        assert finding.target == NAME
        assert finding.is_active
    for port, finding in state.resolved.items():
        assert finding.port == port
        assert finding.state is FindingState.RESOLVED
    assert len({f.port for f in out.findings}) == len(out.findings)
    assert types(out).count(E.REBOOT_SUSPECTED) == int(out.reboot_suspected) <= 1
    assert len(state.recent) <= MAX_RECENT


@settings(max_examples=150, deadline=None)
@given(policy=policy_st, steps=st.lists(step_st, min_size=1, max_size=25))
def test_invariants_hold_for_any_sequence(policy: TargetPolicy, steps: list[Step]) -> None:
    """Invariants hold after every step of any scan sequence, and replays change nothing."""
    walk = Walk(policy)
    for step in steps:
        prev, obs, out = run_step(walk, step)
        check_invariants(prev, obs, out, policy)
        replay = evaluate(out.state, obs, policy, walk.now)
        assert replay.events == ()
        assert replay.findings == ()
        assert replay.state == out.state


@settings(max_examples=100, deadline=None)
@given(policy=policy_st, steps=st.lists(step_st, min_size=1, max_size=25))
def test_findings_never_resolve_while_down(policy: TargetPolicy, steps: list[Step]) -> None:
    """Once down, silent scans leave every finding and port untouched."""
    walk = Walk(policy)
    for step in steps:
        run_step(walk, step)
    walk.scan(closed={22}, responded=True)
    findings, ports = walk.state.findings, walk.state.ports
    if not findings:
        return
    walk.silent(UNIVERSE)
    assert walk.state.status is TargetStatus.DOWN
    for _ in range(4):
        out = walk.silent(UNIVERSE, minutes=600)
        assert out.events == ()
        assert out.findings == () or all(f.state is not FindingState.RESOLVED for f in out.findings)
    assert {p: f.port for p, f in walk.state.findings.items()} == {p: p for p in findings}
    assert walk.state.ports == ports


def test_resolving_keeps_stored_identity() -> None:
    """A finding resolved by detection keeps its identity fields (id, port, opened_at)."""
    walk = Walk(TargetPolicy(resolve_after=1))
    walk.scan({8080})
    stored = dataclasses.replace(walk.state.findings[8080], id=7)
    walk.state = dataclasses.replace(walk.state, findings={8080: stored})
    out = walk.scan(closed={8080})
    (resolved,) = out.findings
    assert isinstance(resolved, Finding)
    assert (resolved.id, resolved.port, resolved.opened_at) == (7, 8080, stored.opened_at)
    assert of(out, E.FINDING_RESOLVED)[8080][0].finding_id == 7


@given(resolve_after=st.integers(1, 6), scans=st.integers(1, 20))
def test_a_port_that_stays_closed_costs_no_write_once_recorded(
    resolve_after: int, scans: int
) -> None:
    """An expected port closed scan after scan changes the state only until its streak reaches
    `resolve_after`; from then on each scan only advances times (quiet, no write)."""
    walk = Walk(TargetPolicy(expected_open=frozenset({443}), resolve_after=resolve_after))
    walk.sentinel({443})
    changed = []
    for _ in range(scans):
        before = walk.state
        out = walk.sentinel(set())
        changed.append(not only_time_advanced(before, out.state))
        assert out.state.ports[443].closed_streak == min(len(changed), resolve_after)
    assert changed == [n < resolve_after for n in range(scans)]


def test_a_finding_still_resolves_after_resolve_after_closed_scans() -> None:
    """The capped streak still resolves a finding on the `resolve_after`th closed scan."""
    walk = Walk(TargetPolicy(expected_open=frozenset({443}), resolve_after=3))
    walk.sentinel({443, 8080})
    walk.sentinel({443, 8080})
    assert 8080 in walk.state.findings
    assert not of(walk.sentinel({443}), E.FINDING_RESOLVED)
    assert not of(walk.sentinel({443}), E.FINDING_RESOLVED)
    assert of(walk.sentinel({443}), E.FINDING_RESOLVED)[8080]
    quiet_before = walk.state
    assert only_time_advanced(quiet_before, walk.sentinel({443}).state)


def test_an_open_finding_costs_no_write_per_scan() -> None:
    """A target with an open finding whose ports stay as they are has quiet scans too."""
    walk = Walk(TargetPolicy(expected_open=frozenset({443})))
    walk.sentinel({443, 8080})
    walk.sentinel({443, 8080})
    before = walk.state
    assert before.findings
    assert only_time_advanced(before, walk.sentinel({443, 8080}).state)


def test_only_time_advanced_tells_quiet_scans_apart() -> None:
    """A repeated identical scan only advances times; a port change or a finding is more."""
    walk = Walk(TargetPolicy(expected_open=frozenset({443})))
    first = walk.sentinel({443}).state
    second = walk.sentinel({443})
    assert not second.events
    assert second.state != first  # times moved …
    assert only_time_advanced(first, second.state)  # … and nothing else
    assert not only_time_advanced(second.state, walk.sentinel(set()).state)  # 443 closed
    assert not only_time_advanced(walk.state, walk.sentinel({443, 8080}).state)  # a finding
