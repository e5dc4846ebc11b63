"""The JSON API: parsing rules (pure), endpoints on a real store, and the service behind it."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exposuremon.config.fields import TOKEN_ENV
from exposuremon.detect import TargetPolicy, evaluate
from exposuremon.metrics.collectors import StateCollector
from exposuremon.model import EventType, FindingState, ScanKind, TargetState
from exposuremon.store.database import Store, db_path
from exposuremon.web import api
from exposuremon.web.api import BadRequest
from exposuremon.web.app import make_app
from tests.cli.test_daemon_commands import observe
from tests.support.apibed import TOKEN, StoreBackend, Story, build_story
from tests.support.daemon import running_service, stored_last_scan, wait_until, write_config
from tests.support.loopback import Listeners
from tests.support.records import scan_record_of

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DELIVERY_KEYS = {
    "id",
    "channel",
    "target",
    "event_id",
    "kind",
    "reminder",
    "group_key",
    "dedup_key",
    "status",
    "attempts",
    "next_attempt_at",
    "last_error",
    "created_at",
    "sent_at",
}
EVENT_KEYS = {
    "id",
    "type",
    "target",
    "port",
    "severity",
    "observed_at",
    "summary",
    "details",
    "finding_id",
    "vantage",  # additive (issue 17): null but for a vantage's events
}


def field_of(call: Any, *args: Any) -> str:
    """The field a BadRequest names."""
    with pytest.raises(BadRequest) as info:
        call(*args)
    assert str(info.value).startswith(f"{info.value.field}: ")
    return info.value.field


# ------------------------------------------------------------------------- parsing (pure)


@pytest.mark.parametrize("text", ["1", "100", "1000", "0007"])
def test_limit_accepts_1_to_1000(text: str) -> None:
    """Page sizes from 1 to 1000 are accepted."""
    assert api.parse_limit(text) == int(text)


@pytest.mark.parametrize(
    "text", ["0", "1001", "-1", "", " 5", "5 ", "1e3", "abc", "١٢", "9" * 30, "+5", "5\x00"]
)
def test_limit_refusals_name_the_field(text: str) -> None:
    """Anything but an ASCII integer in range is a 400 naming `limit`."""
    assert field_of(api.parse_limit, text) == "limit"


@pytest.mark.parametrize("text", ["0", "-3", "x", "", "9" * 20, str(2**63), "1.5"])
def test_cursor_refusals_name_the_field(text: str) -> None:
    """A cursor is the positive integer a page printed as `next`."""
    assert field_of(api.parse_cursor, text) == "cursor"
    assert api.parse_cursor(str(2**63 - 1)) == 2**63 - 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", NOW - dt.timedelta(hours=24)),
        ("90m", NOW - dt.timedelta(minutes=90)),
        ("2026-11-20T09:00:00Z", dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC)),
        ("2026-11-20T10:00:00+01:00", dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC)),
        ("2026-11-20T09:00:00", dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC)),
        ("2026-11-20", dt.datetime(2026, 11, 20, tzinfo=dt.UTC)),
    ],
)
def test_since_is_a_time_or_a_duration_ago(text: str, expected: dt.datetime) -> None:
    """`since`: RFC 3339 (UTC unless it says otherwise) or a duration meaning now minus it."""
    assert api.parse_since(text, NOW) == expected


@pytest.mark.parametrize(
    "text", ["yesterday", "", "-24h", "24x", "9" * 200 + "d", "0001-01-01T00:00:00+01:00", "\x00"]
)
def test_since_refusals_name_the_field(text: str) -> None:
    """Bad or out-of-range `since` values are a 400 naming `since`."""
    assert field_of(api.parse_since, text, NOW) == "since"


def test_query_parameters_known_and_single() -> None:
    """Unknown parameters are named; a parameter given twice, or far too long, is refused."""
    assert api.single_params([("limit", "5")], api.FINDINGS_PARAMS) == {"limit": "5"}
    assert field_of(api.single_params, [("limit", "5"), ("limt", "1")], api.FINDINGS_PARAMS) == (
        "'limt'"
    )
    assert field_of(api.single_params, [("type", "x")], api.FINDINGS_PARAMS) == "'type'"
    assert field_of(api.single_params, [("state", "x")], api.EVENTS_PARAMS) == "'state'"
    assert field_of(api.single_params, [("limit", "5"), ("limit", "6")], api.FINDINGS_PARAMS) == (
        "limit"
    )
    assert field_of(api.single_params, [("target", "a" * 300)], api.FINDINGS_PARAMS) == "target"
    long_name = "x" * 5000
    with pytest.raises(BadRequest) as info:
        api.single_params([(long_name, "")], frozenset())
    assert len(str(info.value)) < 200  # untrusted text is cut short in messages


def test_filters_state_type_target() -> None:
    """state, type and target take their documented values and nothing else."""
    assert api.parse_finding_state("acked") is FindingState.ACKED
    assert api.parse_finding_state("all") is None
    assert field_of(api.parse_finding_state, "OPEN") == "state"
    assert api.parse_event_type("finding_reopened") is EventType.FINDING_REOPENED
    assert field_of(api.parse_event_type, "reopened") == "type"
    assert api.parse_target_name("surgery-router.1_a") == "surgery-router.1_a"
    for bad in ("", "a b", "a/b", "x" * 65, "<script>", "ä"):
        assert field_of(api.parse_target_name, bad) == "target"


@given(
    st.lists(
        st.tuples(
            st.one_of(st.sampled_from(sorted(api.FINDINGS_PARAMS | api.EVENTS_PARAMS)), st.text()),
            st.text(max_size=300),
        ),
        max_size=6,
    )
)
def test_query_parsing_fails_only_with_bad_request(pairs: list[tuple[str, str]]) -> None:
    """Any query at all parses into an in-range page or a BadRequest, nothing else."""
    for parse in (api.parse_findings_query, api.parse_events_query):
        try:
            page = parse(pairs, NOW)
        except BadRequest:
            continue
        assert 1 <= page.limit <= 1000
        assert page.cursor is None or page.cursor >= 1
        assert page.since is None or page.since.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"", "body"),
        (b"{", "body"),
        (b"\xff\xfe", "body"),
        (b"[1]", "body"),
        (b"[" * 100_000, "body"),
        (b'{"until": 1' + b"0" * 5000 + b"}", "body"),
        (b'{"reason": "x"}', "until"),
        (b'{"until": 86400, "reason": "x"}', "until"),
        (b'{"until": "24h"}', "reason"),
        (b'{"until": "24h", "reason": 5}', "reason"),
        (b'{"until": "24h", "reason": "   "}', "reason"),
        (b'{"until": "24h", "reason": "a\\u0000b"}', "reason"),
        (b'{"until": "24h", "reason": "\\ud800"}', "reason"),
        (b'{"until": "0s", "reason": "x"}', "until"),
        (b'{"until": "2001-01-01", "reason": "x"}', "until"),
        (b'{"until": "9999-12-31T23:59:59-05:00", "reason": "x"}', "until"),
        (b'{"until": "soon", "reason": "x"}', "until"),
        (b'{"until": "24h", "reason": "x", "by": "me"}', "'by'"),
    ],
)
def test_ack_body_refusals(body: bytes, field: str) -> None:
    """A bad ack body is a 400 naming the key; the same until rules as `exposuremon ack`."""
    assert field_of(api.parse_ack_body, body, NOW) == field


def test_ack_body_accepted() -> None:
    """`until` as a duration or an RFC 3339 time; the reason is stripped."""
    assert api.parse_ack_body(b'{"until": "24h", "reason": " vendor "}', NOW) == (
        NOW + dt.timedelta(hours=24),
        "vendor",
    )
    until, _ = api.parse_ack_body(b'{"until": "2027-01-01T18:00:00+02:00", "reason": "x"}', NOW)
    assert until == dt.datetime(2027, 1, 1, 16, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("until", "reason", "field"),
    [
        ("24h", "a\x1b[31mred", "reason"),
        ("24h", "bell\x07", "reason"),
        ("24h", "x" * 1001, "reason"),
        ("24h", "abc\u202edcba", "reason"),
        ("24h", "zero\u200bwidth", "reason"),
        ("24h", "line\u2028break", "reason"),
        ("366d", "x", "until"),
        ("2099-01-01", "x", "until"),
    ],
)
def test_ack_body_uses_the_shared_rules(until: str, reason: str, field: str) -> None:
    """Escapes, BEL, format characters (U+202E), 1001 characters and a year-plus expiry: 400."""
    body = json.dumps({"until": until, "reason": reason}).encode()
    assert field_of(api.parse_ack_body, body, NOW) == field


@pytest.mark.parametrize(
    ("header", "token", "expected"),
    [
        (f"Bearer {TOKEN}", TOKEN, None),
        (f"bearer  {TOKEN} ", TOKEN, None),
        (f"Bearer {TOKEN}", None, 403),
        (None, None, 403),
        (None, TOKEN, 401),
        ("", TOKEN, 401),
        ("Bearer", TOKEN, 401),
        (f"Basic {TOKEN}", TOKEN, 401),
        (f"Bearer {TOKEN}x", TOKEN, 401),
        ("Bearer ünïcödé", TOKEN, 401),
        ("Bearer \udcff", "\udcff", None),
    ],
)
def test_bearer_check(header: str | None, token: str | None, expected: int | None) -> None:
    """The token must match exactly; with none configured, POST is refused with how to set one."""
    result = api.check_bearer(header, token)
    assert (result[0] if result else None) == expected
    if expected == 403:
        assert result is not None
        assert "[http] token_file" in result[1]
        assert TOKEN_ENV in result[1]
    if result is not None:
        assert TOKEN not in result[1]


@given(
    st.one_of(
        st.none(),
        st.text(),
        st.builds(lambda a, b: f"{a}{TOKEN}{b}", st.text(max_size=10), st.text(max_size=3)),
    )
)
def test_bearer_check_never_raises(header: str | None) -> None:
    """Any header text gets an answer; it passes only when its credential is the token."""
    result = api.check_bearer(header, TOKEN)
    if result is None:
        assert header is not None
        scheme, credential = header.split(maxsplit=1)
        assert scheme.lower() == "bearer"
        assert credential.strip() == TOKEN
    else:
        assert result[0] == 401


# ------------------------------------------------------------------- endpoints on the story


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Story:
    """test_commands' story store, built once; tests work on copies."""
    return build_story(tmp_path_factory.mktemp("story"))


@contextlib.asynccontextmanager
async def serving(bed: Story) -> AsyncIterator[tuple[TestClient[Any, Any], StoreBackend]]:
    """The API on the story's store."""
    async with await Store.open(bed.state_dir) as store:
        backend = StoreBackend(store, bed.config())
        state = StateCollector(store.gauges, lambda: backend.config)
        app = make_app(CollectorRegistry(), backend, state=state)
        async with TestClient(TestServer(app)) as client:
            yield client, backend


async def get_json(client: TestClient[Any, Any], path: str, status: int = 200) -> Any:
    """GET a path and return its JSON body, checking the status."""
    resp = await client.get(path)
    body = await resp.json()
    assert resp.status == status, body
    return body


async def cli_json(*args: str) -> Any:
    """Run the console script (in a thread, the server keeps serving) and parse its JSON."""
    exe = os.path.join(os.path.dirname(sys.executable), "exposuremon")
    proc = await asyncio.to_thread(
        subprocess.run, [exe, *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize(
    ("query", "cli_args"),
    [
        ("", []),
        ("?state=open&target=office", ["--state", "open", "--target", "office"]),
        ("?limit=2", ["--limit", "2"]),
    ],
    ids=["all", "filtered", "page"],
)
async def test_findings_same_as_cli(
    story: Story, tmp_path: Path, query: str, cli_args: list[str]
) -> None:
    """GET /api/v1/findings answers exactly what `exposuremon findings --json` prints."""
    bed = story.copy(tmp_path)
    async with serving(bed) as (client, _):
        from_api = await get_json(client, f"/api/v1/findings{query}")
        from_cli = await cli_json("findings", "-c", str(bed.config_path), "--json", *cli_args)
    assert from_api == from_cli
    assert from_api["findings"]


async def test_targets_same_as_status_cli(story: Story, tmp_path: Path) -> None:
    """GET /api/v1/targets answers what `exposuremon status --json` prints; one target by name."""
    bed = story.copy(tmp_path)
    async with serving(bed) as (client, _):
        doc = await get_json(client, "/api/v1/targets")
        from_cli = await cli_json("status", "-c", str(bed.config_path), "--json")
        office = await get_json(client, "/api/v1/targets/office")
        lab = await get_json(client, "/api/v1/targets/lab")
        missing = await get_json(client, "/api/v1/targets/nope", 404)
    assert doc == from_cli
    assert [t["name"] for t in doc["targets"]] == ["office", "branch", "lab"]
    # One target by name also says what connection rate it accepts (null: no limit seen).
    assert office == doc["targets"][0] | {"accepted_connection_rate": None}
    assert office["unexpected_open"] == [80, 3389, 8080]
    assert lab["status"] == "never scanned"
    assert missing == {"error": "no target named 'nope'"}


async def test_findings_pages_and_since(story: Story, tmp_path: Path) -> None:
    """Following `next` visits every finding once, newest first; `since` filters by opening."""
    bed = story.copy(tmp_path)
    async with serving(bed) as (client, _):
        seen: list[int] = []
        path = "/api/v1/findings?limit=2"
        for _ in range(10):
            page = await get_json(client, path)
            assert len(page["findings"]) <= 2
            seen += [f["id"] for f in page["findings"]]
            if page["next"] is None:
                break
            path = f"/api/v1/findings?limit=2&cursor={page['next']}"
        since = bed.scans["office4"].strftime("%Y-%m-%dT%H:%M:%SZ")
        recent = await get_json(client, f"/api/v1/findings?since={since}")
        old_since = await get_json(client, "/api/v1/findings?since=1h")  # the story is from 2026-11
    assert seen == sorted(bed.ids.values(), reverse=True)
    assert {f["id"] for f in recent["findings"]} == {bed.ids["office3389"], bed.ids["branch22"]}
    assert old_since["findings"] == [] or all(
        f["opened_at"] >= since for f in old_since["findings"]
    )


async def test_events_filters_and_shape(story: Story, tmp_path: Path) -> None:
    """Events: docs/architecture.md's keys, newest first, filtered by type and target, paginated."""
    bed = story.copy(tmp_path)
    async with serving(bed) as (client, _):
        every = await get_json(client, "/api/v1/events?limit=1000")
        reopened = await get_json(client, "/api/v1/events?type=finding_reopened&target=office")
        branch = await get_json(client, "/api/v1/events?target=branch&limit=1")
    ids = [e["id"] for e in every["events"]]
    assert ids == sorted(ids, reverse=True)
    assert every["next"] is None
    for event in every["events"]:
        assert set(event) == EVENT_KEYS
    assert [(e["type"], e["port"], e["severity"]) for e in reopened["events"]] == [
        ("finding_reopened", 3389, "critical")
    ]
    assert reopened["events"][0]["finding_id"] == bed.ids["office3389"]
    assert len(branch["events"]) == 1
    assert branch["next"] is not None


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/api/v1/findings?limit=0", "limit:"),
        ("/api/v1/findings?limit=1&limit=2", "limit: given more than once"),
        ("/api/v1/findings?cursor=-1", "cursor:"),
        ("/api/v1/findings?state=closed", "state:"),
        ("/api/v1/findings?since=tomorrow", "since:"),
        ("/api/v1/findings?target=%3Cscript%3E", "target:"),
        ("/api/v1/findings?type=port_opened", "'type': unknown parameter"),
        ("/api/v1/events?type=nope", "type:"),
        ("/api/v1/events?state=open", "'state': unknown parameter"),
        ("/api/v1/targets?limit=0", "limit: must be an integer from 1 to 1000"),
        ("/api/v1/targets?limt=5", "'limt': unknown parameter"),
        ("/api/v1/targets?status=sideways", "status: must be one of unknown, up, down, never"),
        ("/api/v1/targets?has_findings=yes", "has_findings: must be true or false"),
        ("/api/v1/targets?limit=5&cursor=a%20b", "cursor: must be the `next` value"),
        ("/api/v1/targets/office?x=1", "'x': unknown parameter"),
    ],
)
async def test_bad_parameters_are_400_naming_them(story: Story, path: str, needle: str) -> None:
    """Bad input answers 400 with a JSON error that starts with the parameter's name."""
    async with serving(story) as (client, _):
        body = await get_json(client, path, 400)
    assert set(body) == {"error"}
    assert needle in body["error"]


async def test_routing_errors_are_json(story: Story) -> None:
    """Unknown paths are 404 and wrong methods 405 (with Allow), both as JSON errors."""
    async with serving(story) as (client, _):
        assert await get_json(client, "/api/v1/nothing", 404) == {"error": "not found"}
        assert await get_json(client, "/api/v2/findings", 404) == {"error": "not found"}
        resp = await client.delete("/api/v1/findings")
        assert resp.status == 405
        assert "GET" in resp.headers["Allow"]
        assert "DELETE" in (await resp.json())["error"]
        resp = await client.get("/api/v1/targets/office/scan")
        assert resp.status == 405
        assert resp.headers["Allow"] == "POST"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_post_without_a_configured_token_is_403(
    story: Story, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No token configured: POSTs are refused with 403 saying how to configure one."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    async with serving(story) as (client, backend):
        for path in ("/api/v1/targets/office/scan", "/api/v1/findings/1/ack"):
            resp = await client.post(path, headers=AUTH, json={})
            body = await resp.json()
            assert resp.status == 403
            assert "[http] token_file" in body["error"]
            assert TOKEN_ENV in body["error"]
    assert backend.scans == []


async def test_scan_needs_the_token(story: Story, monkeypatch: pytest.MonkeyPatch) -> None:
    """POST scan: 401 with WWW-Authenticate without the right token; 202, or 404 for no target."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    async with serving(story) as (client, backend):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            resp = await client.post("/api/v1/targets/office/scan", headers=headers)
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert TOKEN not in await resp.text()
        # Unauthenticated callers learn nothing about which targets exist.
        resp = await client.post("/api/v1/targets/nope/scan")
        assert resp.status == 401
        assert backend.scans == []

        resp = await client.post("/api/v1/targets/office/scan", headers=AUTH)
        assert resp.status == 202
        assert await resp.json() == {"target": "office", "kind": "quick", "status": "scheduled"}
        assert backend.scans == ["office"]
        resp = await client.post("/api/v1/targets/nope/scan", headers=AUTH)
        assert resp.status == 404
        assert await resp.json() == {"error": "no target named 'nope'"}
        backend.ready = "stopping"
        resp = await client.post("/api/v1/targets/office/scan", headers=AUTH)
        assert resp.status == 503
        assert "stopping" in (await resp.json())["error"]
    assert backend.scans == ["office"]


async def test_ack_over_http(story: Story, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """POST ack with the token from token_file: acked in the store and in the CLI's listing."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")
    bed = story.copy(tmp_path, http=f'token_file = "{token_file}"')
    fid = bed.ids["office80"]
    async with serving(bed) as (client, backend):
        before = dt.datetime.now(dt.UTC)
        resp = await client.post(
            f"/api/v1/findings/{fid}/ack",
            headers=AUTH,
            json={"until": "24h", "reason": "maintenance window"},
        )
        body = await resp.json()
        assert resp.status == 200, body
        acked = body["finding"]
        assert (acked["id"], acked["state"], acked["ack_reason"]) == (
            fid,
            "acked",
            "maintenance window",
        )
        assert acked["address"] == "198.51.100.7"
        until = dt.datetime.fromisoformat(acked["ack_until"])
        assert before + dt.timedelta(hours=24) - dt.timedelta(seconds=1) <= until
        stored = await backend.store.finding(fid)
        assert stored is not None
        assert stored.state is FindingState.ACKED

        refusals = [
            (bed.ids["office3389_resolved"], {"until": "1h", "reason": "x"}, 409, "is resolved"),
            (999999, {"until": "1h", "reason": "x"}, 404, "no finding with id 999999"),
            (bed.ids["branch22"], {"until": "yesterday", "reason": "x"}, 400, "until:"),
            (bed.ids["branch22"], {"until": "1h"}, 400, "reason:"),
            ("abc", {"until": "1h", "reason": "x"}, 400, "id:"),
            ("0", {"until": "1h", "reason": "x"}, 400, "id:"),
        ]
        for finding_id, doc, status, needle in refusals:
            resp = await client.post(f"/api/v1/findings/{finding_id}/ack", headers=AUTH, json=doc)
            assert resp.status == status, (finding_id, await resp.text())
            assert needle in (await resp.json())["error"]
        resp = await client.post(
            f"/api/v1/findings/{bed.ids['branch22']}/ack", headers=AUTH, data=b"x" * 70_000
        )
        assert resp.status == 413
        assert (await resp.json())["error"].startswith("body: larger than")
        listing = await cli_json("findings", "-c", str(bed.config_path), "--json")
    states = {f["id"]: f["state"] for f in listing["findings"]}
    assert states[fid] == "acked"
    assert states[bed.ids["branch22"]] == "open"  # every refusal left it alone


async def test_notifications_list_dead_letters_without_urls(story: Story, tmp_path: Path) -> None:
    """Deliveries by status and channel, paginated; a URL in an error is never shown."""
    bed = story.copy(tmp_path)
    async with serving(bed) as (client, backend):
        store = backend.store
        obs = observe("lab", "192.0.2.44", NOW, {3389})
        out = evaluate(TargetState(name="lab"), obs, TargetPolicy(), NOW)
        await store.apply(scan_record_of(obs), out.state, out.events, out.findings, ["chat", "ops"])
        ops, _ = await store.deliveries(channel="ops")
        chat, _ = await store.deliveries(channel="chat")
        assert ops
        assert chat
        secret = "https://hooks.example.com/services/T000/B000/XXXXSECRET"
        await store.settle([d.id for d in ops], "dead", NOW, error=f"HTTP 404 from {secret}: gone")
        await store.settle([d.id for d in chat], "sent", NOW)

        every = await get_json(client, "/api/v1/notifications")
        dead = await get_json(client, "/api/v1/notifications?status=dead")
        sent = await get_json(client, "/api/v1/notifications?status=sent&channel=chat")
        none = await get_json(client, "/api/v1/notifications?status=pending")
        first = await get_json(client, "/api/v1/notifications?limit=1")
        bad_status = await get_json(client, "/api/v1/notifications?status=failed", 400)
        bad_channel = await get_json(client, "/api/v1/notifications?channel=a%20b", 400)
    assert len(every["notifications"]) == len(ops) + len(chat)
    for row in every["notifications"]:
        assert set(row) == DELIVERY_KEYS
        assert row["target"] == "lab"
    assert {r["id"] for r in dead["notifications"]} == {d.id for d in ops}
    assert all(r["last_error"] == "HTTP 404 from <url>: gone" for r in dead["notifications"])
    assert "SECRET" not in json.dumps(every)
    assert {r["id"] for r in sent["notifications"]} == {d.id for d in chat}
    assert all(r["sent_at"] for r in sent["notifications"])
    assert none == {"notifications": [], "next": None}
    assert len(first["notifications"]) == 1
    assert first["next"] is not None
    assert bad_status["error"].startswith("status:")
    assert bad_channel["error"].startswith("channel:")


async def test_fleet_of_a_single_node_without_leases(story: Story, tmp_path: Path) -> None:
    """A SQLite store no lease keeper wrote to: an empty fleet (nodes and vantages listed only
    once they have joined), the shard total, and the same body as `fleet status --json`."""
    bed = story.copy(tmp_path)
    async with serving(bed) as (client, _):
        body = await get_json(client, "/api/v1/fleet")
        from_cli = await cli_json("fleet", "status", "-c", str(bed.config_path), "--json")
    assert body["nodes"] == []
    assert body["vantages"] == []
    assert body["shards"] == {"total": 64, "vantages": {}}
    assert body["lease_ttl"] == 15.0
    assert body["config_hash"] is None
    body.pop("now")
    from_cli.pop("now")
    assert body == from_cli


async def test_a_broken_database_is_503_not_500(story: Story, tmp_path: Path) -> None:
    """When the store fails, the API, page and metrics answer 503 with a JSON error."""
    bed = story.copy(tmp_path)
    async with serving(bed) as (client, _):
        with contextlib.closing(sqlite3.connect(db_path(bed.state_dir))) as db:
            db.execute("ALTER TABLE findings RENAME TO findings_gone")
            db.execute("ALTER TABLE nodes RENAME TO nodes_gone")
            db.commit()
        for path in ("/api/v1/findings", "/api/v1/targets", "/api/v1/fleet", "/", "/metrics"):
            resp = await client.get(path)
            body = await resp.text()
            assert resp.status == 503, (path, body)
            assert json.loads(body) == {
                "error": "the database is unavailable; see the daemon's log"
            }


# -------------------------------------------------------------------- the service as backend


async def test_service_scans_on_demand_and_acks_under_its_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon: POST scan runs a quick scan now; an API ack survives the scans that follow."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    listeners = Listeners()
    listeners.open("127.0.0.71", 8080)
    listeners.open("127.0.0.71", 8081)  # a hot port: sentinel scans watch it
    config = write_config(
        tmp_path,
        [
            {
                "name": "gw",
                "address": "127.0.0.71",
                "expected_open": "8080",
                "ports_full": "1-1024,8000-8100",
            }
        ],
        quick="1h",
    )
    try:
        async with running_service(config) as service, aiohttp.ClientSession() as http:
            assert service.http_address is not None
            base = "http://{}:{}/api/v1".format(*service.http_address)
            store = service.store

            async def open_finding() -> Any:
                rows, _ = await store.findings(target="gw")
                return next((f for f in rows if f.port == 8081), None)

            async def first_quick() -> Any:
                return await stored_last_scan(service, "gw", ScanKind.QUICK)

            finding = await wait_until(open_finding, 20, "a finding on 8081")
            quick_before = await wait_until(first_quick, 20, "the first quick scan")

            async with http.post(f"{base}/targets/gw/scan", headers=AUTH) as resp:
                assert resp.status == 202

            async def another_quick() -> bool:
                return bool((await first_quick()) > quick_before)

            await wait_until(another_quick, 20, "the on-demand quick scan")

            doc = {"until": "7d", "reason": "vendor access"}
            async with http.post(f"{base}/findings/{finding.id}/ack", headers=AUTH, json=doc) as r:
                assert r.status == 200, await r.text()
            scans = service.scans_recorded

            async def three_more() -> bool:
                return service.scans_recorded >= scans + 3

            await wait_until(three_more, 20, "three more scans")
            after = await store.finding(finding.id)
            assert after is not None
            assert after.state is FindingState.ACKED
            assert (await store.load_state("gw")).findings[8081].state is FindingState.ACKED
            async with http.get(f"{base}/findings?state=acked") as resp:
                assert [f["id"] for f in (await resp.json())["findings"]] == [finding.id]
    finally:
        listeners.close()
