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
a killed test or demo leaves no node behind. Start nodes from the main thread: the signal
is sent when the thread that started the node ends.

The failure-case tests (tests/fleet/test_failover.py, bench/fleet_bench.py) also kill a node
with SIGKILL (`sigkill`), pause it (`pause`/`resume`), restart it (`start`, with the store URL
it was made with) and read it from async code (`aget`, `readyz`, `metric`); the vantage test
bed (tests/support/vantages.py) runs each node in a network namespace of its own (`netns`).
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
from typing import Any

import aiohttp

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
        store_url: str | None = None,
    ) -> None:
        super().__init__(config_path, log_path)
        self.name = name
        self.port = port
        self.host = host
        self.netns = netns
        self.store_url = store_url  # what `start` launches it with
        self.paused = False

    @property
    def url(self) -> str:
        """The node's base URL (status page at `/`)."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        """Its process id (after start)."""
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    @property
    def running(self) -> bool:
        """Started, not exited, and not stopped by SIGSTOP."""
        return self.proc is not None and self.proc.poll() is None and not self.paused

    def start(self) -> None:
        """Launch it (again) with the store URL it was made with; its log is appended to."""
        if self.store_url is None:
            raise ValueError(f"{self.name}: no store URL (use start_with)")
        self.start_with(self.store_url)

    def start_with(self, store_url: str, env: Mapping[str, str] | None = None) -> None:
        """Launch `exposuremon run` with the store URL in URL_ENV (never on its command line)
        and `env` added to its environment."""
        self.store_url = store_url
        self.paused = False
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

    def sigkill(self) -> None:
        """kill -9: no release, no flush; its leases lapse after lease_ttl."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def pause(self) -> None:
        """SIGSTOP."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM (SIGCONT first if paused), SIGKILL if it does not end in time; exit code
        (None: never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if self.paused:
                self.resume()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        return self.proc.returncode

    def log_entries(self, event: str | None = None) -> list[dict[str, Any]]:
        """Its JSON log lines (of one `event` text, or all)."""
        entries = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and event in (None, entry.get("event")):
                    entries.append(entry)
        return entries

    def tail(self, chars: int = 3000) -> str:
        """The end of its log, for failure messages."""
        return self.log()[-chars:]

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

    def vantage_health(self) -> tuple[str, bool] | None:
        """Not judged here."""
        return None

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

    async def aget(self, session: aiohttp.ClientSession, path: str) -> tuple[int, str]:
        """GET `path` from async code: (status, body); (0, error) when it does not answer
        within HTTP_TIMEOUT."""
        timeout = aiohttp.ClientTimeout(HTTP_TIMEOUT)
        try:
            async with session.get(self.url + path, timeout=timeout) as resp:
                return resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 0, repr(exc)

    async def readyz(self, session: aiohttp.ClientSession) -> tuple[int, str]:
        """/readyz: (status, reason or "")."""
        status, body = await self.aget(session, "/readyz")
        reason = ""
        with contextlib.suppress(ValueError, AttributeError):
            reason = json.loads(body).get("reason", "")
        return status, reason

    async def metric(self, session: aiohttp.ClientSession, name: str) -> float | None:
        """The value of an unlabelled sample `name` in its /metrics; None if absent."""
        status, text = await self.aget(session, "/metrics")
        if status != 200:
            return None
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

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
