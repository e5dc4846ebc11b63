"""The nodes of one fleet as processes: `exposuremon run` per node, as systemd would run them.

Each node has its own config file (its `[fleet] node`, HTTP port and state dir); all of them
name the same PostgreSQL database through `[store] url_env`, whose value each process gets
in its environment. Used by the tests that run a fleet and by `make fleet-demo`
(bench/fleet_demo.py).

    nodes = [Node("node-1", config_path, port, log_path), ...]
    try:
        start_nodes(nodes, url)
        wait_ready(nodes, deadline=60)  # NodeFailed names the node and why
        ...
    finally:
        stop_nodes(nodes)

A node is started in a session of its own (a Ctrl-C on the terminal reaches only whoever
started it, who then stops the nodes in order) and dies with its parent (PR_SET_PDEATHSIG):
a killed test or demo leaves no node behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from tests.support.daemon import Daemon

URL_ENV = "EXPOSUREMON_STORE_URL"  # the variable the nodes' `[store] url_env` names
STOP_TIMEOUT = 15.0  # seconds a node gets to stop on SIGTERM before SIGKILL
HTTP_TIMEOUT = 5.0
_PR_SET_PDEATHSIG = 1
_TARGET_LABEL = re.compile(r'\btarget="((?:[^"\\]|\\.)*)"')


class NodeFailed(RuntimeError):
    """A node that did not come up: which one, and why (its exit code and log, or /readyz)."""

    def __init__(self, node: str, reason: str) -> None:
        super().__init__(f"{node}: {reason}")
        self.node = node
        self.reason = reason


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Node(Daemon):
    """One node: its name, config, HTTP address and log; a `Daemon` with a shared store URL.

    `netns`: run it in that network namespace (`ip netns exec`, tests/support/vantages.py);
    its HTTP server then listens on `host`, an address of the namespace the tests reach.
    """

    def __init__(
        self,
        name: str,
        config_path: Path,
        port: int,
        log_path: Path,
        *,
        host: str = "127.0.0.1",
        netns: str | None = None,
    ) -> None:
        super().__init__(config_path, log_path)
        self.name = name
        self.port = port
        self.host = host
        self.netns = netns

    @property
    def url(self) -> str:
        """The node's base URL (status page at `/`)."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process id once started."""
        return None if self.proc is None else self.proc.pid

    def start_with(self, store_url: str, env: Mapping[str, str] | None = None) -> None:
        """Launch `exposuremon run` with the store URL in URL_ENV (never on its command line)
        and `env` added to its environment."""
        exe = str(Path(sys.executable).with_name("exposuremon"))
        argv = [exe, "run", "-c", str(self.config_path)]
        if self.netns is not None:
            # `ip netns exec` execs the daemon itself: the pid, signals and PDEATHSIG are its.
            argv = ["ip", "netns", "exec", self.netns, *argv]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", URL_ENV: store_url, **(env or {})}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # the parents (a test, the demo) run no threads
            )

    def get(self, path: str) -> tuple[int, str]:
        """GET a path of the node: (status, body); (0, why) when it does not answer."""
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=HTTP_TIMEOUT) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read().decode(errors="replace")
        except OSError as exc:
            return 0, str(exc.reason if isinstance(exc, urllib.error.URLError) else exc)

    def not_ready(self) -> str | None:
        """None when /readyz answers 200, else why not (its reason, or the connection error)."""
        status, body = self.get("/readyz")
        if status == 200:
            return None
        if status == 0:
            return f"/readyz does not answer ({body})"
        with contextlib.suppress(ValueError, AttributeError):
            return f"/readyz {status}: {json.loads(body).get('reason')}"
        return f"/readyz {status}"

    def exited(self) -> int | None:
        """The exit code once the process has ended, else None."""
        return None if self.proc is None else self.proc.poll()

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of its log, for messages about it."""
        return "\n".join(self.log().rstrip().splitlines()[-lines:])

    def targets(self, metric: str = "exposuremon_schedule_interval_seconds") -> set[str]:
        """The targets a per-target state series of its /metrics shows now (its own)."""
        status, body = self.get("/metrics")
        if status != 200:
            raise NodeFailed(self.name, f"/metrics answered {status}: {body[:200]}")
        return metrics_targets(body, metric)


def metrics_targets(text: str, metric: str = "exposuremon_schedule_interval_seconds") -> set[str]:
    """The `target` label values of `metric`'s samples in a /metrics text."""
    return {
        m.group(1)
        for line in text.splitlines()
        if line.startswith(metric + "{")
        for m in [_TARGET_LABEL.search(line)]
        if m is not None
    }


def start_nodes(nodes: Iterable[Node], store_url: str) -> None:
    """Launch every node (they start in parallel; see `wait_ready`)."""
    for node in nodes:
        node.start_with(store_url)


def wait_ready(nodes: Sequence[Node], deadline: float, poll: float = 0.2) -> None:
    """Block until every node's /readyz answers 200; NodeFailed for the first node that
    exited (its exit code and log tail) or is not ready when `deadline` seconds have passed."""
    end = time.monotonic() + deadline
    waiting = list(nodes)
    while waiting:
        for node in list(waiting):
            code = node.exited()
            if code is not None:
                raise NodeFailed(node.name, f"exited with status {code}:\n{node.log_tail()}")
            if node.not_ready() is None:
                waiting.remove(node)
        if not waiting:
            return
        if time.monotonic() > end:
            node = waiting[0]
            why = node.not_ready() or "ready just now"
            raise NodeFailed(
                node.name, f"not ready within {deadline:g}s ({why}):\n{node.log_tail()}"
            )
        time.sleep(poll)


def stop_nodes(nodes: Iterable[Node], timeout: float = STOP_TIMEOUT) -> dict[str, int | None]:
    """SIGTERM every running node at once, wait for each (SIGKILL after `timeout`); the exit
    code of each started node by name (None: never started). Safe to call twice."""
    started = [n for n in nodes if n.proc is not None]
    for node in started:
        if node.exited() is None:
            with contextlib.suppress(ProcessLookupError):
                node.signal(signal.SIGTERM)
    end = time.monotonic() + timeout
    codes: dict[str, int | None] = {}
    for node in started:
        assert node.proc is not None
        try:
            codes[node.name] = node.proc.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            node.proc.kill()
            codes[node.name] = node.proc.wait(timeout=10)
    return codes
