"""Fleet nodes as real `exposuremon run` processes, for the failure-case tests
(tests/fleet/test_failover.py) and the fleet benchmark (bench/fleet_bench.py).

- `loopback_targets`: N targets on 127.N.x.y addresses, some with an expected open port and
  some with an unexpected one (listeners the caller opens with `open_listeners`), so that
  there are findings and events whose duplicates can be counted.
- `node_process`: one daemon process (`Node` of tests/support/fleet_nodes.py) on a shared
  PostgreSQL database (`[store] url_env`), its own node name, HTTP port and log; kill -9,
  SIGSTOP/SIGCONT, SIGTERM; reads its /readyz and /metrics.
- `ScanWatch`: polls the nodes' /metrics and records every sentinel scan time each node shows
  per target (`exposuremon_last_scan_success_timestamp_seconds{kind="sentinel"}`). /metrics
  shows the held quiet scans too, which the store gets only at the next quiet flush (every
  60 s): it is where a scan can be seen within a second of its end.
- `lease_owners`, `duplicates`: the store's view (leases by the database's clock; findings per
  (target, port) and events per (type, target, port) counted in SQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import selectors
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from exposuremon.fleet import shard_of
from exposuremon.store import Store
from tests.support.databases import Backend
from tests.support.fleet_nodes import URL_ENV, Node
from tests.support.loopback import Listeners

VANTAGE = "default"
UNEXPECTED_PORT = 8088  # a hot port: in every sentinel scan
EXPECTED_PORT = 8443
_LAST_SCAN = "exposuremon_last_scan_success_timestamp_seconds{"


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """A loopback target: its name, address, expected open ports and the ports it listens on."""

    name: str
    address: str
    expected: str = ""
    listen: tuple[int, ...] = ()


def loopback_targets(count: int, net: int, *, unexpected_every: int = 10) -> list[Target]:
    """`count` targets on 127.`net`.x.y; every 7th expects and listens on 8443, every
    `unexpected_every`-th listens on 8088 unexpectedly (a finding each)."""
    targets = []
    for i in range(count):
        listen: list[int] = []
        expected = ""
        if i % 7 == 0:
            expected = str(EXPECTED_PORT)
            listen.append(EXPECTED_PORT)
        if unexpected_every and i % unexpected_every == 3:
            listen.append(UNEXPECTED_PORT)
        address = f"127.{net}.{i // 250}.{i % 250 + 1}"
        targets.append(Target(f"t{i:04d}", address, expected, tuple(listen)))
    return targets


def open_listeners(targets: Iterable[Target], listeners: Listeners) -> None:
    """Listen on every target's `listen` ports."""
    for target in targets:
        for port in target.listen:
            listeners.open(target.address, port)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (a node binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_node_config(
    directory: Path,
    node: str,
    targets: Sequence[Target],
    *,
    http_port: int,
    sentinel: str,
    lease_ttl: str,
    quick: str = "15m",
    full: str = "24h",
    jitter: float = 0.0,
    fingerprint_timeout: str = "2s",
    small_scans: bool = True,
    log_level: str = "info",
) -> Path:
    """Node `node`'s config: the shared targets, schedule and scan tuning (the same on every
    node, so one config hash), and its own name, HTTP port and state directory.
    `small_scans`: quick and full scans cover ports 1-5 besides the sentinel set."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        "[daemon]",
        f'state_dir = "{directory / "state"}"',
        'log_format = "json"',
        f'log_level = "{log_level}"',
        "[http]",
        f'listen = "127.0.0.1:{http_port}"',
        "[scan]",
        'timeout_initial = "300ms"',
        f'fingerprint_timeout = "{fingerprint_timeout}"',
        "[schedule]",
        f'sentinel = "{sentinel}"',
        f'quick = "{quick}"',
        f'full = "{full}"',
        f"jitter = {jitter}",
        "[store]",
        f'url_env = "{URL_ENV}"',
        "[fleet]",
        f'node = "{node}"',
        f'lease_ttl = "{lease_ttl}"',
    ]
    for target in targets:
        lines += ["[[targets]]", f'name = "{target.name}"', f'address = "{target.address}"']
        if target.expected:
            lines.append(f'expected_open = "{target.expected}"')
        if small_scans:
            lines += ['ports_quick = "1-5"', 'ports_full = "1-5"']
    path = directory / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def node_process(name: str, config: Path, http_port: int, url: str) -> Node:
    """Node `name` (not started) on the database `url`, logging beside its config."""
    return Node(name, config, http_port, config.parent / f"{name}.log", store_url=url)


def sentinel_times(metrics_text: str) -> dict[str, float]:
    """Target -> last sentinel scan (unix seconds) from a /metrics body."""
    times = {}
    for line in metrics_text.splitlines():
        if line.startswith(_LAST_SCAN) and 'kind="sentinel"' in line:
            name = line.split('target="', 1)[1].split('"', 1)[0]
            times[name] = float(line.rsplit(" ", 1)[1])
    return times


async def wait_for(check: Any, deadline: float, what: str, every: float = 0.2) -> Any:
    """Poll `check()` (sync or async) until truthy; AssertionError after `deadline` s."""
    try:
        async with asyncio.timeout(deadline):
            while True:
                value = check()
                if asyncio.iscoroutine(value):
                    value = await value
                if value:
                    return value
                await asyncio.sleep(every)
    except TimeoutError:
        raise AssertionError(f"not within {deadline:g}s: {what}") from None


class ScanWatch:
    """Every sentinel scan time the running nodes' /metrics show, per target.

    `scans[target]` maps a scan's end (unix seconds) to the node that showed it. Polled every
    `every` seconds, faster than the sentinel interval, so every scan is seen; a missed one
    could only make a gap look longer, never shorter.
    """

    def __init__(self, nodes: Sequence[Node], session: aiohttp.ClientSession, every: float = 0.25):
        self.nodes = nodes
        self.session = session
        self.every = every
        self.scans: dict[str, dict[float, str]] = {}
        self.listed: dict[str, set[str]] = {}  # node -> targets in its last scrape
        self.scrapes = 0
        self._task: asyncio.Task[None] | None = None

    async def poll(self) -> None:
        """Scrape every running node once."""
        for node in list(self.nodes):
            if not node.running:
                self.listed.pop(node.name, None)
                continue
            status, text = await node.aget(self.session, "/metrics")
            if status != 200:
                continue
            times = sentinel_times(text)
            self.listed[node.name] = set(times)
            for target, when in times.items():
                self.scans.setdefault(target, {}).setdefault(when, node.name)
        self.scrapes += 1

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            await self.poll()
            await asyncio.sleep(max(0.0, self.every - (time.monotonic() - started)))

    def start(self) -> None:
        """Poll in a task until `stop`."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """End the polling task."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def first_after(
        self, target: str, since: float, *, exclude: str | None = None, by: str | None = None
    ) -> float | None:
        """The first sentinel scan of `target` that ended after `since` (unix seconds), by
        a node other than `exclude` (or by `by`); None when none was seen yet."""
        times = [
            t
            for t, n in self.scans.get(target, {}).items()
            if t > since and n != exclude and by in (None, n)
        ]
        return min(times) if times else None

    def longest_gap(self, target: str, since: float, until: float) -> float:
        """The longest time without a sentinel scan of `target` within [since, until], the
        last scan before `since` counting as the gap's start."""
        times = sorted(self.scans.get(target, {}))
        before = [t for t in times if t <= since]
        points = [before[-1] if before else since] + [t for t in times if since < t <= until]
        points.append(until)
        return max(b - a for a, b in itertools.pairwise(points))


async def lease_owners(url: str, names: Iterable[str]) -> dict[str, list[str]]:
    """Target -> the nodes holding a live lease on its shard (by the database's clock)."""
    async with await Store.open(url) as store:
        shards = await store.fleet_shards()
        view = await store.lease_view(VANTAGE)
    live: dict[int, list[str]] = {}
    for lease in view.leases:
        if lease.expires_at > view.now:
            live.setdefault(lease.shard, []).append(lease.node)
    return {name: live.get(shard_of(name, shards), []) for name in names}


async def shard_counts(url: str) -> dict[str, int]:
    """Node -> how many live shard leases it holds."""
    async with await Store.open(url) as store:
        view = await store.lease_view(VANTAGE)
    counts: dict[str, int] = {}
    for lease in view.leases:
        if lease.expires_at > view.now:
            counts[lease.node] = counts.get(lease.node, 0) + 1
    return counts


async def duplicates(url: str) -> list[str]:
    """Findings doubled per (target, port) and events doubled per (type, target, port)."""
    backend = Backend.postgresql(url)
    found = [
        f"finding {target}/{port} x{count}"
        for target, port, count in await backend.run(
            "SELECT target, port, count(*) FROM findings GROUP BY target, port HAVING count(*) > 1"
        )
    ]
    found += [
        f"event {kind} {target}/{port} x{count}"
        for kind, target, port, count in await backend.run(
            "SELECT type, target, port, count(*) FROM events GROUP BY type, target, port "
            "HAVING count(*) > 1"
        )
    ]
    return found


async def table_counts(url: str) -> dict[str, int]:
    """Rows in findings and events."""
    return await Backend.postgresql(url).counts(("findings", "events"))


class StallingServer:
    """A listener on (address, port) that accepts and holds every connection without a word
    (a fingerprint of it waits for its time limit), until `speak()`: from then on it sends an
    SSH banner to each new connection (a fingerprint ends at once). `holding(age)` says
    whether a connection has been open for `age` seconds: a fingerprint in progress (the
    scan's probes and its confirmation close theirs at once)."""

    BANNER = b"SSH-2.0-exposuremon-test\r\n"

    def __init__(self, address: str, port: int) -> None:
        self._listener = socket.create_server((address, port), backlog=64)
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._open: dict[socket.socket, float] = {}  # connection -> when accepted (monotonic)
        self._speak = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def speak(self) -> None:
        """Answer new connections with a banner from now on."""
        self._speak.set()

    def holding(self, age: float) -> bool:
        """A connection has been held open (not closed by its peer) for `age` seconds."""
        now = time.monotonic()
        with self._lock:
            return any(now - since >= age for since in self._open.values())

    def _serve(self) -> None:
        while not self._closed.is_set():
            for key, _ in self._selector.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                    continue
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:  # the peer closed (or reset) it
                    self._drop(sock)

    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        self.accepted += 1
        if self._speak.is_set():
            with contextlib.suppress(OSError):
                conn.sendall(self.BANNER)
        conn.setblocking(False)
        self._selector.register(conn, selectors.EVENT_READ)
        with self._lock:
            self._open[conn] = time.monotonic()

    def _drop(self, sock: socket.socket) -> None:
        self._selector.unregister(sock)
        with self._lock:
            self._open.pop(sock, None)
        sock.close()

    def close(self) -> None:
        """Stop serving and close every socket."""
        self._closed.set()
        self._thread.join(timeout=5)
        for key in list(self._selector.get_map().values()):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            sock.close()
        self._selector.close()
