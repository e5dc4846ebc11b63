"""`make fleet-demo`: three nodes of one fleet on a throwaway PostgreSQL cluster, on this box.

Starts a PostgreSQL cluster in a temporary directory (tests/support/postgres.py: `initdb` as
the `postgres` user, a Unix socket only, no TCP), creates the role `exposuremon` and its
database as docs/fleet.md sets them up, and starts three `exposuremon run` processes on
configs made from config.example.toml: each with its own `[fleet] node`, HTTP port and state
dir, all on the same `[store] url_env`, watching 32 loopback targets (127.0.10.1-32) of which
two have a port left open on purpose (findings). It prints where each node's pages are, says
when the shards move between the nodes, and on Ctrl-C (SIGINT) or SIGTERM stops the three
nodes and the cluster and removes the temporary directories; also when a node fails to start
(then it says which and why). Kill a node (`kill -9 PID`) to watch its targets move.

Needs root, like the tests that use PostgreSQL: the server runs as the `postgres` user.

It lives in bench/ because bench/ holds what runs from a checkout only and may use the test
support code (the store benchmark starts its cluster the same way); deploy/ holds what is
installed on a real host, and a cluster with trust authentication and fsync off is not.

Run: `make fleet-demo`, or `python -m bench.fleet_demo [--base-port 9811] [--lease-ttl 15s]`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from tests.support.fleet_nodes import (
    URL_ENV,
    Node,
    NodeFailed,
    start_nodes,
    stop_nodes,
    wait_ready,
)
from tests.support.loopback import Listeners
from tests.support.postgres import Cluster, missing_requirements, running_cluster
from tests.support.prom import free_port

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config.example.toml"
PREFIX = "exposuremon-fleet-demo-"
ROLE = DATABASE = "exposuremon"
TARGETS = 32
ADDRESS = "127.0.10.{}"
# (target number, port): unexpected open ports on purpose, so that the fleet has findings.
OPEN_ON_PURPOSE = ((2, 8081), (7, 8443))
READY_TIMEOUT = 90.0  # seconds for all nodes to answer /readyz 200 (a loaded box)
WATCH_EVERY = 2.0  # seconds between looks at the nodes while the demo runs
_SHARDS_HELD = re.compile(r"^exposuremon_shards_held (\S+)$", re.M)


class Interrupted(BaseException):
    """SIGINT or SIGTERM: stop everything (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


def _hold_signals() -> None:
    """From here on SIGINT and SIGTERM are ignored: the clean-up runs to its end."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def remove_stale(tmp: Path | None = None) -> None:
    """Remove the work dirs of earlier demos that were killed (their process is gone); their
    nodes died with them and `running_cluster` removes their clusters."""
    for old in Path(tmp or tempfile.gettempdir()).glob(f"{PREFIX}*-*"):
        pid = old.name.removeprefix(PREFIX).split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)


def say(text: str) -> None:
    """One message on stdout, at once (the test reads it through a pipe)."""
    print(text, flush=True)


def how_it_ended(code: int | None) -> str:
    """An exit status as words: '0', '2', 'killed by SIGKILL'."""
    if code is None:
        return "still running"
    return f"killed by {signal.Signals(-code).name}" if code < 0 else str(code)


def target_name(number: int) -> str:
    """The demo's name of target `number` (1-based)."""
    return f"router-{number:02d}"


def demo_config(
    example: str, *, node: str, port: int, state_dir: Path, lease_ttl: str, targets: int
) -> str:
    """config.example.toml made into node `node`'s config: its state dir, HTTP port and node
    name, the store named by URL_ENV, `lease_ttl`, and `targets` loopback targets instead of
    the example's one. ValueError when the example no longer has a line this replaces."""
    replacements = [
        ('state_dir = "state"', f'state_dir = "{state_dir}"'),
        ('listen = "127.0.0.1:9810"', f'listen = "127.0.0.1:{port}"'),
        (f'# url_env = "{URL_ENV}"', f'url_env = "{URL_ENV}"'),
        ('# node = "scan-fra-1"', f'node = "{node}"'),
        ('lease_ttl = "15s"', f'lease_ttl = "{lease_ttl}"'),
    ]
    text = example
    for old, new in replacements:
        pattern = re.compile(rf"^{re.escape(old)}$", re.M)
        text, count = pattern.subn(new.replace("\\", "\\\\"), text)
        if count != 1:
            raise ValueError(f"config.example.toml: expected one line {old!r}, found {count}")
    head, marker, _ = text.partition("# One [[targets]] table per monitored address.")
    if not marker:
        raise ValueError("config.example.toml: no '# One [[targets]] table' line")
    lines = [f"{marker}\n# (fleet-demo: {targets} loopback addresses instead of the example's)"]
    for number in range(1, targets + 1):
        lines += [
            "[[targets]]",
            f'name = "{target_name(number)}"',
            f'address = "{ADDRESS.format(number)}"',
            'ports_quick = "top1000,hot"',
            'ports_full = "1-65535"',
        ]
    return head + "\n".join(lines) + "\n"


def create_database(cluster: Cluster) -> str:
    """The role and its database as docs/fleet.md sets them up; the nodes' store URL."""
    cluster.psql(f"CREATE ROLE {ROLE} LOGIN")  # no superuser, no CREATEDB, no CREATEROLE
    cluster.psql(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
    return f"postgresql://{ROLE}@/{DATABASE}?host={cluster.socket_dir}"


def make_nodes(work: Path, count: int, base_port: int, lease_ttl: str) -> list[Node]:
    """`count` nodes with their configs written under `work` (base_port 0: free ports)."""
    example = EXAMPLE.read_text()
    nodes = []
    for i in range(1, count + 1):
        name = f"node-{i}"
        directory = work / name
        directory.mkdir(mode=0o700)
        port = free_port() if base_port == 0 else base_port + i - 1
        config = directory / "config.toml"
        config.write_text(
            demo_config(
                example,
                node=name,
                port=port,
                state_dir=directory / "state",
                lease_ttl=lease_ttl,
                targets=TARGETS,
            )
        )
        nodes.append(Node(name, config, port, directory / "exposuremon.log"))
    return nodes


def show_pages(nodes: Sequence[Node]) -> None:
    """Where each node's pages are (the fleet API only where this version has it)."""
    for node in nodes:
        fleet_status, _ = node.get("/api/v1/fleet")
        fleet = (
            f"{node.url}/api/v1/fleet"
            if fleet_status == 200
            else f"(GET /api/v1/fleet answers {fleet_status}: not in this version yet)"
        )
        say(f"{node.name} (pid {node.pid})")
        say(f"  status page  {node.url}/")
        say(f"  metrics      {node.url}/metrics")
        say(f"  readyz       {node.url}/readyz")
        say(f"  fleet        {fleet}")
        say(f"  log          {node.log_path}")


def shards_held(nodes: Sequence[Node]) -> str:
    """'node-1 22, node-2 21, ...' from each running node's /metrics ('?' if unreadable)."""
    parts = []
    for node in nodes:
        if node.exited() is not None:
            continue
        status, body = node.get("/metrics")
        found = _SHARDS_HELD.search(body) if status == 200 else None
        parts.append(f"{node.name} {float(found.group(1)):g}" if found else f"{node.name} ?")
    return ", ".join(parts)


def watch(nodes: Sequence[Node]) -> None:
    """Until a signal: say when the shards move and when a node exits."""
    gone: set[str] = set()
    last = ""
    while True:
        for node in nodes:
            code = node.exited()
            if code is not None and node.name not in gone:
                gone.add(node.name)
                say(
                    f"{node.name} exited ({how_it_ended(code)}); the others take its shards "
                    f"once its leases expire (log: {node.log_path})"
                )
        held = shards_held(nodes)
        if held != last:
            say(f"shards held: {held}")
            last = held
        time.sleep(WATCH_EVERY)


def run(args: argparse.Namespace, work: Path) -> int:
    """The demo itself; every node is stopped and the cluster removed before it returns."""
    nodes: list[Node] = []
    listeners = Listeners()
    cluster_root: Path | None = None
    try:
        with running_cluster() as cluster:
            cluster_root = cluster.root
            try:
                say(
                    f"cluster      {cluster.root} (PostgreSQL {cluster.bin.parent.name}, "
                    f"Unix socket only)"
                )
                url = create_database(cluster)
                say(f"database     {DATABASE}, owned by role {ROLE} (not a superuser)")
                say(f"work dir     {work}")
                for number, port in OPEN_ON_PURPOSE:
                    listeners.open(ADDRESS.format(number), port)
                opened = ", ".join(f"{target_name(n)} port {p}" for n, p in OPEN_ON_PURPOSE)
                say(f"open on purpose (findings): {opened}")
                nodes = make_nodes(work, args.nodes, args.base_port, args.lease_ttl)
                start_nodes(nodes, url)
                say(f"starting {len(nodes)} nodes; waiting up to {READY_TIMEOUT:g}s for /readyz")
                try:
                    wait_ready(nodes, READY_TIMEOUT)
                except NodeFailed as exc:
                    say(f"fleet-demo: {exc.node} failed to start: {exc.reason}")
                    return 1
                show_pages(nodes)
                pids = " ".join(str(n.pid) for n in nodes)
                say(
                    f"fleet-demo: ready: {len(nodes)} nodes (pids {pids}). Ctrl-C stops them "
                    f"and the cluster. Try kill -9 on one and watch the shards move."
                )
                watch(nodes)
            finally:
                _hold_signals()
                if nodes:
                    codes = stop_nodes(nodes)
                    said = ", ".join(f"{name} {how_it_ended(code)}" for name, code in codes.items())
                    say(f"nodes stopped (exit status: {said})")
                listeners.close()
    finally:
        _hold_signals()
        if cluster_root is not None:
            state = "still there" if cluster_root.exists() else "removed"
            say(f"cluster stopped, {cluster_root} {state}")
    return 0  # pragma: no cover - watch() returns only by a signal


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_demo", description=__doc__)
    parser.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    parser.add_argument(
        "--base-port",
        type=int,
        default=9811,
        help="HTTP port of node-1, the next ones follow (default 9811; 0: any free ports)",
    )
    parser.add_argument(
        "--lease-ttl", default="15s", help="[fleet] lease_ttl of every node (default 15s)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.nodes <= 9:
        parser.error("--nodes: 1 to 9")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo until SIGINT or SIGTERM; 0 then, 1 when a node failed to start, 2 when
    this machine cannot run it (not root, no PostgreSQL server)."""
    args = parse_args(argv)
    reason = missing_requirements()
    if reason:
        print(
            f"fleet-demo: cannot start a throwaway PostgreSQL cluster: {reason}.\n"
            "It needs root (initdb and the server run as the postgres user, as in the tests) "
            "and the Debian postgresql packages (make sysdeps). Run it as root: "
            "sudo make fleet-demo",
            file=sys.stderr,
        )
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    remove_stale()
    work = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
    code = 1
    try:
        code = run(args, work)
    except Interrupted as exc:
        say(f"fleet-demo: {exc}: stopped")
        code = 0
    finally:
        _hold_signals()
        shutil.rmtree(work, ignore_errors=True)
        say(f"work dir {work} removed")
    return code


if __name__ == "__main__":
    sys.exit(main())
