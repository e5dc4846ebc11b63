"""Detection: (previous target state, one scan, policy, now) -> new state, events, findings.

Pure: no I/O and no clock reads (time is an argument). Rules of docs/architecture.md
"Detection" and "Scan engine", with the details decided here:

- Evidence carries its own time. A scan that overlaps a change (a quick scan that saw answers
  before a power-off and finished after a sentinel scan saw the silence) holds the past, not
  the present; ordering by when scans finished read its early answers as news and raised a
  false `target_up` and `reboot_suspected`. So every piece of evidence is judged by when it
  was observed: a port by `obs.seen_at[port]` (when its deciding probe was sent), an answer
  by `obs.answered_at` (when the newest answered probe was sent), a silence by the silent
  scan's window `[obs.started, obs.finished]`. Without engine times the oldest time a scan
  can vouch for, `obs.started`, stands in: strict, and for scans that do not overlap the
  same order as the finish times. The state keeps the newest of each (`PortRecord.observed_at`,
  `TargetState.answered_at`, `TargetState.silent_until`) and nothing older than what is kept
  may revive, down, open or close anything; the same result applied twice changes nothing.
- Fingerprints are taken after the scan: one that comes with evidence older than the port's
  record still counts if the port was open on both (a quick scan overtaken by sentinel scans
  while it fingerprinted must still show a new certificate after a reboot).
- Late results: one that finished before the newest applied (`last_observed`) changes nothing
  target-wide besides liveness (address, anomaly, expected-port refusal).
- Liveness: the target answered if `obs.responded` or any scanned port is open or closed (RST).
  An answer ends a silence only if it is newer than `silent_until`: DOWN -> answering gives
  `target_up` and a suspected reboot; UNKNOWN -> UP (first contact) is quiet; an older answer
  changes no status and, unless the target is up, no port. A silent scan is evidence only if
  it was complete or probed a reference port (expected, or open before); it then extends
  `silent_until`, and downs an UP target (`target_down`) only if it began after the newest
  answer applied; UNKNOWN stays UNKNOWN (silence proves nothing). Silent scans never touch
  ports: no port events, no streak, no resolve.
- Evidence that a port closed (issue 12): an RST (`closed`) is strong evidence. `filtered` is
  evidence only when the target was demonstrably answering the same scan: another port of
  that scan answered, the engine saw the target answer while this port stayed silent
  (`obs.filtered_live`, when given: a scan that ran into an outage does not vouch for the
  ports it probed after the target went silent), and the engine saw no drops (`obs.dropped`:
  a retry answered where the first attempt got nothing, or a timing ping to an answering port
  went unanswered; ports that exhausted their retries on such a target the engine reports
  unknown, leaving them out of the observation). It is judged on the observation alone, so a
  replay decides the same. A timeout on a target that
  drops is no evidence at all: the port's record, streak and findings are left as they were,
  as for a port the scan did not finish. Findings resolve only on evidence that the port
  closed, so no drop pattern that leaves a port open can resolve, or then reopen, its finding.
- Ports: only ports in `obs.states` are applied (an incomplete scan holds just those it
  finished; absent ports are unknown, never closed). Records are kept for ports seen open and
  for expected ports, not for closed ports never seen open (a full scan would add 65k rows).
  `closed_streak` counts consecutive observations that are evidence of a close (above) on an
  answering target, up to `resolve_after` (all that resolving needs; a port that stays closed
  then costs no write per scan); open resets it. `times_reopened` counts opens after an
  earlier close.
  `port_opened` / `port_closed`; an expected port gets `expected_port_closed` instead, only on
  the transition from open or from never seen. Ignored ports are tracked without events or findings.
- Findings: an open, confirmed port, neither expected nor ignored, without an active finding
  opens one. Confirmed: in `obs.confirmed_open` (the immediate re-probe), or open on this and
  on the previous observation of the port (two scans agree as well as a re-probe). A port with
  a resolved finding gets `finding_reopened` (critical, with when it was resolved and the
  notable happenings since), any other `finding_opened`.
- Resolve: an active (open or acked) finding resolves when its port was closed/filtered in
  `resolve_after` consecutive observations on an answering target, and is kept in `resolved`
  so that the port opening again is a reopen. A finding on a port the policy now expects or
  ignores resolves on the next answering scan, and is not kept (the port never closed).
- Acks: `acknowledge` sets an expiry; `expire_acks` (which `evaluate` also runs at `now`) turns
  acked findings past it back to open. Acked findings resolve like open ones.
- Fingerprints: `fingerprint_changed` when an identity field (banner, TLS certificate, HTTP
  Server) known before and now differs; a probe that learned less this time is no change. The
  stored fingerprint survives closes, so a reopen with a new certificate counts.
- Reboot suspected (at most one event per evaluation): DOWN -> answering; every expected port
  refused on the last answering scan that probed them all and one accepts now; or a
  fingerprint change, unless the port was last open before an already suspected reboot (which
  explains it: services come back one by one, each with the new certificate).
- `address_changed` when the scanned address differs from the last one.
- Middlebox guard: an answering scan of >= `anomaly_min_ports` ports of which >= `anomaly_share`
  are open, most of them not open before, raises one `anomaly_all_open` and is not applied to
  ports or findings. While the anomaly lasts, smaller scans (sentinel) are judged by the share
  alone and raise nothing new; the first normal answering scan ends it.
- Down, up, reboot, fingerprint and address changes are kept in `TargetState.recent` (the last
  `MAX_RECENT`) for the reopen text.
- Severity: reopened and unexpected hot ports critical; other unexpected ports, expected port
  closed, target down, fingerprint changed, anomaly warning; the rest info.
- Vantages (docs/architecture.md "Fleet and vantage points"): every observation carries its
  vantage (`obs.vantage`); each vantage keeps its own evidence in `TargetState.vantages`
  (liveness: its newest answer and silence; per port kept in the merged state: its state,
  when observed, its closed streak), and the fields above are the merge. One vantage's scan
  is judged against its own record (staleness) and the other healthy vantages' records:
  a port it sees closed or filtered while another healthy vantage's latest evidence is
  open stays open (no `port_closed`, no streak); a close that does apply carries as merged
  streak the least streak of every vantage with a record of the port, so a finding resolves
  only when each of them saw it closed `resolve_after` times; a silent scan downs the
  target only when no other healthy vantage's latest liveness evidence is an answer. Events
  come from the merged state, so up, reboot, fingerprint and reopen are raised once,
  by whichever vantage sees them first. With two or more vantages, active findings carry
  `seen_from` (vantages by what they last saw of the port), also in the details of
  `finding_opened` / `finding_reopened`. `Evaluation.reprobe` names the unexpected ports this
  vantage saw open while no other vantage's record has them open: the others re-probe them.
  A vantage in `degraded` is left out of every merge, and its scans' silence (a silent scan,
  a filtered port) is dropped before anything is judged. A node alone in the vantage
  "default" keeps no per-vantage records: its results are exactly those of one vantage.
- Output: events in a stable order (target-level kinds first, then per-port kinds by port);
  findings created (id None) or changed, by port. Times in details are RFC 3339 UTC strings.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from exposuremon.model import (
    DEFAULT_VANTAGE,
    Event,
    EventType,
    Finding,
    FindingState,
    Fingerprint,
    Notable,
    Observation,
    Observed,
    PortRecord,
    Severity,
    TargetState,
    TargetStatus,
    VantagePort,
    VantageView,
)
from exposuremon.scan import HOT_PORTS
from exposuremon.units import rfc3339

MAX_RECENT = 32
# A suspected reboot explains a fingerprint change found this soon after it (a quick scan
# after the reboot looks at every open port; the default quick interval).
REBOOT_EXPLAINS_FOR = dt.timedelta(minutes=15)

_IDENTITY_LABELS = ("banner", "TLS certificate", "HTTP Server header")  # Fingerprint.identity()
# Stable event order: target-level kinds first, then per-port kinds (each group by port).
_ORDER = {
    EventType(kind): rank
    for rank, group in enumerate(
        (
            "address_changed",
            "target_down target_up",
            "anomaly_all_open",
            "fingerprint_changed",
            "reboot_suspected",
            "port_opened port_closed expected_port_closed",
            "finding_resolved",
            "finding_opened finding_reopened",
        )
    )
    for kind in group.split()
}
# docs/architecture.md severities; finding_opened carries its finding's own severity.
_SEVERITY = {
    EventType.FINDING_REOPENED: Severity.CRITICAL,
    EventType.EXPECTED_PORT_CLOSED: Severity.WARNING,
    EventType.TARGET_DOWN: Severity.WARNING,
    EventType.FINGERPRINT_CHANGED: Severity.WARNING,
    EventType.ANOMALY_ALL_OPEN: Severity.WARNING,
}
# What a reopen summary mentions first, as the likeliest causes of the reopen.
_SINCE_TEXT = {
    EventType.REBOOT_SUSPECTED: "reboot suspected",
    EventType.FINGERPRINT_CHANGED: "fingerprint changed",
    EventType.ADDRESS_CHANGED: "address changed",
    EventType.TARGET_DOWN: "down",
}


@dataclasses.dataclass(frozen=True, slots=True)
class TargetPolicy:
    """What is expected of one target's ports, and the detection thresholds."""

    expected_open: frozenset[int] = frozenset()
    ignore: frozenset[int] = frozenset()
    hot: frozenset[int] = HOT_PORTS
    resolve_after: int = 2
    anomaly_share: float = 0.5
    anomaly_min_ports: int = 50

    def __post_init__(self) -> None:
        if self.resolve_after < 1:
            raise ValueError(f"resolve_after: must be at least 1, got {self.resolve_after}")
        if not 0.0 < self.anomaly_share <= 1.0:
            raise ValueError(f"anomaly_share: must be in (0, 1], got {self.anomaly_share}")
        if self.anomaly_min_ports < 1:
            raise ValueError(f"anomaly_min_ports: must be at least 1, got {self.anomaly_min_ports}")


@dataclasses.dataclass(frozen=True, slots=True)
class Evaluation:
    """The result of applying one observation: what to store and what to tell."""

    state: TargetState
    events: tuple[Event, ...]
    findings: tuple[Finding, ...]  # created (id None) or changed, by port
    reboot_suspected: bool
    # Unexpected ports this vantage saw open first: the other vantages should re-probe them.
    reprobe: frozenset[int] = frozenset()


def severity_for(port: int, reopened: bool, policy: TargetPolicy) -> Severity:
    """Severity of a finding on `port`: critical if reopened or hot, info if expected/ignored."""
    if reopened or (port in policy.hot and port not in policy.expected_open | policy.ignore):
        return Severity.CRITICAL
    if port in policy.expected_open or port in policy.ignore:
        return Severity.INFO
    return Severity.WARNING


def acknowledge(
    state: TargetState, port: int, until: dt.datetime, reason: str, now: dt.datetime
) -> tuple[TargetState, Finding]:
    """Acknowledge the active finding on `port` until `until`; LookupError if there is none."""
    finding = state.findings.get(port)
    if finding is None:
        raise LookupError(f"no active finding on port {_p(port)} of target {state.name!r}")
    if until <= now:
        raise ValueError(f"ack until {_iso(until)} is not after now ({_iso(now)})")
    acked = dataclasses.replace(
        finding, state=FindingState.ACKED, ack_until=until, ack_reason=reason.strip() or None
    )
    return dataclasses.replace(state, findings={**state.findings, port: acked}), acked


def expire_acks(state: TargetState, now: dt.datetime) -> tuple[TargetState, tuple[Finding, ...]]:
    """Turn acknowledged findings whose `ack_until` has passed back to open."""
    expired = tuple(
        dataclasses.replace(f, state=FindingState.OPEN, ack_until=None, ack_reason=None)
        for _, f in sorted(state.findings.items())
        if f.state is FindingState.ACKED and f.ack_until is not None and f.ack_until <= now
    )
    if not expired:
        return state, ()
    findings = {**state.findings, **{f.port: f for f in expired}}
    return dataclasses.replace(state, findings=findings), expired


def evaluate(
    prev: TargetState,
    obs: Observation,
    policy: TargetPolicy,
    now: dt.datetime,
    *,
    degraded: frozenset[str] = frozenset(),
) -> Evaluation:
    """Apply one scan observation to a target's state (see the module docstring for rules).

    `obs.vantage` is where it was seen from; `degraded` names the vantages judged degraded
    (see "Vantages" below): their silence is no evidence, their records are left out.
    """
    if obs.target != prev.name:
        raise ValueError(f"observation of target {obs.target!r} applied to {prev.name!r}")
    if now.utcoffset() is None:
        raise ValueError("now: must be timezone-aware")
    if obs.vantage == DEFAULT_VANTAGE and not prev.vantages and not degraded:
        return _Run(prev, obs, policy, now).run()  # one node alone: exactly as ever
    return _evaluate_vantage(prev, obs, policy, now, degraded)


class _Run:
    """One evaluation's working copy of the state, collecting events as rules fire."""

    def __init__(
        self,
        prev: TargetState,
        obs: Observation,
        policy: TargetPolicy,
        now: dt.datetime,
        merge: _Merge | None = None,
    ):
        self.prev, self.obs, self.policy, self.now = prev, obs, policy, now
        self.merge = merge
        base, expired = expire_acks(prev, now)
        self.findings = dict(base.findings)
        self.changed: dict[int, Finding] = {f.port: f for f in expired}
        self.resolved = dict(prev.resolved)
        self.ports = dict(prev.ports)
        self.events: list[Event] = []
        self.recent = list(prev.recent)
        self.status, self.status_since = prev.status, prev.status_since
        self.expected_refusing = prev.expected_refusing
        self.anomaly_since = prev.anomaly_since
        self.late = prev.last_observed is not None and obs.finished <= prev.last_observed
        self.answered_at, self.silent_until = prev.answered_at, prev.silent_until
        self.applied: set[int] = set()  # ports this observation updated
        self.reboot_reasons: dict[str, str] = {}
        self.fp_ports: list[int] = []
        self.fp_unexplained: list[int] = []

    def run(self) -> Evaluation:
        prev, obs = self.prev, self.obs
        answered = obs.responded or any(s is not Observed.FILTERED for s in obs.states.values())
        if not self.late and prev.address is not None and obs.address != prev.address:
            text = f"{prev.address} -> {obs.address}"
            details = {"previous": prev.address, "address": obs.address}
            self._emit(EventType.ADDRESS_CHANGED, f"address changed: {text}", details=details)
            self._note(EventType.ADDRESS_CHANGED, text)
        if not answered:
            self._silent()
            return self._finish()
        self._answered()
        if self.status is not TargetStatus.UP:
            return self._finish()  # an answer older than the silence: the past, not now
        if self._anomalous():
            self._reboot()
            return self._finish()
        if not self.late:
            self.anomaly_since = None
            self._check_expected_refusing()
        for port in sorted(obs.states):
            self._apply_port(port, obs.states[port])
        if self.fp_ports:
            self._note(EventType.FINGERPRINT_CHANGED, _ports_text(self.fp_ports))
        if self.fp_unexplained:
            text = f"fingerprint changed on {_ports_text(self.fp_unexplained)}"
            self.reboot_reasons["fingerprint_changed"] = text
        self._reboot()
        self._resolve_findings()
        self._open_findings()
        return self._finish()

    def _answered(self) -> None:
        """The target gave a TCP answer: UP, and back from DOWN is a suspected reboot.

        Only an answer newer than the newest silence applied ends that silence.
        """
        prev, obs = self.prev, self.obs
        at = obs.answered_at or obs.started
        self.answered_at = at if prev.answered_at is None else max(at, prev.answered_at)
        silent_until = prev.silent_until
        if silent_until is None and prev.status is TargetStatus.DOWN:
            silent_until = prev.status_since  # a state stored before evidence times
        if silent_until is not None and at <= silent_until:
            return
        if prev.status is TargetStatus.DOWN:
            since = prev.status_since
            text = f"down since {_short(since, self.now)}" if since else "was down"
            details = {"down_since": _iso(since) if since else None}
            self._emit(EventType.TARGET_UP, f"target answering again ({text})", details=details)
            self._note(EventType.TARGET_UP, text)
            self.reboot_reasons["target_up"] = f"back up ({text})"
        if prev.status is not TargetStatus.UP:
            self.status, self.status_since = TargetStatus.UP, self.now

    def _silent(self) -> None:
        """A scan nobody answered: maybe DOWN, ports untouched."""
        states = self.obs.states
        reference = self.policy.expected_open | {
            p for p, r in self.prev.ports.items() if r.state is Observed.OPEN
        }
        probed = bool(states) and (self.obs.complete or not reference.isdisjoint(states))
        if not probed:
            return
        prev_silent = self.prev.silent_until
        self.silent_until = (
            self.obs.finished if prev_silent is None else max(prev_silent, self.obs.finished)
        )
        # The newest answer applied, or for a state stored before evidence times, the newest
        # scan (any answer it held was no later).
        answered = self.prev.answered_at or self.prev.last_observed
        if answered is not None and self.obs.started <= answered:
            return  # silence that began before an answer applied is not news of an outage
        if self.prev.status is TargetStatus.UP:
            self.status, self.status_since = TargetStatus.DOWN, self.now
            since = self.prev.status_since
            details = {"up_since": _iso(since) if since else None, "ports_probed": len(states)}
            summary = f"target down: no answer on {len(states)} probed ports"
            self._emit(EventType.TARGET_DOWN, summary, details=details)
            self._note(EventType.TARGET_DOWN, f"{len(states)} ports silent")

    def _anomalous(self) -> bool:
        """Middlebox guard; raises its one event on entering the anomaly (late scans: none)."""
        states, policy, prev = self.obs.states, self.policy, self.prev
        opened = [p for p, s in states.items() if s is Observed.OPEN]
        if not opened or len(opened) < policy.anomaly_share * len(states):
            return False
        if len(states) < policy.anomaly_min_ports and prev.anomaly_since is None:
            return False
        fresh = sum(
            1 for p in opened if (r := prev.ports.get(p)) is None or r.state is not Observed.OPEN
        )
        if fresh * 2 <= len(opened):
            return False
        if prev.anomaly_since is None and not self.late:
            self.anomaly_since = self.now
            summary = (
                f"{len(opened)} of {len(states)} scanned ports answer as open: middlebox or "
                "SYN proxy suspected, port states kept"
            )
            details = {"scanned": len(states), "open": len(opened), "newly_open": fresh}
            self._emit(EventType.ANOMALY_ALL_OPEN, summary, details=details)
        return True

    def _apply_port(self, port: int, new: Observed) -> None:
        """Update one port's record from the scan, with its port-level events."""
        rec = self.ports.get(port)
        now, policy = self.obs.finished, self.policy  # records carry the observation's time
        seen = self.obs.seen_at.get(port, self.obs.started)  # when this evidence was observed
        if self.merge is not None:
            stale = self.merge.stale(port, seen)  # by this vantage's own record of the port
        else:
            stale = rec is not None and seen <= (rec.observed_at or rec.last_seen)
        if rec is not None and stale:
            # Newer evidence applied already (a scan that overlapped), or a replay. Its
            # fingerprints were taken after the scan, though: on a port still open they are
            # news (the quick scan after a reboot that sentinel scans overtook).
            self._late_fingerprint(rec, new)
            return
        if new is Observed.FILTERED and not self._silence_counts(port):
            return  # a timeout on a target that drops or went silent: no evidence at all
        expected, quiet = port in policy.expected_open, port in policy.ignore
        is_open = new is Observed.OPEN
        before: Observed | None = None
        if rec is None:
            if not (is_open or expected or port in self.findings or port in self.resolved):
                return  # a closed port never seen open is not worth a record
            rec = PortRecord(port=port, state=new, first_seen=now, last_seen=now, last_change=now)
        else:
            before = rec.state
        changes: dict[str, Any] = {
            "state": new,
            "last_seen": max(now, rec.last_seen),
            "observed_at": seen,
        }
        if before is not None and before is not new:
            changes["last_change"] = now
        if is_open:
            changes.update(closed_streak=0, last_open=now, first_open=rec.first_open or now)
            if before is not Observed.OPEN:
                changes["times_opened"] = rec.times_opened + 1
                if rec.times_closed:
                    changes["times_reopened"] = rec.times_reopened + 1
                if not quiet:
                    details = {"previous": before.value if before else None}
                    self._emit(EventType.PORT_OPENED, f"port {_p(port)} open", port, details)
            fp = self.obs.fingerprints.get(port)
            if fp is not None and not fp.is_empty():
                if rec.fingerprint is not None and not quiet:
                    self._fingerprint_change(rec, fp)
                changes["fingerprint"] = fp
        else:
            # Counted up to what resolving needs and no further: a port that stays closed
            # (an expected port down for days) then leaves its record as it was, and the scan
            # is quiet (only time advanced) instead of a write every 30 s.
            changes["closed_streak"] = min(rec.closed_streak + 1, policy.resolve_after)
            if self.merge is not None:  # closed as long as every vantage that looked saw it
                changes["closed_streak"] = self.merge.streaks.get(port, 1)
            if before is Observed.OPEN:
                changes["times_closed"] = rec.times_closed + 1
            if not quiet and expected and before in (None, Observed.OPEN):
                details = {"state": new.value, "previous": before.value if before else None}
                summary = f"expected port {_p(port)} {new.value}"
                self._emit(EventType.EXPECTED_PORT_CLOSED, summary, port, details)
            elif not quiet and before is Observed.OPEN:
                details = {"state": new.value, "open_since": _iso(rec.last_change)}
                self._emit(EventType.PORT_CLOSED, f"port {_p(port)} {new.value}", port, details)
        self.ports[port] = dataclasses.replace(rec, **changes)
        self.applied.add(port)

    def _late_fingerprint(self, rec: PortRecord, new: Observed) -> None:
        fp = self.obs.fingerprints.get(rec.port)
        if new is not Observed.OPEN or rec.state is not Observed.OPEN or fp is None:
            return
        if fp.is_empty() or fp == rec.fingerprint:
            return
        if rec.fingerprint is not None and rec.port not in self.policy.ignore:
            self._fingerprint_change(rec, fp)
        self.ports[rec.port] = dataclasses.replace(rec, fingerprint=fp)

    def _silence_counts(self, port: int) -> bool:
        """Whether `port` filtered is evidence that it closed (see the module docstring).

        With several vantages, judged on the vantage's whole scan (`_Merge.obs`), not on the
        ports left of it once other vantages' evidence took some out."""
        return silence_counts(self.obs if self.merge is None else self.merge.obs, port)

    def _fingerprint_change(self, rec: PortRecord, new: Fingerprint) -> None:
        port, old, last_reboot = rec.port, rec.fingerprint or Fingerprint(), self.prev.last_reboot
        changed = [
            label
            for label, a, b in zip(_IDENTITY_LABELS, old.identity(), new.identity(), strict=True)
            if a is not None and b is not None and a != b
        ]
        if not changed:
            return
        self.fp_ports.append(port)
        # Last seen open before a reboot we already suspected, or that reboot was suspected
        # moments ago: it explains the change. Services come back one by one, each with the
        # new certificate, and the scan that first fingerprints one may come after scans
        # that saw it open again without looking (another vantage's sentinel scans: the
        # incident seen from two vantages raised a second reboot_suspected for 443).
        explained = last_reboot is not None and (
            (rec.last_open is not None and rec.last_open < last_reboot)
            or self.now - last_reboot <= REBOOT_EXPLAINS_FOR
        )
        if not explained:
            self.fp_unexplained.append(port)
        summary = f"port {_p(port)} service changed: {', '.join(changed)}"
        details = {
            "changed": changed,
            "before": _fp_json(old),
            "after": _fp_json(new),
            "after_reboot": _iso(last_reboot) if explained and last_reboot else None,
        }
        self._emit(EventType.FINGERPRINT_CHANGED, summary, port, details)

    def _check_expected_refusing(self) -> None:
        """All expected ports refusing (RST) is a booting router; one accepting again ends it."""
        expected = self.policy.expected_open
        seen = {p: s for p, s in self.obs.states.items() if p in expected}
        accepting = sorted(p for p, s in seen.items() if s is Observed.OPEN)
        if accepting and self.prev.expected_refusing:
            text = f"expected {_ports_text(accepting)} accepting again after refusing"
            self.reboot_reasons["expected_ports_accepting"] = text
        if accepting:
            self.expected_refusing = False
        elif expected and len(seen) == len(expected):
            self.expected_refusing = all(s is Observed.CLOSED for s in seen.values())

    def _reboot(self) -> None:
        if not self.reboot_reasons:
            return
        text = "; ".join(self.reboot_reasons.values())
        details: dict[str, Any] = {"reasons": list(self.reboot_reasons)}
        if self.fp_unexplained:
            details["fingerprint_ports"] = list(self.fp_unexplained)
        self._emit(EventType.REBOOT_SUSPECTED, f"reboot suspected: {text}", details=details)
        self._note(EventType.REBOOT_SUSPECTED, text)

    def _resolve_findings(self) -> None:
        policy = self.policy
        for port in sorted(self.findings):
            if port in policy.expected_open or port in policy.ignore:
                reason = "expected" if port in policy.expected_open else "ignored"
                self._resolve(port, reason, f"port {_p(port)} now {reason}", keep=False)
                continue
            rec = self.ports.get(port)
            if port not in self.applied or rec is None or rec.state is Observed.OPEN:
                continue
            if rec.closed_streak >= policy.resolve_after:
                summary = f"port {_p(port)} {rec.state.value} in {rec.closed_streak} scans in a row"
                self._resolve(port, rec.state.value, summary, keep=True)

    def _resolve(self, port: int, reason: str, summary: str, keep: bool) -> None:
        finding = self.findings.pop(port)
        done = dataclasses.replace(finding, state=FindingState.RESOLVED, resolved_at=self.now)
        self.changed[port] = done
        if keep:
            self.resolved[port] = done
        details = {
            "reason": reason,
            "opened_at": _iso(finding.opened_at),
            "open_for_s": round((self.now - finding.opened_at).total_seconds()),
        }
        summary = f"{summary}, finding resolved"
        self._emit(EventType.FINDING_RESOLVED, summary, port, details, finding_id=finding.id)

    def _open_findings(self) -> None:
        policy, states, prev = self.policy, self.obs.states, self.prev
        for port in sorted(self.applied):
            if states[port] is not Observed.OPEN or port in self.findings:
                continue
            if port in policy.expected_open or port in policy.ignore:
                continue
            before = prev.ports.get(port)
            if port in self.obs.confirmed_open or (before and before.state is Observed.OPEN):
                self._open_finding(port)

    def _open_finding(self, port: int) -> None:
        old = self.resolved.get(port)
        rec = self.ports[port]
        finding = Finding(
            id=None,
            target=self.prev.name,
            port=port,
            severity=severity_for(port, old is not None, self.policy),
            state=FindingState.OPEN,
            opened_at=self.now,
            fingerprint=rec.fingerprint,
        )
        details: dict[str, Any] = {
            "hot": port in self.policy.hot,
            "fingerprint": rec.fingerprint.describe() if rec.fingerprint else None,
            "times_opened": rec.times_opened,
        }
        if old is None:
            hot = " (hot port)" if port in self.policy.hot else ""
            summary = f"port {_p(port)} open, not expected{hot}"
            self._emit(EventType.FINDING_OPENED, summary, port, details, severity=finding.severity)
        else:
            resolved_at = old.resolved_at or old.opened_at
            finding = dataclasses.replace(
                finding, reopen_count=old.reopen_count + 1, previous_resolved_at=resolved_at
            )
            since = [n for n in self.recent if n.at >= resolved_at]
            truncated = len(self.recent) >= MAX_RECENT and self.recent[0].at > resolved_at
            details.update(
                previous_resolved_at=_iso(resolved_at),
                previous_finding_id=old.id,
                reopen_count=finding.reopen_count,
                since=[{"type": n.type.value, "at": _iso(n.at), "detail": n.detail} for n in since],
                since_truncated=truncated,
            )
            parts = [f"closed since {_short(resolved_at, None)}"]
            for kind, text in _SINCE_TEXT.items():
                last = [n for n in since if n.type is kind]
                if last and len(parts) < 3:
                    parts.append(f"{text} {_short(last[-1].at, self.now)}")
            summary = f"port {_p(port)} open again ({', '.join(parts)})"
            self._emit(EventType.FINDING_REOPENED, summary, port, details)
        self.findings[port] = self.changed[port] = finding

    def _emit(
        self,
        type_: EventType,
        summary: str,
        port: int | None = None,
        details: dict[str, Any] | None = None,
        *,
        severity: Severity | None = None,
        finding_id: int | None = None,
    ) -> None:
        event = Event(
            type=type_,
            severity=severity or _SEVERITY.get(type_, Severity.INFO),
            target=self.prev.name,
            observed_at=self.now,
            summary=summary,
            port=port,
            details=details or {},
            finding_id=finding_id,
        )
        self.events.append(event)

    def _note(self, type_: EventType, detail: str) -> None:
        self.recent.append(Notable(type=type_, at=self.now, detail=detail))

    def _finish(self) -> Evaluation:
        prev, obs = self.prev, self.obs
        last_scan = dict(prev.last_scan)
        if obs.complete:
            last_scan[obs.kind] = max(obs.finished, last_scan.get(obs.kind, obs.finished))
        reboot = bool(self.reboot_reasons)
        reopened = sum(1 for e in self.events if e.type is EventType.FINDING_REOPENED)
        state = dataclasses.replace(
            prev,
            address=prev.address if self.late else obs.address,
            status=self.status,
            status_since=self.status_since,
            ports=self.ports,
            findings=self.findings,
            resolved=self.resolved,
            expected_refusing=self.expected_refusing,
            last_reboot=self.now if reboot else prev.last_reboot,
            last_scan=last_scan,
            reopened_total=prev.reopened_total + reopened,
            reboots_total=prev.reboots_total + reboot,
            last_observed=max(obs.finished, prev.last_observed or obs.finished),
            answered_at=self.answered_at,
            silent_until=self.silent_until,
            anomaly_since=self.anomaly_since,
            recent=tuple(self.recent[-MAX_RECENT:]),
        )
        events = sorted(self.events, key=lambda e: (_ORDER[e.type], e.port or 0))
        findings = tuple(self.changed[p] for p in sorted(self.changed))
        return Evaluation(state, tuple(events), findings, reboot)


# ------------------------------------------------------------------------------ vantages


@dataclasses.dataclass(frozen=True, slots=True)
class _Merge:
    """What `_Run` needs to apply one vantage's scan to the state merged across vantages."""

    obs: Observation  # the vantage's whole scan (the run sees only the ports it may change)
    view: VantageView  # the vantage's own record before this scan
    streaks: Mapping[int, int]  # per port this scan closes: the merged closed streak

    def stale(self, port: int, seen: dt.datetime) -> bool:
        """Evidence no newer than this vantage's own record of the port changes nothing.

        Judged by the vantage's record, not the merged one: another vantage's newer evidence
        must not hide this one's (the merged state would then depend on the order of arrival).
        """
        rec = self.view.ports.get(port)
        return rec is not None and seen <= rec.observed_at


def _answers(obs: Observation) -> bool:
    return obs.responded or any(s is not Observed.FILTERED for s in obs.states.values())


def _evaluate_vantage(
    prev: TargetState,
    obs: Observation,
    policy: TargetPolicy,
    now: dt.datetime,
    degraded: frozenset[str],
) -> Evaluation:
    """One vantage's scan against the merged state and the other vantages' records.

    See "Vantages" in the module docstring. Each vantage keeps its own evidence
    (`TargetState.vantages`); the merged state changes only where that evidence, together
    with the other healthy vantages', says so.
    """
    vantage = obs.vantage
    if vantage in degraded:
        # A degraded vantage's silence is its own path failing, not the target: no evidence.
        kept = {p: s for p, s in obs.states.items() if s is not Observed.FILTERED}
        if not _answers(obs):
            return Evaluation(prev, (), (), False)
        obs = dataclasses.replace(obs, states=kept, responded=True)
    track = vantage != DEFAULT_VANTAGE or bool(prev.vantages)
    view = prev.vantages.get(vantage, VantageView())
    others = {v: w for v, w in prev.vantages.items() if v != vantage and v not in degraded}
    new_view = _updated_view(view, obs, policy, prev)
    views = {**prev.vantages, vantage: new_view} if track else dict(prev.vantages)
    answered = _answers(obs)
    if not answered and any(w.answering() for w in others.values()):
        # A target is down only when every healthy vantage hears nothing.
        return Evaluation(dataclasses.replace(prev, vantages=views), (), (), False)
    merge = None
    if others:
        held_open = _open_in(others)
        states = {p: s for p, s in obs.states.items() if s is Observed.OPEN or p not in held_open}
        streaks = {
            p: min(w.ports[p].closed_streak for w in (new_view, *others.values()) if p in w.ports)
            for p, s in states.items()
            if s is not Observed.OPEN and p in new_view.ports
        }
        merge = _Merge(obs, view, streaks)
        merged_obs = dataclasses.replace(obs, states=states, responded=answered)
    else:
        merged_obs = obs
    ev = _Run(prev, merged_obs, policy, now, merge).run()
    if ev.state.anomaly_since is not None and track:
        # A middlebox answering every port: the vantage's port records stay as they were.
        views[vantage] = dataclasses.replace(new_view, ports=view.ports)
    # Seen open first: by no other vantage (a degraded one's evidence of an open port too).
    recorded, quiet = views.get(vantage, new_view).ports, policy.expected_open | policy.ignore
    known = _open_in({v: w for v, w in prev.vantages.items() if v != vantage}) | quiet
    reprobe = frozenset(
        p
        for p, s in obs.states.items()
        if s is Observed.OPEN
        and p in recorded
        and p not in known
        and ((old := view.ports.get(p)) is None or old.state is not Observed.OPEN)
    )
    state = dataclasses.replace(ev.state, vantages=views)
    if not others:
        return dataclasses.replace(ev, state=state, reprobe=reprobe if track else frozenset())
    healthy = {v: w for v, w in views.items() if v not in degraded}
    return _with_seen_from(dataclasses.replace(ev, state=state, reprobe=reprobe), healthy)


def _open_in(views: Mapping[str, VantageView]) -> frozenset[int]:
    """The ports some of `views` last saw open."""
    return frozenset(
        p for w in views.values() for p, r in w.ports.items() if r.state is Observed.OPEN
    )


def _updated_view(
    view: VantageView, obs: Observation, policy: TargetPolicy, prev: TargetState
) -> VantageView:
    """The vantage's own record after its scan: liveness, and ports as `_apply_port` keeps."""
    if not _answers(obs):
        if not obs.states:
            return view
        until = obs.finished if view.silent_until is None else max(view.silent_until, obs.finished)
        return dataclasses.replace(view, silent_until=until)  # silence touches no port
    at = obs.answered_at or obs.started
    answered_at = at if view.answered_at is None else max(at, view.answered_at)
    ports = dict(view.ports)
    keep = set(prev.ports) | policy.expected_open | set(prev.findings) | set(prev.resolved)
    for port, new in obs.states.items():
        rec = ports.get(port)
        seen = obs.seen_at.get(port, obs.started)
        if rec is not None and seen <= rec.observed_at:
            continue
        if new is Observed.FILTERED and not silence_counts(obs, port):
            continue
        if rec is None and new is not Observed.OPEN and port not in keep:
            continue  # as in the merged state: a closed port never seen open gets no record
        streak = 0
        if new is not Observed.OPEN:
            streak = min((rec.closed_streak if rec else 0) + 1, policy.resolve_after)
        since = rec.since if rec is not None and rec.state is new else seen
        ports[port] = VantagePort(state=new, observed_at=seen, closed_streak=streak, since=since)
    return VantageView(answered_at=answered_at, silent_until=view.silent_until, ports=ports)


def seen_from(views: Mapping[str, VantageView], port: int) -> dict[str, tuple[str, ...]] | None:
    """The vantages by what each last saw of `port` (open first), or None if none saw it.

    While some vantage sees the port open, a vantage that saw it closed or filtered only
    before that (a record from before a reopen, not yet looked again) is not named: it has
    not answered since."""
    records = {name: rec for name in views if (rec := views[name].ports.get(port)) is not None}
    opened = [r.since or r.observed_at for r in records.values() if r.state is Observed.OPEN]
    open_since = min(opened, default=None)
    by_state: dict[str, list[str]] = {}
    for name, rec in sorted(records.items()):
        stale = open_since is not None and rec.observed_at < open_since
        if stale and rec.state is not Observed.OPEN:
            continue
        by_state.setdefault(rec.state.value, []).append(name)
    order = [o.value for o in Observed]
    return {k: tuple(by_state[k]) for k in order if k in by_state} or None


def _with_seen_from(ev: Evaluation, views: Mapping[str, VantageView]) -> Evaluation:
    """Active findings (and their events) say from where the port is seen open and not."""
    state = ev.state
    changed = {f.port: f for f in ev.findings}
    findings = dict(state.findings)
    for port, finding in state.findings.items():
        where = seen_from(views, port)
        if where != finding.seen_from:
            findings[port] = changed[port] = dataclasses.replace(finding, seen_from=where)
        elif port in changed:
            changed[port] = finding
    events = tuple(
        dataclasses.replace(e, details={**e.details, "seen_from": _seen_json(findings[e.port])})
        if e.type in (EventType.FINDING_OPENED, EventType.FINDING_REOPENED) and e.port in findings
        else e
        for e in ev.events
    )
    return dataclasses.replace(
        ev,
        state=dataclasses.replace(state, findings=findings),
        events=events,
        findings=tuple(changed[p] for p in sorted(changed)),
    )


def _seen_json(finding: Finding) -> dict[str, list[str]] | None:
    where = finding.seen_from
    return None if where is None else {k: list(v) for k, v in where.items()}


def silence_counts(obs: Observation, port: int) -> bool:
    """Whether `port` filtered in `obs` is evidence that it closed (see the module docstring)."""
    if obs.dropped:
        return False
    if obs.filtered_live is not None and port not in obs.filtered_live:
        return False
    # Judged on the observation alone, so that a replay decides the same.
    return any(s is not Observed.FILTERED for p, s in obs.states.items() if p != port)


def _p(port: int) -> str:
    return f"{port}/tcp"


def _ports_text(ports: Iterable[int], limit: int = 5) -> str:
    ordered = sorted(set(ports))
    text = ", ".join(_p(p) for p in ordered[:limit])
    return text + (f" and {len(ordered) - limit} more" if len(ordered) > limit else "")


def _iso(when: dt.datetime) -> str:
    return rfc3339(when, "milliseconds")


def _short(when: dt.datetime, ref: dt.datetime | None) -> str:
    """`03:12Z` on the day of `ref`, else `2026-11-20 09:12Z` (always with a date if no ref)."""
    when = when.astimezone(dt.UTC)
    if ref is not None and when.date() == ref.astimezone(dt.UTC).date():
        return when.strftime("%H:%MZ")
    return when.strftime("%Y-%m-%d %H:%MZ")


def _fp_json(fp: Fingerprint) -> dict[str, Any]:
    fields = dataclasses.asdict(fp)
    fields["tls_not_after"] = _iso(fp.tls_not_after) if fp.tls_not_after else None
    return fields


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def only_time_advanced(before: TargetState, after: TargetState) -> bool:
    """True when `after` differs from `before` in scan and last-seen times only.

    Such a result (a quiet scan: nothing opened, closed or changed) need not be
    written at once; the service batches the times.
    """
    return _timeless(before) == _timeless(after)


def _timeless(state: TargetState) -> TargetState:
    return dataclasses.replace(
        state,
        last_scan={},
        last_observed=None,
        answered_at=None,
        silent_until=None,
        ports={
            port: dataclasses.replace(
                rec,
                last_seen=_EPOCH,
                last_open=None if rec.last_open is None else _EPOCH,
                observed_at=None,
            )
            for port, rec in state.ports.items()
        },
        # A vantage's evidence times pass; a port's state, its streak, and whether the
        # vantage hears the target are news (another vantage's evaluation rests on them).
        vantages={
            name: VantageView(
                answered_at=_EPOCH if view.answering() else None,
                ports={
                    p: dataclasses.replace(r, observed_at=_EPOCH) for p, r in view.ports.items()
                },
            )
            for name, view in state.vantages.items()
        },
    )
