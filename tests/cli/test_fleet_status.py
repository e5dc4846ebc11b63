"""`exposuremon fleet status` and `GET /api/v1/fleet` on a real PostgreSQL: fake nodes made
through the Store's lease API (no daemon), the same document from both, and a table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from exposuremon.config.models import load_config
from exposuremon.store import Store
from exposuremon.web.app import make_app
from tests.cli.test_daemon_commands import run_cli
from tests.support.apibed import StoreBackend
from tests.support.databases import Backend

TTL = 30.0  # seconds: long enough that nothing expires while a test runs


def write_config(tmp_path: Path, url: str, vantage: str = "default") -> Path:
    """A config on the PostgreSQL database `url` (one documentation-address target)."""
    path = tmp_path / "config.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n\n'
        f'[store]\nurl = "{url}"\n\n'
        f'[fleet]\nnode = "viewer"\nvantage = "{vantage}"\nlease_ttl = "{TTL:g}s"\n\n'
        '[[targets]]\nname = "office"\naddress = "192.0.2.10"\n',
        encoding="utf-8",
    )
    return path


async def populate(url: str) -> None:
    """Nodes a and b (default, 40 and 24 shards), c (fra, every shard, another config),
    and d (default, silent for a minute, its leases run out): as keepers would leave them."""
    async with await Store.open(url) as store:
        await store.heartbeat("a", "default", "1.4.0", "h-new")
        await store.heartbeat("b", "default", "1.4.0", "h-new")
        await store.heartbeat("c", "fra", "1.3.9", "h-old")
        await store.heartbeat("d", "default", "1.3.9", "h-new")
        await store.acquire("default", "a", take=range(0, 40), renew={}, ttl=TTL)
        await store.acquire("default", "b", take=range(40, 62), renew={}, ttl=TTL)
        await store.acquire("fra", "c", take=range(64), renew={}, ttl=TTL)
        await store.acquire("default", "d", take={62, 63}, renew={}, ttl=TTL)
    # d went silent a minute ago; its leases ran out.
    db = Backend.postgresql(url)
    await db.run("UPDATE nodes SET last_seen = last_seen - 60000000 WHERE name = 'd'")
    await db.run("UPDATE shard_leases SET expires_at = expires_at - 60000000 WHERE node = 'd'")


def steady(body: dict[str, Any]) -> dict[str, Any]:
    """The body without what moves with the clock between two reads."""
    out: dict[str, Any] = json.loads(json.dumps(body))
    out.pop("now")
    for n in out["nodes"]:
        n.pop("seen_ago")
    for v in out["shards"]["vantages"].values():
        for o in v["owners"]:
            o.pop("age")
            o.pop("expires_in")
    return out


async def test_fleet_status_json_is_the_api_body(pg_url: str, tmp_path: Path) -> None:
    """Three live nodes and a dead one: the CLI's --json is GET /api/v1/fleet's body."""
    await populate(pg_url)
    config_path = write_config(tmp_path, pg_url)
    proc = run_cli("fleet", "status", "-c", str(config_path), "--json")
    assert proc.returncode == 0, proc.stderr
    from_cli = json.loads(proc.stdout)
    async with await Store.open(pg_url) as store:
        backend = StoreBackend(store, load_config(config_path))
        async with TestClient(TestServer(make_app(CollectorRegistry(), backend))) as client:
            resp = await client.get("/api/v1/fleet")
            assert resp.status == 200
            from_api = await resp.json()
            bad = await client.get("/api/v1/fleet?x=1")
            assert bad.status == 400
            assert (await bad.json())["error"].startswith("'x': unknown parameter")
    assert steady(from_cli) == steady(from_api)

    body = from_api
    nodes = {n["node"]: n for n in body["nodes"]}
    assert [n["node"] for n in body["nodes"]] == ["a", "b", "d", "c"]  # by vantage, name
    assert {k: (n["alive"], n["shards"], n["config_differs"]) for k, n in nodes.items()} == {
        "a": (True, 40, False),
        "b": (True, 22, False),
        "c": (True, 64, True),
        "d": (False, 0, False),  # dead, but its config is the fleet's
    }
    assert nodes["c"]["version"] == "1.3.9"
    assert nodes["d"]["seen_ago"] >= 60
    assert body["config_hash"] == "h-new"
    assert body["lease_ttl"] == TTL
    assert body["vantages"] == [
        {
            "name": "default",
            "status": "up",
            "nodes": 2,
            "nodes_total": 3,
            "shards_held": 62,
            "health": "up",
        },
        {
            "name": "fra",
            "status": "up",
            "nodes": 1,
            "nodes_total": 1,
            "shards_held": 64,
            "health": "up",
        },
    ]
    shards = body["shards"]
    assert shards["total"] == 64
    assert shards["vantages"]["default"]["unheld"] == [62, 63]
    assert shards["vantages"]["fra"]["unheld"] == []
    first = shards["vantages"]["default"]["owners"][0]
    assert (first["shard"], first["node"], first["epoch"]) == (0, "a", 1)
    assert 0 <= first["age"] < 10
    assert TTL - 10 < first["expires_in"] <= TTL
    assert body["now"].endswith("Z")
    assert nodes["a"]["last_seen"].endswith("Z")


async def test_fleet_status_table(pg_url: str, tmp_path: Path) -> None:
    """The table marks the dead node, the node whose config differs and the unheld shards."""
    await populate(pg_url)
    proc = run_cli("fleet", "status", "-c", str(write_config(tmp_path, pg_url)), columns=200)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    row = {line.split()[1]: line for line in lines if line.startswith("│ ") and "│" in line[2:]}
    assert "DIFFERS" in row["c"]
    assert "NO (" in row["d"]
    assert "yes" in row["a"]
    assert "same" in row["a"]
    (default,) = [line for line in lines if "│ default │ up" in line]
    assert "62 of 64" in default
    assert "62-63" in default
    assert "2 of 3" in default


async def test_fleet_status_of_a_database_nobody_joined(pg_url: str, tmp_path: Path) -> None:
    """No node ever ran: an empty fleet in JSON, one line as text, exit 0."""
    async with await Store.open(pg_url):
        pass  # migrated, as the daemon's first start leaves it
    config_path = write_config(tmp_path, pg_url)
    proc = run_cli("fleet", "status", "-c", str(config_path), "--json")
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)
    assert (body["nodes"], body["vantages"]) == ([], [])
    assert body["shards"] == {"total": 64, "vantages": {}}
    text = run_cli("fleet", "status", "-c", str(config_path))
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("no node has joined the fleet")


def test_fleet_status_errors_are_one_line(tmp_path: Path) -> None:
    """A SQLite store the daemon never made: exit 1, one line; a bad config: exit 2."""
    config_path = tmp_path / "config.toml"
    config_path.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n\n'
        '[[targets]]\nname = "office"\naddress = "192.0.2.10"\n',
        encoding="utf-8",
    )
    proc = run_cli("fleet", "status", "-c", str(config_path))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"exposuremon: error: no database at {tmp_path / 'state' / 'exposuremon.db'}: the "
        "daemon has not run with this state_dir"
    ]
    config_path.write_text(
        config_path.read_text(encoding="utf-8") + '[fleet]\nlease_ttl = "1s"\n', encoding="utf-8"
    )
    bad = run_cli("fleet", "status", "-c", str(config_path))
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1
    assert "fleet.lease_ttl" in bad.stderr
    assert "Traceback" not in bad.stderr + proc.stderr
