"""The status page and `/api/v1/targets` at 10,000 targets, through the real app on loopback.

The store holds 10,000 targets (90% up with their expected port open, 5% down, 5% with a
critical finding; `tests/support/bigstore.py`). The daemon's own aiohttp app serves it from a
read-only backend over a real loopback connection; each request is timed from sending to the
last byte of the body. Measured: `GET /` (first page), `GET /?page=50` (deep in the healthy
list), `GET /?q=router-0999` (a search), `GET /api/v1/targets?limit=100` (one API page, first
and a later one by its cursor, and filtered by status and by findings), and for reference the
full `GET /api/v1/targets` without `limit`. Goals: page ≤ 200 KB and ≤ 150 ms; an API page of
100 targets ≤ 50 ms.

Run: `python -m bench.page_bench [--targets N] [--rounds R]`; writes bench/results/page.json.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from bench.common import RESULTS, machine
from exposuremon.config import Config
from exposuremon.model import Finding
from exposuremon.store import Store
from exposuremon.web import HttpServer, make_app
from tests.support.bigstore import build

PAGE_BYTES_GOAL = 200_000
PAGE_MS_GOAL = 150.0
API_PAGE_MS_GOAL = 50.0
# The same bench on this machine before paging (commit 10fdd57): the page held every target's
# card, and /api/v1/targets refused `limit`.
BEFORE = {
    "page": {"bytes": 7_096_944, "median_ms": 3475.6},
    "api_all": {"bytes": 4_260_693, "median_ms": 1693.0},
    "api_page": "400: 'limit': unknown parameter",
}


@dataclasses.dataclass
class ReadOnly:
    """The app's backend for reading: the page and the GET API need nothing else."""

    store: Store
    config: Config

    async def scan_now(self, target: str) -> bool:
        """Not used by the bench."""
        return False

    async def ack(self, finding_id: int, until: dt.datetime, reason: str) -> Finding:
        """Not used by the bench."""
        raise LookupError("read-only")

    def not_ready(self) -> str | None:
        """Always ready."""
        return None

    def vantage_health(self) -> tuple[str, bool] | None:
        """Not judged here."""
        return None

    def connection_rate(self, target: str) -> float | None:
        """No rate limit seen (nothing scans here)."""
        return None

    def maintenance_changed(self) -> None:
        """Nothing to act on (the bench only reads)."""


async def timed(http: aiohttp.ClientSession, url: str, rounds: int) -> dict[str, Any]:
    """Median and max time of `rounds` GETs (after one warm-up), and the body's size."""
    async with http.get(url) as resp:  # warm-up: templates compiled, pages cached by SQLite
        body = await resp.read()
        if resp.status != 200:  # e.g. parameters an older version does not know
            return {"status": resp.status, "error": body[:300].decode(errors="replace")}
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        async with http.get(url) as resp:
            body = await resp.read()
        times.append((time.perf_counter() - start) * 1000)
    return {
        "bytes": len(body),
        "median_ms": round(statistics.median(times), 1),
        "max_ms": round(max(times), 1),
        "body": body,
    }


async def run(count: int, rounds: int) -> dict[str, Any]:
    """Fill a store, serve it, time the requests."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        big = await build(Path(tmp), count)
        fill_s = time.perf_counter() - start
        store = await Store.open(Path(tmp) / "state")
        app = make_app(CollectorRegistry(), ReadOnly(store, big.config))
        server = HttpServer(app, "127.0.0.1", 0)
        await server.start()
        assert server.bound is not None
        base = "http://{}:{}".format(*server.bound)
        figures: dict[str, Any] = {}
        try:
            async with aiohttp.ClientSession() as http:
                cases = {
                    "page": "/",
                    "page_deep": "/?page=50",
                    "page_search": "/?q=router-0999",
                    "api_page": "/api/v1/targets?limit=100",
                    "api_page_down": "/api/v1/targets?limit=100&status=down",
                    "api_page_findings": "/api/v1/targets?limit=100&has_findings=true",
                    "api_all": "/api/v1/targets",
                }
                for key, path in cases.items():
                    figures[key] = await timed(http, base + path, rounds)
                first = json.loads(figures["api_page"].get("body", b"{}"))
                if first.get("next"):  # a later page by its cursor
                    later = f"/api/v1/targets?limit=100&cursor={first['next']}"
                    figures["api_page_cursor"] = await timed(http, base + later, rounds)
        finally:
            await server.stop()
            await store.close()
    for fig in figures.values():
        fig.pop("body", None)
    page, api = figures["page"], figures["api_page"]
    return {
        "machine": machine(),
        "targets": count,
        "mix": {"down": len(big.down), "with_findings": len(big.with_findings)},
        "fill_s": round(fill_s, 1),
        "rounds": rounds,
        "requests": figures,
        "before": BEFORE,
        "goals": {
            "page_bytes": {"goal": PAGE_BYTES_GOAL, "value": page["bytes"]},
            "page_ms": {"goal": PAGE_MS_GOAL, "value": page["median_ms"]},
            "api_page_ms": {"goal": API_PAGE_MS_GOAL, "value": api.get("median_ms")},
        },
        "goals_met": page["bytes"] <= PAGE_BYTES_GOAL
        and page["median_ms"] <= PAGE_MS_GOAL
        and api.get("median_ms", API_PAGE_MS_GOAL + 1) <= API_PAGE_MS_GOAL,
    }


def main() -> None:
    """Run the bench and write bench/results/page.json (or `--out`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=RESULTS / "page.json")
    args = parser.parse_args()
    result = asyncio.run(run(args.targets, args.rounds))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
