"""Vantage points on the namespace test bed: scanner namespaces that reach the routers of
tests/support/testbed.py by paths of their own, each running one node of one fleet.

    root namespace: the tests, PostgreSQL's Unix socket (shared: same filesystem), receivers
       | 198.18.m.1              | 198.18.k.1              | 198.18.n.1
       | veth                    | veth                    | veth
    [vantage fra 198.18.m.2]  [vantage nyc 198.18.k.2]  [router 198.18.n.2]
       r<n> ------------------------------------------------ v<m>
                                 r<n> ---------------------- v<k>

- A vantage namespace is built as a Router's is (`Vantage.ns`: the same subnet allocation, a
  veth to the root namespace, removal of crashed runs' leftovers by `cleanup_stale`), with a
  firewall that accepts everything and no listeners. Its address 198.18.m.2 is where its
  node's HTTP server listens (the tests reach it over that veth) and the source of its probes.
- For each router, a veth pair joins the vantage (`r<n>`) and the router (`v<m>`), with host
  routes at both ends: the vantage reaches the router's 198.18.n.2 over its own link and the
  router answers over the same link. A vantage has no default route and nothing here makes the
  root namespace forward, so a vantage's probes travel only over its own links.
- Controls are an nftables table `inet emvantage` in the vantage namespace, on the input hook:
  `cut` drops everything arriving over the router links (the SYNs leave, no SYN-ACK, RST or
  ICMP comes back: an uplink outage as the scanner sees it), `filter_port` drops what one router
  sends from one port over that link (a filter on that path only: the port looks filtered).
- `VantageBed` runs one `exposuremon run` node per vantage (`Node` of tests/support/fleet_nodes.py,
  started with `ip netns exec`), all of one fleet: the same targets (one per router), schedule and
  channels, `[fleet] vantage` its own, `[store] url_env` naming a PostgreSQL database reached
  through its Unix socket. A channel's URL comes from the node's environment: the receiver
  listening on that vantage's gateway (198.18.m.1, `Receiver(hosts=bed.gateways)`).

    with VantageBed(tmp_path, pg_url, routers=1) as bed:
        router = bed.routers[0]
        async with Receiver("webhook", hosts=bed.gateways) as hook:
            bed.start(channels={"ops": hook})
            await asyncio.to_thread(bed.wait_ready)
            bed.cut("fra")
            ...

Everything is undone on exit, whatever happened: nodes (SIGTERM, then SIGKILL), vantage and
router namespaces (with them their links and nftables tables), and a cluster the bed started
itself (when given no store URL). Calls block briefly (subprocesses, HTTP with a 5 s timeout);
start nodes from the main thread (they die with it: PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from exposuremon.store.schema import to_micros
from tests.support import postgres
from tests.support.databases import Backend
from tests.support.fleet_nodes import HTTP_TIMEOUT, Node, stop_nodes, wait_ready
from tests.support.receivers import Receiver
from tests.support.testbed import Router, alive, make_router
from tests.support.testbed_sys import run

VANTAGES = ("fra", "nyc")
HTTP_PORT = 9810  # every node listens on its own vantage address, so one port serves all
TOKEN = "vantage-bed-api-token"  # the nodes' API token (EXPOSUREMON_API_TOKEN)
TOKEN_ENV = "EXPOSUREMON_API_TOKEN"
NFT_TABLE = "emvantage"
SQLITE = "sqlite"  # as the store URL: one node on its own SQLite file, no fleet
READY_WITHIN = 60.0  # seconds for the nodes to start and take their vantage's shards


class Vantage:
    """One vantage namespace: its links to routers and the nftables controls of its path."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ns: Router = make_router()
        self._links: dict[int, Router] = {}  # router index -> router
        self._cut = False
        self._filters: set[tuple[int, int]] = set()  # (router index, port)
        try:
            self.ns.set_policy("accept")
            self._apply()
        except BaseException:
            self.ns.close()
            raise

    @property
    def netns(self) -> str:
        """The namespace's name (emtb-<pid>-<m>)."""
        return self.ns.name

    @property
    def addr(self) -> str:
        """Its address: the source of its probes and where its node listens (198.18.m.2)."""
        return self.ns.addr

    @property
    def gateway(self) -> str:
        """The root namespace's end of its veth (198.18.m.1): where it reaches test servers."""
        return self.ns.host_addr

    def link(self, router: Router) -> None:
        """Join the router by a veth pair of its own, with routes both ways."""
        mine, theirs = f"r{router.index}", f"v{self.ns.index}"
        # Both ends are made in their namespaces at once: no name in the root namespace.
        run(
            ["ip", "link", "add", "name", mine, "netns", self.netns, "type", "veth",
             "peer", "name", theirs, "netns", router.name]
        )  # fmt: skip
        batch = f"link set {mine} up\nroute add {router.addr}/32 dev {mine} src {self.addr}\n"
        run(["ip", "-n", self.netns, "-batch", "-"], stdin=batch)
        batch = f"link set {theirs} up\nroute add {self.addr}/32 dev {theirs}\n"
        run(["ip", "-n", router.name, "-batch", "-"], stdin=batch)
        self._links[router.index] = router
        self._apply()

    def cut(self) -> None:
        """Drop everything the routers send over this vantage's links."""
        self._cut = True
        self._apply()

    def restore(self) -> None:
        """Undo `cut` (port filters stay)."""
        self._cut = False
        self._apply()

    def filter_port(self, router: Router, port: int) -> None:
        """Drop what `router` sends from `port` over this vantage's link to it."""
        if router.index not in self._links:
            raise ValueError(f"vantage {self.name} has no link to {router.name}")
        self._filters.add((router.index, port))
        self._apply()

    def unfilter_port(self, router: Router, port: int) -> None:
        """Undo `filter_port`."""
        self._filters.discard((router.index, port))
        self._apply()

    def rules(self) -> str:
        """The nftables ruleset of the controls now (for failure messages)."""
        return self.ns.run_inside(["nft", "list", "table", "inet", NFT_TABLE])

    def _apply(self) -> None:
        """Load the whole control table in one nft transaction."""
        rules = []
        links = sorted(f'"r{index}"' for index in self._links)
        if self._cut and links:
            rules.append(f"iifname {{ {', '.join(links)} }} drop")
        for index, port in sorted(self._filters):
            rules.append(f'iifname "r{index}" tcp sport {port} drop')
        script = f"table inet {NFT_TABLE} {{}}\ndelete table inet {NFT_TABLE}\n"
        script += f"table inet {NFT_TABLE} {{\n  chain input {{\n"
        script += "    type filter hook input priority -10; policy accept;\n"
        script += "".join(f"    {rule}\n" for rule in rules) + "  }\n}\n"
        self.ns.run_inside(["nft", "-f", "-"], stdin=script)

    def close(self) -> None:
        """Delete the namespace: its links (both ends) and nftables table go with it."""
        self.ns.close()


@dataclasses.dataclass(frozen=True, slots=True)
class ScanRow:
    """One row of the `scans` table."""

    vantage: str
    kind: str
    open: int
    closed: int
    filtered: int
    finished: int  # microseconds since the epoch

    @property
    def silent(self) -> bool:
        """No port answered (no SYN-ACK, no RST)."""
        return self.open == 0 and self.closed == 0


def micros(when: dt.datetime | None = None) -> int:
    """`when` (default: now) in the store's microseconds."""
    return to_micros(when or dt.datetime.now(dt.UTC), "time")


class VantageBed:
    """Routers, vantages linked to each of them, and one fleet node per vantage."""

    def __init__(
        self,
        workdir: Path,
        store_url: str | None = None,
        *,
        routers: int = 1,
        vantages: Sequence[str] = VANTAGES,
    ) -> None:
        self.workdir = workdir
        self._store_url = store_url
        self._router_count = routers
        self._vantage_names = tuple(vantages)
        self.routers: list[Router] = []
        self.vantages: dict[str, Vantage] = {}
        self.nodes: dict[str, Node] = {}  # by vantage
        self.cluster: postgres.Cluster | None = None
        self._stack = contextlib.ExitStack()

    # -- construction and teardown -------------------------------------------------------------

    def __enter__(self) -> VantageBed:
        try:
            if self._store_url == SQLITE and len(self._vantage_names) != 1:
                raise ValueError("a SQLite store has one node: give exactly one vantage")
            if self._store_url is None:
                self.cluster = self._stack.enter_context(postgres.running_cluster())
                self._store_url = self.cluster.url(self.cluster.create_database())
            for _ in range(self._router_count):
                router = make_router()
                self._stack.callback(router.close)
                self.routers.append(router)
            for name in self._vantage_names:
                vantage = Vantage(name)
                self._stack.callback(vantage.close)
                self.vantages[name] = vantage
                for router in self.routers:
                    vantage.link(router)
            # Registered last, so it runs first: nodes stop before their namespaces go.
            self._stack.callback(self._stop_nodes)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def _stop_nodes(self) -> None:
        stop_nodes(self.nodes.values())

    @property
    def store_url(self) -> str:
        """The fleet's PostgreSQL database, or SQLITE."""
        assert self._store_url is not None, "enter the bed first"
        return self._store_url

    @property
    def backend(self) -> Backend:
        """The nodes' database, to read from beside them."""
        if self.store_url == SQLITE:
            (vantage,) = self._vantage_names
            return Backend.sqlite(self.workdir / f"{vantage}-1" / "state")
        return Backend.postgresql(self.store_url)

    @property
    def gateways(self) -> tuple[str, ...]:
        """The root-namespace address each vantage reaches (for `Receiver(hosts=...)`)."""
        return tuple(v.gateway for v in self.vantages.values())

    def target(self, router: Router) -> str:
        """The target name of a router in the nodes' config."""
        return f"router-{self.routers.index(router)}"

    # -- nodes ---------------------------------------------------------------------------------

    def start(
        self,
        *,
        channels: Mapping[str, Receiver] | None = None,
        expected_open: str = "",
        sentinel: str = "2s",
        lease_ttl: str = "10s",
        min_severity: str = "warning",
        resolve_after: int | None = None,
        scan: Sequence[str] = (),
        extra: str = "",
    ) -> None:
        """Write every vantage's node config and start the nodes (see `wait_ready`).

        `lease_ttl` is long: each vantage has one node, so no failover is tested here, and a
        long lease rides out a database slowed by a busy machine (a lapsed lease would stop the
        node's scans). `channels`: channel name -> receiver listening on `gateways`;
        `expected_open` applies to every target; `scan` are TOML lines added to the [scan]
        table (e.g. "flap_threshold = 1000"); `extra` is TOML appended to every config
        (tables other than those written here: daemon, http, scan, schedule, store, fleet).
        """
        channels = channels or {}
        for name, vantage in self.vantages.items():
            node_name = f"{name}-1"
            directory = self.workdir / node_name
            config = self._write_config(
                directory, vantage, node_name, channels, expected_open, sentinel, lease_ttl,
                min_severity, resolve_after, scan, extra,
            )  # fmt: skip
            node = Node(
                node_name,
                config,
                HTTP_PORT,
                directory / "node.log",
                host=vantage.addr,
                netns=vantage.netns,
            )
            env = {TOKEN_ENV: TOKEN}
            env.update({_url_env(c): r.url_on(vantage.gateway) for c, r in channels.items()})
            node.start_with(self.store_url, env)
            self.nodes[name] = node

    def _write_config(
        self,
        directory: Path,
        vantage: Vantage,
        node_name: str,
        channels: Mapping[str, Receiver],
        expected_open: str,
        sentinel: str,
        lease_ttl: str,
        min_severity: str,
        resolve_after: int | None,
        scan: Sequence[str],
        extra: str,
    ) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        lines = [
            "[daemon]",
            f'state_dir = "{directory / "state"}"',
            'log_format = "json"',
            'log_level = "debug"',  # "scan recorded" lines: every scan of the node, quiet or not
            "[http]",
            f'listen = "{vantage.addr}:{HTTP_PORT}"',
            "[scan]",
            'timeout_initial = "300ms"',
            'fingerprint_timeout = "2s"',
            *([] if resolve_after is None else [f"resolve_after = {resolve_after}"]),
            *scan,
            "[schedule]",
            f'sentinel = "{sentinel}"',
            'quick = "1h"',
            'full = "24h"',
            "jitter = 0",
            "[store]",
            *([] if self.store_url == SQLITE else ['url_env = "EXPOSUREMON_STORE_URL"']),
            "[fleet]",
            f'node = "{node_name}"',
            f'vantage = "{vantage.name}"',
            f'lease_ttl = "{lease_ttl}"',
        ]
        for router in self.routers:
            lines += [
                "[[targets]]",
                f'name = "{self.target(router)}"',
                f'address = "{router.addr}"',
                'ports_quick = "1-5"',  # quick and full scans: the sentinel set and 1-5
                'ports_full = "1-5"',
            ]
            if expected_open:
                lines.append(f'expected_open = "{expected_open}"')
        for channel, receiver in channels.items():
            lines += [
                "[[notify]]",
                f'name = "{channel}"',
                f'type = "{receiver.kind}"',
                f'url_env = "{_url_env(channel)}"',
                f'min_severity = "{min_severity}"',
            ]
        path = directory / "config.toml"
        path.write_text("\n".join(lines) + "\n" + extra)
        return path

    def wait_ready(self, deadline: float = READY_WITHIN) -> None:
        """Block until every node answers /readyz 200 and holds every shard of its vantage
        (the one node on SQLite: until it is ready)."""
        wait_ready(list(self.nodes.values()), deadline)
        if self.store_url == SQLITE:
            return  # no fleet, no shards
        end = time.monotonic() + deadline
        while not self.shards_settled():
            if time.monotonic() > end:
                raise AssertionError(f"shards not settled within {deadline:g}s: {self.fleet()}")
            time.sleep(0.2)

    def shards_settled(self) -> bool:
        """Every vantage has one live node holding all shards (as /api/v1/fleet shows)."""
        fleet = self.fleet()
        total = fleet.get("shards", {}).get("total")
        vantages = {v["name"]: v for v in fleet.get("vantages", [])}
        return set(vantages) == set(self.vantages) and all(
            v["nodes"] == 1 and v["shards_held"] == total for v in vantages.values()
        )

    # -- HTTP ----------------------------------------------------------------------------------

    def get_json(self, vantage: str, path: str) -> Any:
        """GET `path` of the vantage's node, parsed; AssertionError unless 200."""
        status, body = self.nodes[vantage].get(path)
        if status != 200:
            raise AssertionError(f"GET {path} on {vantage}: {status} {body[:300]}")
        return json.loads(body)

    def fleet(self, vantage: str | None = None) -> dict[str, Any]:
        """`GET /api/v1/fleet` of a node (the first vantage's by default)."""
        fleet: dict[str, Any] = self.get_json(vantage or self._vantage_names[0], "/api/v1/fleet")
        return fleet

    def scan_now(self, vantage: str, target: str) -> None:
        """Ask the vantage's node for a quick scan of `target` now (recorded even if quiet)."""
        node = self.nodes[vantage]
        request = urllib.request.Request(
            f"{node.url}/api/v1/targets/{target}/scan",
            method="POST",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            with exc:
                raise AssertionError(f"scan of {target} on {vantage}: {exc.code}") from None
        if status != 202:
            raise AssertionError(f"scan of {target} on {vantage}: {status}")

    # -- path controls -------------------------------------------------------------------------

    def cut(self, vantage: str) -> None:
        """The vantage loses its path to every router (see `Vantage.cut`)."""
        self.vantages[vantage].cut()

    def restore(self, vantage: str) -> None:
        """The vantage's path to the routers is back."""
        self.vantages[vantage].restore()

    def filter_port(self, vantage: str, router: Router, port: int) -> None:
        """`port` of `router` is filtered on the vantage's path only."""
        self.vantages[vantage].filter_port(router, port)

    def unfilter_port(self, vantage: str, router: Router, port: int) -> None:
        """Undo `filter_port`."""
        self.vantages[vantage].unfilter_port(router, port)

    # -- the store -----------------------------------------------------------------------------

    async def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of a query on the fleet's database (`?` placeholders)."""
        return await self.backend.run(query, *args)

    async def scans(self, target: str, since: int = 0) -> list[ScanRow]:
        """The target's scans that finished after `since` (microseconds), oldest first."""
        rows = await self.sql(
            "SELECT vantage, kind, open_count, closed_count, filtered_count, finished FROM scans"
            " WHERE target = ? AND finished > ? ORDER BY finished",
            target,
            since,
        )
        return [ScanRow(*row) for row in rows]

    async def wait_scan(
        self,
        vantage: str,
        target: str,
        since: int,
        check: Callable[[ScanRow], bool],
        what: str,
        deadline: float = 45.0,
        ask_every: float = 3.0,
    ) -> ScanRow:
        """The first scan of `target` by `vantage` after `since` that passes `check`, asking
        the node for a quick scan now and then (one asked for is recorded even if quiet)."""
        end = time.monotonic() + deadline
        asked = 0.0
        while True:
            for row in await self.scans(target, since):
                if row.vantage == vantage and check(row):
                    return row
            now = time.monotonic()
            if now > end:
                seen = [r for r in await self.scans(target, since) if r.vantage == vantage]
                raise AssertionError(f"not within {deadline:g}s: {vantage} {what}; saw {seen}")
            if now - asked >= ask_every:
                self.scan_now(vantage, target)
                asked = now
            await asyncio.sleep(0.2)

    async def events(self, since: int = 0, target: str | None = None) -> list[dict[str, Any]]:
        """Events observed after `since` (microseconds), oldest first, as dicts."""
        query = "SELECT id, type, target, port, observed_at, summary, details FROM events"
        query += " WHERE observed_at > ?"
        args: list[Any] = [since]
        if target is not None:
            query += " AND target = ?"
            args.append(target)
        rows = await self.sql(query + " ORDER BY id", *args)
        keys = ("id", "type", "target", "port", "observed_at", "summary", "details")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    # -- teardown checks -----------------------------------------------------------------------

    def resources(self) -> dict[str, Any]:
        """What the bed made that must be gone after exit: namespaces, node pids, cluster."""
        namespaces = [r.name for r in self.routers] + [v.netns for v in self.vantages.values()]
        return {
            "namespaces": namespaces,
            "pids": [n.proc.pid for n in self.nodes.values() if n.proc is not None],
            "cluster": None if self.cluster is None else self.cluster.root,
        }


def leftovers(resources: Mapping[str, Any]) -> list[str]:
    """Which of `resources` (from `VantageBed.resources`) still exist."""
    listed = {line.split()[0] for line in run(["ip", "netns", "list"]).splitlines() if line}
    left = [f"namespace {n}" for n in resources["namespaces"] if n in listed]
    left += [f"process {pid}" for pid in resources["pids"] if alive(pid)]
    cluster = resources["cluster"]
    if cluster is not None and Path(cluster).exists():
        left.append(f"cluster {cluster}")
    return left


def _url_env(channel: str) -> str:
    """The environment variable that carries a channel's URL to the nodes."""
    return "EXPOSUREMON_BED_URL_" + "".join(c if c.isalnum() else "_" for c in channel.upper())
