"""Notification rendering (pure): golden bodies per format, hostile text, limits, webhook contract.

Golden files: tests/golden/notify/<format>-<case>.json hold the headers and the parsed body of
`render(format, CASES[case])`. After an intended change of wording or layout, rewrite them with

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/notify/test_formats.py -k golden

and read the diff by eye: they are what operators see.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
from hypothesis import given, settings
from hypothesis import strategies as st

from exposuremon.config.fields import NOTIFY_TYPES
from exposuremon.detect import TargetPolicy, evaluate
from exposuremon.model import (
    Event,
    EventType,
    Fingerprint,
    Observation,
    Observed,
    ScanKind,
    Severity,
    TargetState,
)
from exposuremon.notify.formats import (
    CHANNEL_TYPES,
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    SecretError,
    dedup_key,
    discord_size,
    discord_url,
    render,
    render_parts,
    split_ntfy_url,
    webhook_bodies,
)
from exposuremon.notify.message import Message, MessageKind, Request
from exposuremon.notify.text import NAME_LIMIT, ZWSP, clean
from exposuremon.notify.wording import TEST_TITLE, vantages_text

GOLDEN = Path(__file__).parent / "golden" / "notify"
E = EventType
NAME, ADDR = "surgery-router", "198.51.100.7"
URL = "https://status.example.net"
SECRET = "golden-secret"
TOPIC = "router-alerts"
NOW = dt.datetime(2026, 11, 26, 3, 14, 7, tzinfo=dt.UTC)
CLOSED = "2026-11-20T09:12:00.000Z"
DOWN = "2026-11-25T23:40:05.000Z"
REBOOT = "2026-11-26T03:14:07.000Z"
HTTP_FP = "HTTP Server: bintec httpd; title: Digitalisierungsbox Premium"
TLS_FP = "HTTP Server: bintec httpd; TLS CN=digitalisierungsbox"
BUG_PORTS = [*range(80, 90), *range(440, 443), *range(444, 450)]  # 443 is the forward
CHAT = ("slack", "discord", "msteams", "googlechat")
HOSTILE = (
    "@everyone @here @channel @all <!channel> <!here> <@U123> <@&1> <#C1> "
    "[click](http://evil) <http://evil|x> <a href=x>x</a> <script> "
    "*bold* _x_ ~~s~~ `code` ||spoiler|| {{DATE(2026-01-01T00:00:00Z)}}\n# head\r\n"
    "NUL\x00 RTL\u202eevil zero\u200bwidth bad\ud800surrogate "
)
MENTIONS = re.compile(r"@(everyone|here|channel|all)\b", re.IGNORECASE)


def ev(
    type_: EventType, severity: Severity, summary: str, port: int | None = None, **kw: Any
) -> Event:
    """A saved event (ids set) at NOW."""
    kw.setdefault("id", 100 + (port or 0))
    kw.setdefault("observed_at", NOW)
    return Event(type=type_, severity=severity, target=NAME, summary=summary, port=port, **kw)


def msg(*events: Event, **kw: Any) -> Message:
    """A message of `events` for the surgery router, with a status page and a delivery id."""
    kw.setdefault("public_url", URL)
    kw.setdefault("delivery_id", "ops/scan-4711")
    return Message(
        target=kw.pop("target", NAME), address=kw.pop("address", ADDR), events=events, **kw
    )


def reopened(port: int, fp: str, finding_id: int, **details: Any) -> Event:
    """A `finding_reopened` as detect writes it after a reboot."""
    since = [
        {"type": "target_down", "at": DOWN, "detail": "20 ports silent"},
        {"type": "target_up", "at": REBOOT, "detail": "down since 2026-11-25 23:40Z"},
        {
            "type": "reboot_suspected",
            "at": REBOOT,
            "detail": "back up (down since 2026-11-25 23:40Z); fingerprint changed on 443/tcp",
        },
        {"type": "fingerprint_changed", "at": REBOOT, "detail": "443/tcp"},
    ]
    base = {
        "hot": True,
        "fingerprint": fp,
        "times_opened": 2,
        "previous_resolved_at": CLOSED,
        "previous_finding_id": finding_id - 50,
        "reopen_count": 1,
        "since": since,
        "since_truncated": False,
    }
    summary = (
        f"port {port}/tcp open again (closed since 2026-11-20 09:12Z, reboot suspected 03:14Z)"
    )
    return ev(
        E.FINDING_REOPENED,
        Severity.CRITICAL,
        summary,
        port,
        finding_id=finding_id,
        details={**base, **details},
    )


def reboot_case() -> Message:
    """The incident: 19 bug ports open again after a reboot, with the cert change on 443."""
    fp_change = ev(
        E.FINGERPRINT_CHANGED,
        Severity.WARNING,
        "port 443/tcp service changed: TLS certificate",
        443,
        details={
            "changed": ["TLS certificate"],
            "before": {"tls_sha256": "a" * 64, "tls_subject": "CN=digitalisierungsbox"},
            "after": {"tls_sha256": "b" * 64, "tls_subject": "CN=digitalisierungsbox"},
            "after_reboot": None,
        },
    )
    findings = [
        reopened(p, HTTP_FP if p < 100 else TLS_FP, 21 + i) for i, p in enumerate(BUG_PORTS)
    ]
    return msg(fp_change, *findings)


def new_case() -> Message:
    """One new unexpected admin port (its port_opened folds into the finding)."""
    opened = ev(
        E.PORT_OPENED, Severity.INFO, "port 8080/tcp open", 8080, details={"previous": None}
    )
    finding = ev(
        E.FINDING_OPENED,
        Severity.CRITICAL,
        "port 8080/tcp open, not expected (hot port)",
        8080,
        id=209,
        finding_id=9,
        details={
            "hot": True,
            "fingerprint": "HTTP Server: nginx; title: Admin login",
            "times_opened": 1,
        },
    )
    return msg(opened, finding)


def vantages_case() -> Message:
    """Fleet with vantages: one port confirmed from two, one open from one only."""
    both = ev(
        E.FINDING_OPENED,
        Severity.CRITICAL,
        "port 8080/tcp open, not expected (hot port)",
        8080,
        id=210,
        finding_id=10,
        details={"hot": True, "times_opened": 1, "seen_from": {"open": ["fra", "nyc"]}},
    )
    one = ev(
        E.FINDING_OPENED,
        Severity.WARNING,
        "port 8443/tcp open, not expected",
        8443,
        id=211,
        finding_id=11,
        details={"hot": False, "seen_from": {"open": ["fra"], "filtered": ["nyc"]}},
    )
    return msg(both, one)


def resolved_case() -> Message:
    """A finding resolved: the port stayed closed."""
    closed = ev(E.PORT_CLOSED, Severity.INFO, "port 8080/tcp closed", 8080, id=300)
    done = ev(
        E.FINDING_RESOLVED,
        Severity.INFO,
        "port 8080/tcp closed in 2 scans in a row, finding resolved",
        8080,
        id=301,
        finding_id=7,
        details={"reason": "closed", "opened_at": "2026-11-26T01:09:07.000Z", "open_for_s": 7500},
    )
    return msg(closed, done)


def down_case() -> Message:
    """The target stopped answering; no public_url configured."""
    down = ev(
        E.TARGET_DOWN,
        Severity.WARNING,
        "target down: no answer on 23 probed ports",
        details={"up_since": "2026-11-20T08:00:00.000Z", "ports_probed": 23},
    )
    return msg(down, public_url=None)


def reminder_case() -> Message:
    """Second reminder of three unacknowledged findings."""
    day1 = NOW - dt.timedelta(days=1)
    events = (
        reopened(80, HTTP_FP, 21, since=[]),
        reopened(81, HTTP_FP, 22, since=[]),
        ev(
            E.FINDING_OPENED,
            Severity.CRITICAL,
            "port 8443/tcp open, not expected (hot port)",
            8443,
            finding_id=40,
            details={"hot": True, "fingerprint": "TLS CN=fritz.box", "times_opened": 1},
        ),
    )
    dated = tuple(dataclasses.replace(e, observed_at=day1) for e in events)
    return msg(*dated, kind=MessageKind.REMINDER, reminder_count=2, delivery_id="ops/reminder-21-2")


def notify_test_case() -> Message:
    """`exposuremon notify-test`, as the notifier builds it."""
    return Message(
        target="exposuremon",
        address=None,
        events=(),
        kind=MessageKind.TEST,
        public_url=URL,
        delivery_id="ops/test/20261126T031407.000000Z",
    )


def flapping_case() -> Message:
    """An unexpected port toggling: one critical port_flapping (its own changes are held)."""
    flapping = ev(
        E.PORT_FLAPPING,
        Severity.CRITICAL,
        "port 8081/tcp flapping: 4 changes in 18s, unexpected: exposed while open; its changes "
        "are recorded, not notified, until stable for 5 scans",
        8081,
        details={
            "state": "closed",
            "changes": 4,
            "first_change": "2026-11-26T03:13:49.000Z",
            "window_s": 600.0,
            "threshold": 4,
            "settle": 5,
            "expected": False,
        },
    )
    return msg(flapping)


def flap_ended_case() -> Message:
    """The flapping port settled: one summary with its final state and finding."""
    ended = ev(
        E.PORT_FLAP_ENDED,
        Severity.CRITICAL,
        "port 8081/tcp stopped flapping: open (finding open) after 20 changes in 2m",
        8081,
        details={
            "state": "open",
            "finding": "open",
            "flapping_since": "2026-11-26T03:12:07.000Z",
            "changes": 20,
            "stable_scans": 5,
            "notify_as": "critical",
        },
    )
    return msg(ended)


def advisory_case() -> Message:
    """The incident's firmware recognised by its HTTP Server header."""
    matched = ev(
        E.ADVISORY_MATCHED,
        Severity.CRITICAL,
        "advisory bintec-portforward-2019: firmware before 10.2.7 Patch 2 opens 80-89 and "
        "440-449 with every port forward (port 443/tcp, http_server: bintec httpd)",
        details={
            "rule": "bintec-portforward-2019",
            "text": "firmware before 10.2.7 Patch 2 opens 80-89 and 440-449 with every port "
            "forward",
            "url": "https://example.net/advisory",
            "port": 443,
            "matched": {"http_server": "bintec httpd"},
            "fingerprint": {"http_server": "bintec httpd", "tls_subject": "CN=digitalisierungsbox"},
        },
    )
    return msg(matched)


def advisory_cleared_case() -> Message:
    """After the firmware update the rule no longer matches."""
    cleared = ev(
        E.ADVISORY_CLEARED,
        Severity.INFO,
        "advisory bintec-portforward-2019 no longer matches (port 443/tcp: HTTP Server: "
        "be.IP httpd)",
        details={
            "rule": "bintec-portforward-2019",
            "text": "firmware before 10.2.7 Patch 2 opens 80-89 and 440-449 with every port "
            "forward",
            "url": "https://example.net/advisory",
            "port": 443,
            "matched_since": "2026-11-20T09:12:00.000Z",
            "matched_fingerprint": {"http_server": "bintec httpd"},
            "fingerprint": {"http_server": "be.IP httpd"},
            "notify_as": "critical",
        },
    )
    return msg(cleared)


def vantage_case() -> Message:
    """A vantage degraded: its own message, no target, no address."""
    event = dataclasses.replace(
        ev(
            E.VANTAGE_DEGRADED,
            Severity.WARNING,
            "vantage fra degraded: scans silent for 150 of 200 answering targets; their "
            "silence changes no target until it recovers",
            details={"vantage": "fra", "node": "scan-fra-1", "silent": 150, "answering": 200},
        ),
        target=None,
        vantage="fra",
    )
    return Message(
        target="",
        vantage="fra",
        address=None,
        events=(event,),
        public_url=URL,
        delivery_id="ops/vantage/71",
    )


def vantage_recovered_case() -> Message:
    """The vantage recovered: info, one line."""
    event = dataclasses.replace(
        ev(
            E.VANTAGE_RECOVERED,
            Severity.INFO,
            "vantage fra recovered: its targets answer again (degraded since 2026-11-26T03:10:00Z)",
            details={"vantage": "fra", "degraded_since": "2026-11-26T03:10:00Z"},
        ),
        target=None,
        vantage="fra",
    )
    return Message(target="", vantage="fra", address=None, events=(event,), public_url=None)


CASES = {
    "vantage-degraded": vantage_case,
    "vantage-recovered": vantage_recovered_case,
    "reboot-reopen": reboot_case,
    "port-flapping": flapping_case,
    "port-flap-ended": flap_ended_case,
    "advisory-matched": advisory_case,
    "advisory-cleared": advisory_cleared_case,
    "new-finding": new_case,
    "vantages": vantages_case,
    "resolved": resolved_case,
    "target-down": down_case,
    "reminder": reminder_case,
    "test": notify_test_case,
}


def rendered(fmt: str, message: Message) -> Request:
    """`render` with the extras delivery passes: ntfy topic, webhook secret, the time."""
    (request,) = rendered_parts(fmt, message)
    return request


def rendered_parts(fmt: str, message: Message) -> tuple[Request, ...]:
    """`render_parts` with the extras delivery passes: ntfy topic, webhook secret, the time."""
    return render_parts(
        fmt,
        message,
        secret=SECRET if fmt == "webhook" else None,
        topic=TOPIC if fmt == "ntfy" else None,
        now=NOW,
    )


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def check(fmt: str, request: Request) -> dict[str, Any]:
    """Assert what must hold for every rendering; returns the parsed body."""
    body: dict[str, Any] = json.loads(request.body.decode("utf-8"))
    assert request.headers["Content-Type"] == "application/json"
    assert all(" " <= c < "\x7f" for v in request.headers.values() for c in v)
    for text in strings(body):
        bad = [c for c in text if unicodedata.category(c) in ("Cc", "Cs") and c != "\n"]
        assert not bad, f"{fmt}: control characters {bad!r} in {text[:80]!r}"
        assert "\u202e" not in text
    LIMITS[fmt](body)
    if fmt in CHAT:
        for text in strings(body):
            assert not MENTIONS.search(text), f"{fmt}: mention in {text[:200]!r}"
            assert "](" not in text, f"{fmt}: markdown link in {text[:200]!r}"
            assert "{{" not in text
        FORBIDDEN[fmt](body)
    return body


def limits_slack(body: dict[str, Any]) -> None:
    assert len(body["text"]) <= 40_000
    assert len(body["blocks"]) <= 50
    for block in body["blocks"]:
        texts = [block["text"]] if "text" in block else block["elements"]
        assert all(t["type"] == "mrkdwn" and len(t["text"]) <= 3000 for t in texts)


def limits_discord(body: dict[str, Any]) -> None:
    assert len(body["content"]) <= 2000
    assert body["allowed_mentions"] == {"parse": []}
    (embed,) = body["embeds"]
    assert len(embed["title"]) <= 256
    assert len(embed.get("description", "")) <= 4096
    assert len(embed["fields"]) <= 25
    assert all(len(f["name"]) <= 256 and 0 < len(f["value"]) <= 1024 for f in embed["fields"])
    assert len(embed["footer"]["text"]) <= 2048
    assert discord_size(embed) <= 6000


def limits_teams(body: dict[str, Any]) -> None:
    # Workflows answer 202 before posting: an oversized card would be lost without an error.
    assert len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()) <= 24_000
    card = body["attachments"][0]["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["version"] == "1.4"
    assert "entities" not in json.dumps(card)


def limits_googlechat(body: dict[str, Any]) -> None:
    assert set(body) == {"text"}
    assert len(body["text"]) <= 4096


def limits_ntfy(body: dict[str, Any]) -> None:
    assert body["topic"] == TOPIC
    assert 1 <= body["priority"] <= 5
    assert len(body["message"].encode()) <= 4096
    assert len(body["title"]) <= 250


def limits_webhook(body: dict[str, Any]) -> None:
    assert set(body) == WEBHOOK_KEYS
    # `seen_from`: finding events from a fleet with several vantages only.
    assert all(set(e) - {"seen_from"} == EVENT_KEYS for e in body["events"])
    assert 1 <= body["part"] <= body["parts"]
    assert len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()) < 256_000


LIMITS = {
    "slack": limits_slack,
    "discord": limits_discord,
    "msteams": limits_teams,
    "googlechat": limits_googlechat,
    "ntfy": limits_ntfy,
    "webhook": limits_webhook,
}
WEBHOOK_KEYS = {
    "version",
    "source",
    "target",
    "address",
    "vantage",
    "events",
    "kind",
    "delivery_id",
    "part",
    "parts",
}
EVENT_KEYS = {
    "id",
    "type",
    "severity",
    "port",
    "protocol",
    "observed_at",
    "summary",
    "finding_id",
    "dedup_key",
}
OUR_LINK = re.compile(r"<https://status\.example\.net/(#target-[^|<>]*)?\|status page>")


def no_raw_angle(text: str) -> None:
    """Outside our own status link, `<` only ever appears as an entity."""
    assert "<" not in OUR_LINK.sub("", text), text[:300]


def forbidden_slack(body: dict[str, Any]) -> None:
    for text in [body["text"], *(t for b in body["blocks"] for t in strings(b))]:
        no_raw_angle(text)


def forbidden_discord(body: dict[str, Any]) -> None:
    for text in strings(body):
        # Escaped (`\<`) outside code spans, broken by a zero-width space inside them.
        assert not re.search(r"(?<!\\)<(?!\u200b)", text), text[:300]
        assert not re.search(r"(?<!\\)<[@#:!/t]", text)


def forbidden_teams(body: dict[str, Any]) -> None:
    card = json.dumps(body)
    assert '"TextBlock"' not in card  # only TextRuns: nothing is parsed as markdown


def forbidden_googlechat(body: dict[str, Any]) -> None:
    # No entities (Chat shows them as typed): a `<` outside our link is always followed by a
    # zero-width space, so `<users/all>` and `<url|text>` from a banner are no tokens.
    assert not re.search(r"<(?!\u200b)", OUR_LINK.sub("", body["text"])), body["text"][:300]


FORBIDDEN = {
    "slack": forbidden_slack,
    "discord": forbidden_discord,
    "msteams": forbidden_teams,
    "googlechat": forbidden_googlechat,
}


# ------------------------------------------------------------------------------- goldens


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("fmt", CHANNEL_TYPES)
def test_golden(fmt: str, case: str) -> None:
    """Each format renders each kind of message exactly as its reviewed golden file."""
    request = rendered(fmt, CASES[case]())
    got = {"headers": dict(request.headers), "body": check(fmt, request)}
    path = GOLDEN / f"{fmt}-{case}.json"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(got, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert path.exists(), f"no golden file {path.name}: run with UPDATE_GOLDEN=1 and review it"
    assert got == json.loads(path.read_text(encoding="utf-8"))


def test_reboot_headline_says_what_and_why() -> None:
    """A reopen-after-reboot group is one message; its headline counts ports and names the cause."""
    request = rendered("slack", reboot_case())
    text = json.loads(request.body)["text"]
    head = text.splitlines()[0]
    assert (
        "surgery-router (198.51.100.7): 19 ports open again after a suspected reboot — critical"
        in head
    )
    assert "ports 80-89 (10)" in text
    assert "ports 440-442, 444-449 (9)" in text
    assert "closed since 2026-11-20 09:12Z" in text
    assert "`HTTP Server: bintec httpd" in text
    assert "2026-11-25 23:40Z target down: 20 ports silent" in text
    assert "<https://status.example.net/#target-surgery-router|status page>" in text


@pytest.mark.parametrize("fmt", CHANNEL_TYPES)
def test_no_link_without_public_url(fmt: str) -> None:
    """Without `public_url` no format links anywhere (no guessed URL)."""
    message = dataclasses.replace(reboot_case(), public_url=None)
    body = check(fmt, rendered(fmt, message))
    assert "https://" not in json.dumps(body)
    assert not {"click", "url", "actions"} & {k for k in strings(body)}


@pytest.mark.parametrize("fmt", CHANNEL_TYPES)
def test_delivery_header_only_when_set(fmt: str) -> None:
    """`X-Exposuremon-Delivery` carries the delivery id, and is absent when there is none."""
    assert rendered(fmt, new_case()).headers[DELIVERY_HEADER] == "ops/scan-4711"
    bare = dataclasses.replace(new_case(), delivery_id="")
    assert DELIVERY_HEADER not in rendered(fmt, bare).headers


def test_test_message_is_marked_in_every_format() -> None:
    """A test message says plainly that nothing is exposed, in every chat format."""
    for fmt in ("slack", "discord", "msteams", "googlechat", "ntfy"):
        text = json.dumps(check(fmt, rendered(fmt, notify_test_case())), ensure_ascii=False)
        assert TEST_TITLE in text.replace("\\", "")
    body = check("webhook", rendered("webhook", notify_test_case()))
    assert body["kind"] == "test"
    assert body["events"] == []


def test_test_message_with_example_events_labels_them() -> None:
    """Example events in a test message are labelled as not real."""
    message = dataclasses.replace(new_case(), kind=MessageKind.TEST)
    text = json.loads(rendered("googlechat", message).body)["text"]
    assert TEST_TITLE in text
    assert "Example lines (not real findings)" in text
    assert "Example target (not real): surgery-router (198.51.100.7)" in text


# -------------------------------------------------------------------------- big groups


def many_fingerprints(n: int) -> Message:
    """`n` reopened ports, each with its own fingerprint (nothing to group)."""
    return msg(*(reopened(1000 + i, f"banner {i} " + "x" * 150, 500 + i) for i in range(n)))


@pytest.mark.parametrize("fmt", CHANNEL_TYPES)
def test_large_group_is_one_readable_message(fmt: str) -> None:
    """40 reopened ports with distinct details: a few described, the rest as a compact port list."""
    body = check(fmt, rendered(fmt, many_fingerprints(40)))
    text = json.dumps(body, ensure_ascii=False).replace("\\\\", "\\")
    if fmt == "webhook":
        assert len(body["events"]) == 40
        return
    assert "40 ports open again after a suspected reboot" in text
    assert "more ports: 1" in text  # "… and 35 more ports: 1005-1039"
    assert "banner 0" in text


@pytest.mark.parametrize("fmt", CHANNEL_TYPES)
def test_huge_message_stays_within_limits(fmt: str) -> None:
    """2000 events with 200-character fingerprints still render within every service limit."""
    for request in rendered_parts(fmt, many_fingerprints(2000)):
        check(fmt, request)


def test_large_webhook_group_is_split_into_parts_under_256_kb() -> None:
    """1200 events (over 700 KB in one body) go in parts under 256 KB, each event exactly once."""
    summary = "port open, not expected: " + "Ü" * 270  # 2 bytes a character in UTF-8
    events = [
        ev(E.FINDING_OPENED, Severity.CRITICAL, summary, 1000 + i, id=i, finding_id=i)
        for i in range(1200)
    ]
    message = msg(*events)
    (whole,) = webhook_bodies(message, limit=10**9)
    assert len(json.dumps(whole, separators=(",", ":")).encode()) > 700_000
    requests = rendered_parts("webhook", message)
    bodies = [check("webhook", r) for r in requests]
    n = len(requests)
    assert n >= 3
    assert all(len(r.body) < 256_000 for r in requests)
    assert [e["id"] for b in bodies for e in b["events"]] == [e.id for e in message.events]
    assert [(b["part"], b["parts"]) for b in bodies] == [(i, n) for i in range(1, n + 1)]
    # Receivers dedup on the delivery id: each part has its own, in header and body alike.
    expected = [f"ops/scan-4711/part{i}of{n}" for i in range(1, n + 1)]
    assert [b["delivery_id"] for b in bodies] == expected
    assert [r.headers[DELIVERY_HEADER] for r in requests] == expected
    assert [r.headers["webhook-id"] for r in requests] == expected
    for body in bodies:  # every part is a complete body of the contract
        assert {k: body[k] for k in ("version", "source", "target", "address", "kind")} == {
            "version": 1,
            "source": "exposuremon",
            "target": NAME,
            "address": ADDR,
            "kind": "events",
        }
    with pytest.raises(ValueError, match=f"takes {n} requests"):
        render("webhook", message, now=NOW)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=60),
    limit=st.integers(min_value=1_500, max_value=20_000),
    summary=st.text(max_size=300),
)
def test_webhook_parts_carry_every_event_once_within_the_limit(
    n: int, limit: int, summary: str
) -> None:
    """For any group and size limit, the parts keep the order, each event once, each part fits."""
    events = [ev(E.FINDING_OPENED, Severity.WARNING, summary, 1 + i, id=i) for i in range(n)]
    bodies = webhook_bodies(msg(*events), limit=limit)
    assert [e["id"] for b in bodies for e in b["events"]] == list(range(n))
    assert all(len(json.dumps(b, separators=(",", ":"), ensure_ascii=False).encode()) <= limit
               for b in bodies)  # fmt: skip
    assert [b["part"] for b in bodies] == list(range(1, len(bodies) + 1))
    assert {b["parts"] for b in bodies} == {len(bodies)}
    assert len({b["delivery_id"] for b in bodies}) == len(bodies)


# ------------------------------------------------------------------------- hostile text


def hostile_message(kind: MessageKind = MessageKind.EVENTS, text: str = HOSTILE) -> Message:
    """Attacker-controlled text everywhere a service or DNS could put it."""
    fp = Fingerprint(banner=text, http_server=text, http_title=text, tls_subject=text)
    events = (
        reopened(
            443, fp.describe(), 7, since=[{"type": "address_changed", "at": DOWN, "detail": text}]
        ),
        ev(
            E.FINGERPRINT_CHANGED,
            Severity.WARNING,
            text,
            443,
            details={"changed": [text], "after": dataclasses.asdict(fp) | {"tls_not_after": None}},
        ),
        ev(
            E.FINDING_OPENED,
            Severity.WARNING,
            text,
            8080,
            finding_id=8,
            details={"fingerprint": text},
        ),
        ev(E.TARGET_DOWN, Severity.WARNING, text, details={}),
        ev(E.ADDRESS_CHANGED, Severity.INFO, text),
        ev(E.FINDING_RESOLVED, Severity.INFO, text, 22, finding_id=3, details={"reason": text}),
    )
    return Message(
        target=text,
        address=text,
        events=events,
        kind=kind,
        public_url=URL,
        delivery_id="ops/\r\nX-Injected: 1",
        reminder_count=1,
    )


@pytest.mark.parametrize("kind", list(MessageKind))
@pytest.mark.parametrize("fmt", CHANNEL_TYPES)
def test_hostile_text_is_neutralised(fmt: str, kind: MessageKind) -> None:
    """Mentions, links, markup, control and bidi characters from banners never reach a chat raw."""
    request = rendered(fmt, hostile_message(kind))
    check(fmt, request)
    assert "\r" not in request.headers[DELIVERY_HEADER]
    assert "\n" not in request.headers[DELIVERY_HEADER]


@pytest.mark.parametrize("fmt", CHANNEL_TYPES)
def test_ten_kilobyte_banner_is_cut(fmt: str) -> None:
    """A 10 kB banner (and target name) is cut to a short snippet and keeps every limit."""
    big = "A" * 5000 + HOSTILE + "B" * 5000
    body = check(fmt, rendered(fmt, hostile_message(text=big)))
    if fmt != "webhook":
        assert "A" * 301 not in json.dumps(body)  # summaries 300, service text 200


def test_discord_escapes_markdown_and_mentions() -> None:
    """Discord: markdown and mention syntax from a banner arrive escaped, and nothing can ping."""
    body = check("discord", rendered("discord", hostile_message()))
    title = body["embeds"][0]["title"]
    assert title.startswith("@\u200beveryone @\u200bhere")
    assert "\\<@\u200bU123\\>" in title
    assert "\\[click\\]\u200b\\(http://evil\\)" in title
    fields = {f["name"]: f["value"] for f in body["embeds"][0]["fields"]}
    what = fields["What happened since they were closed"]  # summaries: escaped, not code
    assert "\\*bold\\*" in what
    assert "\\|\\|spoiler\\|\\|" in what


def test_googlechat_shows_text_as_written_with_mentions_inert() -> None:
    """Google Chat: `AT&T <admin>` arrives as written (no entities); `<users/all>` is no mention."""
    message = hostile_message(text="AT&T <admin> <users/all>")
    text = json.loads(rendered("googlechat", message).body)["text"]
    assert f"AT&T <{ZWSP}admin> <{ZWSP}users/all>" in text
    assert not {"&amp;", "&lt;", "&gt;"} & {m for m in re.findall(r"&\w+;", text)}
    assert "<https://status.example.net/#target-" in text  # our own link still works


def test_slack_escapes_entities() -> None:
    """Slack: `<!channel>` and friends arrive as entities, inside code spans for service text."""
    text = json.loads(rendered("slack", hostile_message()).body)["text"]
    assert "&lt;!channel&gt;" in text
    assert "&lt;@\u200bU123&gt;" in text
    assert "`@\u200beveryone" in text  # a fingerprint in a code span
    assert "'code'" in text  # backticks cannot close the span


def test_clean_removes_control_and_format_characters() -> None:
    """`clean` drops NUL, bidi, zero-width and lone surrogates, folds lines, caps the length."""
    assert clean("a\x00b\u202ec\u200bd\ud800e\nf\r\ng\u2028h") == "abcde f g h"
    assert clean("x" * 300) == "x" * 199 + "…"


# ---------------------------------------------------------------------------- properties

TOKENS = [
    "@everyone",
    "@here",
    "<!channel>",
    "<@U1>",
    "<#1>",
    "[a](http://x)",
    "{{",
    "`",
    "\\",
    "&",
]
text_st = st.lists(
    st.one_of(
        st.text(max_size=30),
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),  # lone surrogates
        st.characters(max_codepoint=0x9F),  # control characters
        st.sampled_from(TOKENS),
    ),
    max_size=15,
).map("".join)


@settings(max_examples=60, deadline=None)
@given(target=text_st, banner=text_st, title=text_st, subject=text_st, summary=text_st)
def test_any_text_renders_safely(
    target: str, banner: str, title: str, subject: str, summary: str
) -> None:
    """For any banners, titles, subjects, names and summaries every format is valid and safe."""
    fp = Fingerprint(banner=banner, http_title=title, tls_subject=subject)
    events = (
        reopened(80, fp.describe(), 1),
        ev(
            E.FINDING_OPENED,
            Severity.WARNING,
            summary,
            8080,
            finding_id=2,
            details={"fingerprint": banner},
        ),
        ev(E.TARGET_UP, Severity.INFO, summary),
    )
    for kind in MessageKind:
        message = Message(target=target, address=subject, events=events, kind=kind, public_url=URL)
        for fmt in CHANNEL_TYPES:
            check(fmt, rendered(fmt, message))


@settings(max_examples=60, deadline=None)
@given(target=text_st)
def test_googlechat_shows_any_target_name_as_written(target: str) -> None:
    """For any name, Chat shows the cleaned name itself: only invisible breaks are added."""
    message = dataclasses.replace(new_case(), target=target)
    body = check("googlechat", rendered("googlechat", message))
    assert clean(target, NAME_LIMIT).replace("`", "'") in body["text"].replace(ZWSP, "")


@settings(max_examples=40, deadline=None)
@given(secret=st.text(min_size=1, max_size=40), target=text_st)
def test_webhook_signature_verifies(secret: str, target: str) -> None:
    """The signature header is HMAC-SHA256 of the exact body bytes under the secret."""
    message = dataclasses.replace(new_case(), target=target)
    request = render("webhook", message, secret=secret, now=NOW)
    scheme, _, digest = request.headers[SIGNATURE_HEADER].partition("=")
    expected = hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    assert scheme == "sha256"
    assert hmac.compare_digest(digest, expected)
    assert set(json.loads(request.body)) == WEBHOOK_KEYS


whsec_st = st.binary(min_size=1, max_size=64).map(
    lambda key: "whsec_" + base64.b64encode(key).decode()
)


@settings(max_examples=40, deadline=None)
@given(secret=st.one_of(whsec_st, st.text(min_size=1, max_size=40)), target=text_st)
def test_standard_webhooks_headers_verify_with_the_reference_library(
    secret: str, target: str
) -> None:
    """`webhook-id/-timestamp/-signature` pass the `standardwebhooks` library's check."""
    now = dt.datetime.now(dt.UTC)  # the library checks the timestamp against its own clock
    message = dataclasses.replace(new_case(), target=target)
    request = render("webhook", message, secret=secret, now=now)
    key: str | bytes = (
        secret if secret.startswith("whsec_") else secret.encode("utf-8", "surrogateescape")
    )
    body = standardwebhooks.Webhook(key).verify(request.body, dict(request.headers))
    assert body == json.loads(request.body)
    assert request.headers["webhook-id"] == "ops/scan-4711"  # the delivery id: dedup on it
    assert request.headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert request.headers[SIGNATURE_HEADER].startswith("sha256=")  # kept for old receivers


def test_a_replayed_webhook_is_refused_after_five_minutes() -> None:
    """A captured request is refused by the reference check once its timestamp is 5 min old."""
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    hook = standardwebhooks.Webhook(secret)
    old = render("webhook", new_case(), secret=secret, now=dt.datetime.now(dt.UTC))
    hook.verify(old.body, dict(old.headers))
    stale = render(
        "webhook", new_case(), secret=secret, now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=6)
    )
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError, match="too old"):
        hook.verify(stale.body, dict(stale.headers))
    # The id is the delivery id, the same on every attempt; only time and signature change.
    assert old.headers["webhook-id"] == stale.headers["webhook-id"]
    assert old.headers["webhook-signature"] != stale.headers["webhook-signature"]


def test_a_whsec_secret_signs_with_its_decoded_bytes() -> None:
    """`whsec_<base64>` keys the Standard Webhooks HMAC with the decoded bytes, as the spec says."""
    key = bytes(range(32))
    secret = "whsec_" + base64.b64encode(key).decode()
    request = render("webhook", new_case(), secret=secret, now=NOW)
    signed = b"ops/scan-4711." + str(int(NOW.timestamp())).encode() + b"." + request.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert request.headers["webhook-signature"] == f"v1,{expected}"
    # The old header keeps its key: the secret's text, as receivers configured it.
    old = hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers[SIGNATURE_HEADER] == f"sha256={old}"


@pytest.mark.parametrize("secret", ["whsec_not*base64", "whsec_"])
def test_a_broken_whsec_secret_is_an_error_that_hides_it(secret: str) -> None:
    """A `whsec_` secret that is not base64 (or empty) is refused without showing its value."""
    with pytest.raises(SecretError) as info:
        render("webhook", new_case(), secret=secret, now=NOW)
    assert "not*base64" not in str(info.value)


# ---------------------------------------------------------------------------- webhook


def test_webhook_body_is_the_contract() -> None:
    """The generic body is the architecture doc's example field for field, plus kind/delivery_id."""
    event = reopened(443, TLS_FP, 7)
    request = render("webhook", msg(event), now=NOW)
    assert request.body.startswith(b'{"version":1,"source":"exposuremon","target":"surgery-router"')
    body = json.loads(request.body)
    assert body["events"] == [
        {
            "id": 543,
            "type": "finding_reopened",
            "severity": "critical",
            "port": 443,
            "protocol": "tcp",
            "observed_at": "2026-11-26T03:14:07Z",
            "summary": event.summary,
            "finding_id": 7,
            "dedup_key": "surgery-router/tcp/443/7",
        }
    ]
    assert (body["kind"], body["delivery_id"]) == ("events", "ops/scan-4711")
    assert (body["part"], body["parts"]) == (1, 1)
    assert SIGNATURE_HEADER not in request.headers
    assert "webhook-signature" not in request.headers


def test_dedup_keys() -> None:
    """Finding events key on the finding, other finding events add their type, the rest their id."""
    resolved = resolved_case().events[1]
    down = down_case().events[0]
    assert dedup_key(NAME, resolved) == "surgery-router/tcp/8080/7/finding_resolved"
    assert dedup_key(NAME, down) == "surgery-router/target_down/100"
    assert (
        dedup_key(NAME, dataclasses.replace(down, id=None))
        == "surgery-router/target_down/2026-11-26T03:14:07Z"
    )


def test_webhook_empty_secret_is_an_error() -> None:
    """An empty signing secret is refused rather than signing with an empty key."""
    with pytest.raises(ValueError, match="secret is empty"):
        render("webhook", new_case(), secret="", now=NOW)


# ------------------------------------------------------------------------------- API


def test_channel_types_match_config() -> None:
    """Every type the config accepts has a renderer, and no other."""
    assert CHANNEL_TYPES == NOTIFY_TYPES


def test_unknown_channel_type_is_named() -> None:
    """An unknown type is a ValueError that names it."""
    with pytest.raises(ValueError, match="'telegram'"):
        render("telegram", new_case())


def test_ntfy_needs_a_topic() -> None:
    """ntfy JSON publishing carries the topic in the body, so render refuses to go without one."""
    with pytest.raises(ValueError, match="topic"):
        render("ntfy", new_case())
    with pytest.raises(ValueError, match="topic"):
        render("ntfy", new_case(), topic="bad/topic")


@pytest.mark.parametrize(
    ("url", "root", "topic"),
    [
        ("https://ntfy.sh/alerts", "https://ntfy.sh/", "alerts"),
        ("https://example.net/ntfy/router_alerts/", "https://example.net/ntfy/", "router_alerts"),
        ("http://127.0.0.1:8080/a-b?auth=tok", "http://127.0.0.1:8080/?auth=tok", "a-b"),
    ],
)
def test_split_ntfy_url(url: str, root: str, topic: str) -> None:
    """An ntfy channel URL splits into the root to POST JSON to and the topic."""
    assert split_ntfy_url(url) == (root, topic)


def test_split_ntfy_url_error_hides_the_url() -> None:
    """A URL without a topic is an error that does not repeat the (secret) URL."""
    with pytest.raises(ValueError, match="topic") as info:
        split_ntfy_url("https://ntfy.sh/")
    assert "ntfy.sh" not in str(info.value)


def test_ntfy_priority_follows_severity() -> None:
    """ntfy priority: critical 5, warning 4, info and good news 3."""
    priorities = [
        json.loads(rendered("ntfy", case()).body)["priority"]
        for case in (reboot_case, down_case, resolved_case, notify_test_case)
    ]
    assert priorities == [5, 4, 3, 3]


def test_detect_output_renders_the_incident() -> None:
    """Events straight from detect for the reopen-after-reboot walk render as the expected story."""
    policy = TargetPolicy(expected_open=frozenset({443}))
    state, now = TargetState(name=NAME), dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)
    cert_a = Fingerprint(tls_sha256="a" * 64, tls_subject="CN=router")
    cert_b = Fingerprint(tls_sha256="b" * 64, tls_subject="CN=router")
    every = [*BUG_PORTS, 443]

    def scan(
        open_ports: list[int], fps: dict[int, Fingerprint], silent: bool = False
    ) -> tuple[Event, ...]:
        nonlocal state, now
        now += dt.timedelta(minutes=30)
        states = {
            p: Observed.FILTERED
            if silent
            else Observed.OPEN
            if p in open_ports
            else Observed.CLOSED
            for p in every
        }
        obs = Observation(
            target=NAME,
            kind=ScanKind.SENTINEL,
            address=ADDR,
            started=now,
            finished=now,
            complete=True,
            states=states,
            confirmed_open=frozenset(open_ports),
            fingerprints=fps,
            responded=not silent,
        )
        outcome = evaluate(state, obs, policy, now)
        ids = {f.port: 50 + f.port for f in outcome.findings}
        state = dataclasses.replace(
            outcome.state,
            findings={
                p: dataclasses.replace(f, id=ids.get(p, f.id))
                for p, f in outcome.state.findings.items()
            },
            resolved={
                p: dataclasses.replace(f, id=ids.get(p, f.id))
                for p, f in outcome.state.resolved.items()
            },
        )
        return outcome.events

    scan(every, {443: cert_a})
    scan([443], {443: cert_a})
    scan([443], {443: cert_a})
    scan([], {}, silent=True)
    events = scan(every, {443: cert_b})
    saved = tuple(
        dataclasses.replace(
            e,
            id=1000 + i,
            finding_id=50 + e.port if e.port is not None and e.port in BUG_PORTS else None,
        )
        for i, e in enumerate(events)
    )
    message = Message(target=NAME, address=ADDR, events=saved, public_url=URL)
    text = json.loads(rendered("googlechat", message).body)["text"]
    assert "19 ports open again after a suspected reboot — critical" in text
    assert "ports 80-89, 440-442, 444-449 (19)" in text
    assert "reboot suspected" in text
    assert "closed since" in text
    for fmt in CHANNEL_TYPES:
        check(fmt, rendered(fmt, message))


@pytest.mark.parametrize(
    ("url", "posted"),
    [
        (
            "https://discord.com/api/webhooks/1/tok",
            "https://discord.com/api/webhooks/1/tok?wait=true",
        ),
        (
            "https://discord.com/api/webhooks/1/tok?thread_id=42",
            "https://discord.com/api/webhooks/1/tok?thread_id=42&wait=true",
        ),
        (
            "https://discord.com/api/webhooks/1/tok?wait=false&thread_id=4%32",
            "https://discord.com/api/webhooks/1/tok?thread_id=4%32&wait=true",
        ),
    ],
)
def test_discord_url_asks_to_wait_and_keeps_the_query(url: str, posted: str) -> None:
    """Discord is posted with `wait=true` (an unsaved message is an error), `thread_id` kept."""
    assert discord_url(url) == posted


def test_vantages_are_named_where_they_matter() -> None:
    """Messages say from where a finding's port is seen open; nothing with one vantage."""
    assert vantages_text(None) is None
    assert vantages_text({"open": ["fra", "nyc"]}) == "confirmed from fra and nyc"
    assert vantages_text({"open": ["fra"]}) == "open from fra"
    assert (
        vantages_text({"open": ["fra"], "closed": ["sfo"], "filtered": ["nyc", "syd"]})
        == "open from fra only; closed from sfo; filtered from nyc and syd"
    )
    assert vantages_text({"filtered": ["nyc"]}) is None
    assert vantages_text({"open": "fra"}) is None  # not a list: nothing trusted
