"""The status page: view model (pure), rendering with hostile text, and serving it over HTTP."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Collection, Mapping
from html.parser import HTMLParser
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exposuremon.config.models import Config, TargetConfig, load_config
from exposuremon.model import (
    AdvisoryMatch,
    Event,
    EventType,
    Finding,
    FindingState,
    Fingerprint,
    Observed,
    PortFlap,
    PortRecord,
    ScanKind,
    Severity,
    TargetState,
    TargetStatus,
)
from exposuremon.schedule import MaintenanceWindow, Recurring
from exposuremon.store import FindingCounts, TargetOverview
from exposuremon.store.database import Store
from exposuremon.web import status_page as page
from exposuremon.web.app import make_app
from tests.cli.test_daemon_commands import CONFIG, fill

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(1)>"
HOSTILE_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"


class Tags(HTMLParser):
    """Every start tag with its attributes, and the document's text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Tags:
    """The page parsed as a browser would tokenise it."""
    tags = Tags()
    tags.feed(html)
    tags.close()
    return tags


def target(name: str, address: str, expected: str = "") -> TargetConfig:
    """A configured target."""
    doc = {"name": name, "address": address} | ({"expected_open": expected} if expected else {})
    return TargetConfig.model_validate(doc)


def rec(port: int, state: Observed = Observed.OPEN, fp: Fingerprint | None = None) -> PortRecord:
    """A port record last changed an hour ago."""
    hour_ago = NOW - dt.timedelta(hours=1)
    return PortRecord(port, state, hour_ago, NOW, hour_ago, times_opened=1, fingerprint=fp)


def finding(
    fid: int,
    name: str,
    port: int,
    severity: Severity = Severity.CRITICAL,
    *,
    reopened: int = 0,
    acked: bool = False,
    minutes_ago: int = 30,
    fp: Fingerprint | None = None,
) -> Finding:
    """An active finding."""
    return Finding(
        id=fid,
        target=name,
        port=port,
        severity=severity,
        state=FindingState.ACKED if acked else FindingState.OPEN,
        opened_at=NOW - dt.timedelta(minutes=minutes_ago),
        reopen_count=reopened,
        previous_resolved_at=NOW - dt.timedelta(hours=5) if reopened else None,
        ack_until=NOW + dt.timedelta(days=7) if acked else None,
        ack_reason=f"vendor {HOSTILE}" if acked else None,
        fingerprint=fp,
    )


def state(
    name: str, address: str, ports: Mapping[int, PortRecord], findings: list[Finding]
) -> TargetState:
    """A target that is up, scanned a minute ago."""
    return TargetState(
        name=name,
        address=address,
        status=TargetStatus.UP,
        status_since=NOW - dt.timedelta(days=2),
        ports=ports,
        findings={f.port: f for f in findings},
        last_scan={ScanKind.SENTINEL: NOW - dt.timedelta(minutes=1)},
        reopened_total=1,
    )


def story() -> page.PageModel:
    """Two scanned targets (hostile banners among them) and one never scanned."""
    evil = Fingerprint(banner=HOSTILE)
    web_fp = Fingerprint(http_server=HOSTILE, http_title=HOSTILE, tls_subject=f"CN={HOSTILE}")
    surgery = state(
        "surgery",
        "127.0.0.61",
        {443: rec(443, fp=web_fp), 80: rec(80), 444: rec(444), 2222: rec(2222, fp=evil)},
        [
            finding(1, "surgery", 80, minutes_ago=10),
            finding(2, "surgery", 444, reopened=2, minutes_ago=50),
            finding(3, "surgery", 2222, Severity.WARNING, minutes_ago=5, fp=evil),
        ],
    )
    branch = state(
        "branch",
        "127.0.0.62",
        {22: rec(22), 443: rec(443, Observed.CLOSED)},
        [finding(4, "branch", 22, acked=True)],
    )
    events = [
        Event(
            EventType.FINGERPRINT_CHANGED,
            Severity.INFO,
            "surgery",
            NOW - dt.timedelta(minutes=2),
            f"banner now {HOSTILE}",
            port=2222,
        ),
        Event(EventType.TARGET_UP, Severity.INFO, "branch", NOW - dt.timedelta(hours=3), "up"),
    ]
    targets = [
        target("surgery", "127.0.0.61", "443"),
        target("branch", "127.0.0.62", "22,443"),
        target("lab", "127.0.0.63"),
    ]
    states = {"surgery": surgery, "branch": branch}
    return page.build(targets, page.overview_of(states), states, events, NOW)


# ------------------------------------------------------------------------------- view model


def test_findings_reopened_first_then_severity_acked_last() -> None:
    """Open findings: reopened first, then critical before warning, acknowledged ones last."""
    model = story()
    assert [(f.target, f.port) for f in model.findings] == [
        ("surgery", 444),
        ("surgery", 80),
        ("surgery", 2222),
        ("branch", 22),
    ]
    assert model.findings[-1].acked
    surgery = model.targets[0]
    assert [f.port for f in surgery.findings] == [444, 80, 2222]


def test_counts_and_title() -> None:
    """The title counts unacknowledged findings by severity; acked and reopened are counted."""
    model = story()
    assert model.counts == {
        "targets": 3,
        "attention": 2,
        "critical": 2,
        "warning": 1,
        "info": 0,
        "reopened": 1,
        "acked": 1,
        "down": 0,
        "up": 2,
        "unknown": 0,
        "never": 1,
    }
    assert model.title == "exposuremon: 2 critical, 1 warning"
    empty = page.build([target("lab", "127.0.0.63")], page.overview_of({}), {}, [], NOW)
    assert empty.title == "exposuremon: all clear"


def test_ports_marked_expected_unexpected_and_missing() -> None:
    """Open ports say expected or not; an expected port that is not open is listed as such."""
    model = story()
    surgery, branch = model.attention
    (lab,) = model.rows
    assert model.attention_reasons == {"surgery": "reopened", "branch": "expected port not open"}
    assert [(p.port, p.expected, p.open) for p in surgery.ports] == [
        (80, False, True),
        (443, True, True),
        (444, False, True),
        (2222, False, True),
    ]
    assert [(p.port, p.expected, p.open) for p in branch.ports] == [
        (22, True, True),
        (443, True, False),
    ]
    assert lab.status == "never scanned"
    assert lab.ports == ()
    assert lab.address == "127.0.0.63"
    assert [k for k, _ in surgery.last_scans] == ["sentinel", "quick", "full"]
    assert surgery.last_scans[0][1] == page.When("1m ago", "2026-11-26T11:59:00Z")
    assert surgery.last_scans[1][1] is None


def test_flapping_ports_and_matched_advisories_are_marked() -> None:
    """A flapping port is marked on the card (also while it is closed), and a matched advisory
    is listed with the port and fingerprint that matched."""
    box = target("box", "198.51.100.9", "443")
    episode = PortFlap(changes=(NOW,), since=NOW - dt.timedelta(minutes=3), stable=1)
    fp = Fingerprint(http_server="bintec elmeg httpd")
    known = dataclasses.replace(
        state("box", "198.51.100.9", {443: rec(443, fp=fp), 8081: rec(8081, Observed.CLOSED)}, []),
        flaps={8081: episode, 443: PortFlap(changes=(NOW,))},
        advisories={
            "bintec": AdvisoryMatch(NOW - dt.timedelta(hours=2), 443, Severity.CRITICAL, fp)
        },
    )
    card = page.target_view(box, known, NOW)
    assert [(p.port, p.open, p.flapping) for p in card.ports] == [
        (443, True, False),
        (8081, False, True),
    ]
    (advisory,) = card.advisories
    assert (advisory.rule, advisory.severity, advisory.port) == ("bintec", "critical", 443)
    assert advisory.service is not None
    assert "bintec elmeg httpd" in advisory.service
    model = dataclasses.replace(story(), attention=(card,), attention_reasons={"box": "info"})
    html = page.render(model)
    assert "8081</b> unexpected · not open now · flapping" in html
    assert "advisory <b>bintec</b>" in html


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (dt.timedelta(0), "just now"),
        (dt.timedelta(seconds=42), "42s ago"),
        (dt.timedelta(minutes=5, seconds=59), "5m ago"),
        (dt.timedelta(hours=3), "3h ago"),
        (dt.timedelta(days=2, hours=23), "2d ago"),
        (-dt.timedelta(days=7), "in 7d"),
    ],
)
def test_ago(delta: dt.timedelta, text: str) -> None:
    """Relative times use the largest whole unit."""
    assert page.ago(NOW - delta, NOW) == text


@given(st.timedeltas(min_value=dt.timedelta(days=-5000), max_value=dt.timedelta(days=5000)))
def test_ago_is_always_short_text(delta: dt.timedelta) -> None:
    """Any time, past or future, renders as a few characters."""
    text = page.ago(NOW - delta, NOW)
    assert 5 <= len(text) <= 12
    assert text == "just now" or text.endswith(" ago") or text.startswith("in ")


# --------------------------------------------------------------------------------- rendering


def test_hostile_text_is_escaped_everywhere() -> None:
    """Banners, titles, Server headers, TLS subjects, ack reasons and summaries stay text."""
    html = page.render(story())
    doc = parse(html)
    assert [t for t, _ in doc.tags if t in ("script", "img", "iframe", "svg", "object")] == []
    assert not any(k.startswith("on") for _, attrs in doc.tags for k in attrs)
    assert "<script" not in html.lower()
    text = "".join(doc.text)
    assert HOSTILE in text  # shown, as text
    assert f"banner: {HOSTILE}" in text
    assert f"vendor {HOSTILE}" in text
    assert html.count(HOSTILE_ESCAPED) >= 4


def test_page_structure() -> None:
    """Anchors per target, a self-refresh, a title with counts, and nothing loaded from outside."""
    html = page.render(story())
    doc = parse(html)
    ids = {attrs.get("id") for _, attrs in doc.tags}
    assert {"target-surgery", "target-branch", "target-lab"} <= ids
    refresh = [a for t, a in doc.tags if t == "meta" and a.get("http-equiv") == "refresh"]
    assert refresh == [{"http-equiv": "refresh", "content": "30"}]
    assert "<title>exposuremon: 2 critical, 1 warning</title>" in html
    # No external URL at all: the machine running this may have no internet.
    assert not re.search(r"(?i)(https?:)?//[a-z0-9]", html.replace("http-equiv", ""))
    assert [a for t, a in doc.tags if t == "link"] == []
    text = " ".join(" ".join(doc.text).split())
    assert "reopened ×2" in text
    assert "443 expected · not open" in text
    assert "never scanned" in text
    assert "fingerprint changed" in text


# ------------------------------------------------------------------------------------ served


@dataclasses.dataclass
class ReadOnly:
    """A backend that only reads (the page needs nothing else)."""

    store: Store
    config: Config

    async def scan_now(self, target: str) -> bool:
        """Never called by the page."""
        raise AssertionError("the page must not schedule scans")

    async def ack(self, finding_id: int, until: dt.datetime, reason: str) -> Finding:
        """Never called by the page."""
        raise AssertionError("the page must not ack")

    def vantage_health(self) -> tuple[str, bool] | None:
        """Not judged here."""
        return None

    def not_ready(self) -> str | None:
        """Always ready."""
        return None

    def connection_rate(self, target: str) -> float | None:
        """No rate limit seen (these tests do not scan)."""
        return None

    def maintenance_changed(self) -> None:
        """Never called by the page."""
        raise AssertionError("the page must not change maintenance windows")


async def test_served_from_a_filled_store(tmp_path: Path) -> None:
    """GET / renders the store's story as HTML with a script-forbidding CSP; queries ignored."""
    await fill(tmp_path / "state")
    config_path = tmp_path / "config.toml"
    config_path.write_text(CONFIG.replace('"state"', f'"{tmp_path / "state"}"'))
    async with await Store.open(tmp_path / "state") as store:
        app = make_app(CollectorRegistry(), ReadOnly(store, load_config(config_path)))
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/?x=%00&y=<script>")
            html = await resp.text()
            assert resp.status == 200
            assert resp.content_type == "text/html"
            csp = resp.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp
            assert "script-src" not in csp
    text = " ".join(" ".join(parse(html).text).split())
    assert "exposuremon: 3 critical" in html  # office 80, 3389 and branch 22; 8080 is acked
    for needle in ("office", "branch", "lab", "3389/tcp", "reopened", "vendor remote support"):
        assert needle in text


async def test_fleet_section_with_more_than_one_node(tmp_path: Path) -> None:
    """No section while one node (or none) has joined; with two, nodes, liveness, shards and
    a differing config are shown (the same store the API reads)."""
    await fill(tmp_path / "state")
    config_path = tmp_path / "config.toml"
    config_path.write_text(CONFIG.replace('"state"', f'"{tmp_path / "state"}"'))
    config = load_config(config_path)
    async with await Store.open(tmp_path / "state") as store:
        html = await page.render_status(store, config, NOW)
        assert 'id="fleet"' not in html
        await store.heartbeat("scan-a", "default", "1.4.0", "h1")
        await store.acquire("default", "scan-a", take=range(64), renew={}, ttl=60)
        html = await page.render_status(store, config, NOW)
        assert 'id="fleet"' not in html  # one node: nothing to say
        await store.heartbeat("scan-<b>", "default", "1.3.0", "h2")
        html = await page.render_status(store, config, NOW)
    assert 'id="fleet"' in html
    assert "scan-&lt;b&gt;" in html
    text = " ".join(" ".join(parse(html).text).split())
    assert "2 of 2 nodes alive" in text
    assert "vantage default up (2 live)" in text
    assert "every shard held (64 per vantage)" in text
    assert "2 with another config" in text  # a tie: both flagged
    rows = re.findall(r'<tr class="node">(.*?)</tr>', html, re.S)
    assert len(rows) == 2
    (a_row,) = [row for row in rows if "scan-a<" in row]
    assert ">64<" in a_row
    assert "differs" in a_row


def test_fleet_section_counts_unheld_shards_and_silent_nodes() -> None:
    """The pure section: a silent node, unheld shards, a differing config."""
    from exposuremon.fleet import fleet_view
    from exposuremon.store import FleetNode, FleetSnapshot, Lease

    now = int(NOW.timestamp() * 1_000_000)
    nodes = tuple(
        FleetNode(name, "default", now - 10**9, now - seen * 10**6, "1", cfg)
        for name, seen, cfg in [("a", 1, "x"), ("b", 1, "x"), ("c", 99, "y")]
    )
    leases = {"default": (Lease(0, "a", 1, now + 10**7), Lease(1, "b", 1, now + 10**7))}
    view = fleet_view(FleetSnapshot(now, 4, leases, nodes), 15)
    section = page.fleet_section(view, NOW)
    assert section is not None
    assert (section.alive, section.differs, section.unheld, section.shards) == (2, 1, 2, 4)
    assert [(n.name, n.alive, n.shards) for n in section.nodes] == [
        ("a", True, 1),
        ("b", True, 1),
        ("c", False, 0),
    ]
    assert section.nodes[2].last_seen.ago == "1m ago"
    html = page.render(dataclasses.replace(story(), fleet=section))
    text = " ".join(" ".join(parse(html).text).split())
    assert "2 shards held by nobody" in text
    assert "silent" in text
    assert page.fleet_section(None, NOW) is None


# ------------------------------------------------------------- attention, search and paging


def overview(
    stored: set[str],
    down: Collection[str] = (),
    not_open: Mapping[str, frozenset[int]] | None = None,
    findings: Mapping[str, FindingCounts] | None = None,
) -> TargetOverview:
    """An overview as `Store.target_overview` reads it."""
    return TargetOverview(
        stored=frozenset(stored),
        status=dict.fromkeys(down, TargetStatus.DOWN),
        not_open=dict(not_open or {}),
        findings=dict(findings or {}),
    )


def test_attention_reasons_in_order_of_urgency() -> None:
    """Reopened, critical, down, warning, expected port not open, info; acked alone is none."""
    names = ["info", "clean", "acked", "warn", "missing", "down", "crit", "reop", "never"]
    targets = [target(n, f"198.51.100.{i}", "443") for i, n in enumerate(names)]
    found = {
        "info": FindingCounts({Severity.INFO: 1}),
        "acked": FindingCounts(acked=2),
        "warn": FindingCounts({Severity.WARNING: 1}),
        "crit": FindingCounts({Severity.CRITICAL: 2}),
        "reop": FindingCounts({Severity.WARNING: 1}, reopened=1),
    }
    ov = overview(set(names) - {"never"}, {"down"}, {"missing": frozenset({443})}, found)
    reasons = [page.attention_reason(t, ov) for t in targets]
    urgent, rest = page.split(targets, reasons)
    assert [(t.name, why) for t, why in urgent] == [
        ("reop", "reopened"),
        ("crit", "critical"),
        ("down", "down"),
        ("warn", "warning"),
        ("missing", "expected port not open"),
        ("info", "info"),
    ]
    assert [t.name for t in rest] == ["clean", "acked", "never"]
    counts = page.counts_of(targets, ov, reasons)
    assert (counts["attention"], counts["never"], counts["down"], counts["up"]) == (6, 1, 1, 7)
    assert (counts["critical"], counts["warning"], counts["acked"]) == (2, 2, 2)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["up", "down", "unknown", "never"]),
            st.integers(0, 2),  # open critical findings
            st.integers(0, 2),  # acked findings
            st.booleans(),  # an expected port not open
        ),
        max_size=40,
    ),
    st.sampled_from(["", "1", "router-0", "198.51"]),
)
def test_split_partitions_the_matching_targets(
    spec: list[tuple[str, int, int, bool]], q: str
) -> None:
    """Every matching target is in exactly one list; attention is sorted by tier, then config."""
    targets = [target(f"router-{i}", f"198.51.100.{i}", "443") for i in range(len(spec))]
    stored = {f"router-{i}" for i, s in enumerate(spec) if s[0] != "never"}
    status = {
        f"router-{i}": TargetStatus(s[0]) for i, s in enumerate(spec) if s[0] in ("down", "unknown")
    }
    ov = TargetOverview(
        stored=frozenset(stored),
        status=status,
        not_open={f"router-{i}": frozenset({443}) for i, s in enumerate(spec) if s[3]},
        findings={
            f"router-{i}": FindingCounts({Severity.CRITICAL: s[1]} if s[1] else {}, acked=s[2])
            for i, s in enumerate(spec)
            if s[1] or s[2]
        },
    )
    reasons = [page.attention_reason(t, ov) for t in targets]
    urgent, rest = page.split(targets, reasons, q)
    shown = [t.name for t, _ in urgent] + [t.name for t in rest]
    assert sorted(shown) == sorted(t.name for t in targets if page.matches(t, q))
    tiers = [page.TIERS.index(why) for _, why in urgent]
    assert tiers == sorted(tiers)
    order = {t.name: i for i, t in enumerate(targets)}
    assert [order[t.name] for t in rest] == sorted(order[t.name] for t in rest)
    for (t, why), tier in zip(urgent, tiers, strict=True):
        kind, crit, _, missing = spec[order[t.name]]
        # Only an open finding, down, or an up target missing an expected port need attention.
        assert crit or kind == "down" or (kind == "up" and missing), (t.name, why)
        assert (tier == 1) == bool(crit)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["up", "down", "unknown", "never"]),
            st.integers(0, 2),  # open critical findings
            st.integers(0, 2),  # open warnings, one of them reopened when there are two
            st.integers(0, 2),  # acked findings
            st.booleans(),  # configured (else only in the store: removed from the config)
        ),
        max_size=40,
    )
)
def test_the_tiles_count_each_configured_target_once(
    spec: list[tuple[str, int, int, int, bool]],
) -> None:
    """The summary tiles equal a count over every configured target, one by one; targets
    only the store still knows count nowhere."""
    names = [f"router-{i}" for i in range(len(spec))]
    targets = [target(n, f"198.51.100.{i}", "443") for i, n in enumerate(names) if spec[i][4]]
    ov = TargetOverview(
        stored=frozenset(n for n, s in zip(names, spec, strict=True) if s[0] != "never"),
        status={
            n: TargetStatus(s[0])
            for n, s in zip(names, spec, strict=True)
            if s[0] in ("down", "unknown")
        },
        not_open={},
        findings={
            n: FindingCounts(
                {sev: k for sev, k in ((Severity.CRITICAL, s[1]), (Severity.WARNING, s[2])) if k},
                reopened=s[2] // 2,
                acked=s[3],
            )
            for n, s in zip(names, spec, strict=True)
            if s[1] or s[2] or s[3]
        },
    )
    reasons = [page.attention_reason(t, ov) for t in targets]
    counts = page.counts_of(targets, ov, reasons)
    configured = [s for s in spec if s[4]]
    assert counts["targets"] == len(targets)
    for kind in ("up", "down", "unknown", "never"):
        assert counts[kind] == sum(1 for s in configured if s[0] == kind), kind
    assert counts["critical"] == sum(s[1] for s in configured)
    assert counts["warning"] == sum(s[2] for s in configured)
    assert counts["reopened"] == sum(s[2] // 2 for s in configured)
    assert counts["acked"] == sum(s[3] for s in configured)
    assert counts["attention"] == sum(1 for r in reasons if r is not None)


@given(st.integers(0, 5000), st.integers(1, 200), st.integers(-5, 10_000))
def test_paginate_covers_every_item_once(total: int, size: int, requested: int) -> None:
    """Pages are clamped to [1, last], hold at most `size` items, and tile the list."""
    pager = page.paginate(total, size, requested)
    assert 1 <= pager.page <= pager.pages
    assert 0 <= pager.stop - pager.start <= size
    assert pager.stop <= total
    if 1 <= requested <= pager.pages:
        assert pager.page == requested
    seen: list[int] = []
    for n in range(1, pager.pages + 1):
        p = page.paginate(total, size, n)
        seen += range(p.start, p.stop)
        assert total == 0 or p.stop > p.start
    assert seen == list(range(total))


@given(st.text(max_size=100), st.text(max_size=12), st.text(max_size=12))
def test_query_parsing_never_fails(q: str, number: str, attention: str) -> None:
    """Any query string gives a usable page: printable search text, page numbers from 1."""
    query = page.parse_query({"q": q, "page": number, "attention": attention})
    assert len(query.q) <= page.MAX_QUERY
    assert query.q.isprintable()
    assert query.page >= 1
    assert query.attention >= 1
    link = page.page_link(query, "page", query.page + 1)
    assert link.startswith("?")
    assert f"page={query.page + 1}" in link


def test_links_to_targets_not_shown_search_for_them() -> None:
    """A timeline entry of a target on another page links to a search that shows it."""
    assert page.href("office", {"office"}) == "#target-office"
    assert page.href("office", ()) == "?q=office#target-office"


def test_many_targets_are_paged_with_working_links() -> None:
    """250 targets: 25 cards and 100 rows per page, pagers link to the next pages."""
    targets = [target(f"t{i:03d}", f"198.51.100.{i % 250}", "443") for i in range(250)]
    names = {t.name for t in targets}
    ov = overview(names, {f"t{i:03d}" for i in range(0, 250, 5)})  # 50 down
    model = page.build(targets, ov, {}, [], NOW, page.PageQuery(page=2))
    assert len(model.attention) == page.ATTENTION_PAGE
    assert model.attention_pager.next_href == "?attention=2&page=2"
    assert [r.name for r in model.rows][:2] == ["t126", "t127"]
    assert model.rows_pager.prev_href == "?"
    assert model.rows_pager.next_href is None  # 200 rows: page 2 is the last
    html = page.render(model)
    assert 'href="?attention=2&amp;page=2"' in html
    assert "page 2 of 2 · 101–200 of 200 targets" in html
    found = page.build(targets, ov, {}, [], NOW, page.PageQuery(q="t12"))
    assert [t.name for t in found.attention] == ["t120", "t125"]
    assert [r.name for r in found.rows] == [f"t12{i}" for i in range(10) if i % 5]


async def test_attention_cards_show_each_ports_history(tmp_path: Path) -> None:
    """A card draws its ports' 30 days as inline SVG: 3389 open, closed, reopened in red."""
    _, at = await fill(tmp_path / "state")
    config_path = tmp_path / "config.toml"
    config_path.write_text(CONFIG.replace('"state"', f'"{tmp_path / "state"}"'))
    now = at["office4"] + dt.timedelta(hours=1)
    async with await Store.open(tmp_path / "state") as store:
        html = await page.render_status(store, load_config(config_path), now=now)
    office = html[html.index('id="target-office"') :]
    office = office[: office.index("</section>")]
    svg = office[office.index('<svg class="history"') : office.index("</svg>")]
    rows = re.split(r'<text class="port"[^>]*>', svg)[1:]
    by_port = {int(r[: r.index("<")]): r for r in rows}
    assert set(by_port) == {80, 443, 3389, 8080}  # every port that was ever open
    shades = re.findall(r'<rect class="tl-(\w+)"', by_port[3389])
    assert shades == ["unknown", "open", "closed", "reopened"]
    assert 'class="tl-reopen"' in by_port[3389]
    assert "finding reopened" in by_port[3389]
    assert re.findall(r'<rect class="tl-(\w+)"', by_port[443]) == ["unknown", "open"]
    # Drawn with the stylesheet's classes: no inline style, no script (the page's CSP).
    assert "style=" not in svg
    assert "<script" not in html
    assert "port history, last 30 days" in html  # the legend
    # Rows of targets needing no attention carry no history.
    assert html.count('<svg class="history"') == html.count('<section class="card target')


def test_maintenance_windows_in_force_and_to_come_are_shown() -> None:
    """The page lists the windows in force first, then those to come (the next stretch of a
    recurring one), with targets, times, schedule and reason; windows over are left out."""
    windows = [
        MaintenanceWindow("config/0", Recurring("0 2 * * SUN", dt.timedelta(hours=2), "UTC")),
        MaintenanceWindow.ad_hoc(
            4, ["surgery"], NOW - dt.timedelta(minutes=30), NOW + dt.timedelta(hours=1), HOSTILE
        ),
        MaintenanceWindow.ad_hoc(
            5, None, NOW - dt.timedelta(hours=3), NOW - dt.timedelta(hours=2), "over"
        ),
    ]
    model = dataclasses.replace(story(), maintenance=page.maintenance_views(windows, NOW))
    assert [(m.id, m.active) for m in model.maintenance] == [("api/4", True), ("config/0", False)]
    html = page.render(model)
    text = " ".join(" ".join(parse(html).text).split())
    assert "api/4 in maintenance surgery 30m ago in 1h" in text
    # 2026-11-26 is a Thursday: the next Sunday 02:00 UTC is in 2 days and 14 hours.
    assert "config/0 upcoming every target in 2d in 2d cron 0 2 * * SUN, 2h, UTC" in text
    assert "api/5" not in text
    assert HOSTILE_ESCAPED in html
    assert page.render(story()).count('id="maintenance"') == 0
