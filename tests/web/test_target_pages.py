"""Target listings at scale: `Store.target_page`, `Store.target_overview` and the paged API."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from exposuremon.config import Config, parse_config
from exposuremon.model import Finding, TargetStatus
from exposuremon.store.database import Store
from exposuremon.web import status_page
from exposuremon.web.app import make_app
from exposuremon.web.views import status_json
from tests.support import bigstore

STORED, CONFIGURED = 60, 70  # router-00000 is stored but removed; 60-69 never scanned


@dataclasses.dataclass
class ReadOnly:
    """A backend that only reads."""

    store: Store
    config: Config

    async def scan_now(self, target: str) -> bool:
        """Never called here."""
        raise AssertionError("listing targets must not schedule scans")

    async def ack(self, finding_id: int, until: dt.datetime, reason: str) -> Finding:
        """Never called here."""
        raise AssertionError("listing targets must not ack")

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


@pytest.fixture
async def filled(tmp_path: Path) -> Any:
    """A store of 60 targets (3 down, 3 with findings) and a config of 69 of 70 names."""
    state_dir = tmp_path / "state"
    await (await Store.open(state_dir)).close()
    bigstore.fill(state_dir, STORED)
    config = parse_config(bigstore.config_text(CONFIGURED, state_dir, first=1), tmp_path)
    async with await Store.open(state_dir) as store:
        yield store, config


async def all_pages(store: Store, names: list[str], limit: int, **filters: Any) -> list[str]:
    """Follow `next` from the first page to the last (bounded)."""
    seen: list[str] = []
    after = None
    for _ in range(len(names) + 1):
        page = await store.target_page(names, after=after, limit=limit, **filters)
        assert len(page.names) <= limit
        assert set(page.states) <= set(page.names)
        seen += page.names
        if page.next is None:
            return seen
        assert page.next == page.names[-1]
        after = page.next
    raise AssertionError("pages never ended")


async def test_store_pages_follow_cursors_in_name_order(filled: Any) -> None:
    """Pages tile the configured targets in name order; filters work; removed ones stay out."""
    store, config = filled
    names = [t.name for t in config.targets]
    assert await all_pages(store, names, 7) == sorted(names)
    down = await all_pages(store, names, 2, statuses=[TargetStatus.DOWN], unscanned=False)
    assert down == ["router-00020", "router-00040"]  # router-00000 is not configured
    with_findings = await all_pages(store, names, 2, has_findings=True)
    assert with_findings == ["router-00001", "router-00021", "router-00041"]
    never = await all_pages(store, names, 4, statuses=(), unscanned=True)
    assert never == [bigstore.name_of(i) for i in range(STORED, CONFIGURED)]
    clean_up = await all_pages(
        store, names, 50, statuses=[TargetStatus.UP], unscanned=False, has_findings=False
    )
    assert len(clean_up) == STORED - 1 - 2 - 3
    page = await store.target_page(names, after="router-00005", limit=3)
    assert page.names == ("router-00006", "router-00007", "router-00008")
    assert page.states["router-00006"].ports.keys() == {443}


async def test_overview_agrees_with_full_states(filled: Any) -> None:
    """The light overview says what the full states say (status, closed ports, findings)."""
    store, _ = filled
    assert await store.target_overview() == status_page.overview_of(await store.load_states())


async def test_api_pages_and_filters(filled: Any) -> None:
    """Without `limit` the old answer; with it pages in name order and `next`; 400s name it."""
    store, config = filled
    app = make_app(CollectorRegistry(), ReadOnly(store, config))
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/api/v1/targets")
        whole = await resp.json()
        assert whole == status_json(config.targets, await store.load_states())
        assert list(whole) == ["targets"]  # no `next`: old clients see what they always saw
        names: list[str] = []
        path = "/api/v1/targets?limit=30"
        for _ in range(5):
            body = await (await client.get(path)).json()
            assert set(body) == {"targets", "next"}
            names += [t["name"] for t in body["targets"]]
            if body["next"] is None:
                break
            path = f"/api/v1/targets?limit=30&cursor={body['next']}"
        assert names == sorted(t["name"] for t in whole["targets"])
        body = await (await client.get("/api/v1/targets?status=down")).json()
        assert [t["name"] for t in body["targets"]] == ["router-00020", "router-00040"]
        body = await (await client.get("/api/v1/targets?limit=2&has_findings=true")).json()
        assert [t["name"] for t in body["targets"]] == ["router-00001", "router-00021"]
        assert body["next"] == "router-00021"
        assert body["targets"][0]["findings"] == {"open": 1, "acked": 0}
        body = await (await client.get("/api/v1/targets?limit=100&status=never+scanned")).json()
        assert len(body["targets"]) == CONFIGURED - STORED
        assert {t["status"] for t in body["targets"]} == {"never scanned"}
        assert body["next"] is None
        resp = await client.get("/api/v1/targets?has_findings=maybe")
        assert resp.status == 400
        assert (await resp.json())["error"].startswith("has_findings: must be true or false")


async def test_a_target_found_alone_shows_its_port_history(filled: Any) -> None:
    """A search that finds one healthy target draws its history; a page of rows draws none."""
    store, config = filled
    app = make_app(CollectorRegistry(), ReadOnly(store, config))
    async with TestClient(TestServer(app)) as client:
        alone = await (await client.get("/?q=router-00006")).text()
        several = await (await client.get("/?q=router-0000")).text()
        first = await (await client.get("/")).text()
    assert alone.count('<tr class="target"') == 1
    assert alone.count('<tr class="history"><td colspan="5"><svg class="history"') == 1
    assert re.search(r'<text class="port"[^>]*>443</text>', alone)
    assert "port history, last 30 days" in alone  # the legend
    assert several.count('<tr class="target"') > 1
    assert '<tr class="history">' not in several
    # The first page: a history per attention card, none for its rows.
    assert '<tr class="history">' not in first
    cards = first.count('<section class="card target')
    assert cards
    assert first.count('<svg class="history"') == cards
