"""`make fleet-demo` (bench/fleet_demo.py), run as an operator runs it: a subprocess whose
printed URLs are the only way in. Three nodes come up, each ready, each scanning its own share
of the targets; SIGINT leaves nothing behind (nodes, server, directories). A node that cannot
start is named, with why, and everything is removed as well."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import fleet_demo
from exposuremon.config.models import load_config
from tests.support import postgres
from tests.support.fleet_nodes import URL_ENV, metrics_targets

ROOT = Path(__file__).resolve().parents[2]
NAMES = {fleet_demo.target_name(n) for n in range(1, fleet_demo.TARGETS + 1)}


class DemoProcess:
    """`python -m bench.fleet_demo ...` with its output collected line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.fleet_demo", *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:  # closed at the end of the output (no ResourceWarning)
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        """Everything it printed so far."""
        return "\n".join(self.lines)

    def wait_line(self, pattern: str, deadline: float) -> re.Match[str]:
        """The first printed line matching `pattern`; fails when the demo exits first."""
        regex = re.compile(pattern)
        end = time.monotonic() + deadline
        while True:
            for line in list(self.lines):
                if found := regex.search(line):
                    return found
            if self.proc.poll() is not None:
                self._reader.join(timeout=5)
                if any(regex.search(line) for line in self.lines):
                    continue
                raise AssertionError(
                    f"demo exited {self.proc.returncode} before {pattern!r}:\n{self.output()}"
                )
            if time.monotonic() > end:
                raise AssertionError(f"no {pattern!r} within {deadline}s:\n{self.output()}")
            time.sleep(0.1)

    def field(self, name: str) -> Path:
        """A path the demo printed as `<name>  <path>` (cluster, work dir)."""
        return Path(self.wait_line(rf"^{name}\s+(/\S+)", 5).group(1))

    def stop(self) -> None:
        """SIGKILL if still running (a failed test); its nodes die with it."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def demo_requirements() -> None:
    reason = postgres.missing_requirements()
    if reason:
        pytest.skip(f"make fleet-demo needs a throwaway PostgreSQL cluster: {reason}")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def taken_port_above_a_free_one() -> socket.socket:
    """A socket bound to a loopback port whose lower neighbour is free (for node-1)."""
    for _ in range(50):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", sock.getsockname()[1] - 1))
            except OSError:
                sock.close()
                continue
        return sock
    raise AssertionError("no loopback port with a free lower neighbour")


def gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def wait_gone(pids: list[int], deadline: float) -> list[int]:
    """The pids still alive after `deadline` seconds (empty: all gone)."""
    end = time.monotonic() + deadline
    while (alive := [p for p in pids if not gone(p)]) and time.monotonic() < end:
        time.sleep(0.1)
    return alive


@pytest.fixture
def demo() -> Iterator[list[DemoProcess]]:
    started: list[DemoProcess] = []
    yield started
    for process in started:
        process.stop()


# -- fast checks, no root -------------------------------------------------------------------


def test_demo_config_is_the_example_with_the_nodes_own_keys(tmp_path: Path) -> None:
    """Each node's config is config.example.toml with its node name, port and state dir, the
    store named by the environment, and the demo's loopback targets; it loads."""
    text = fleet_demo.demo_config(
        fleet_demo.EXAMPLE.read_text(),
        node="node-2",
        port=9812,
        state_dir=tmp_path / "state",
        lease_ttl="3s",
        targets=fleet_demo.TARGETS,
    )
    path = tmp_path / "config.toml"
    path.write_text(text)
    config = load_config(path)
    assert config.fleet.node_name == "node-2"
    assert config.store.url_env == URL_ENV
    assert config.http.port == 9812
    assert {t.name for t in config.targets} == NAMES
    assert all(t.address.startswith("127.") for t in config.targets)
    raw = tomllib.loads(text)
    assert raw["fleet"]["lease_ttl"] == "3s"
    assert raw["daemon"]["state_dir"] == str(tmp_path / "state")


def test_demo_without_root_says_what_it_needs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(fleet_demo, "missing_requirements", lambda: "not running as root (x)")
    assert fleet_demo.main([]) == 2
    err = capsys.readouterr().err
    assert "not running as root" in err
    assert "sudo make fleet-demo" in err


# -- the demo itself (root) -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.usefixtures("demo_requirements")
def test_three_nodes_split_the_targets_and_sigint_removes_everything(
    demo: list[DemoProcess],
) -> None:
    run = DemoProcess("--base-port", "0", "--lease-ttl", "3s")
    demo.append(run)
    run.wait_line(r"^fleet-demo: ready", 120)
    cluster, work = run.field("cluster"), run.field("work dir")
    pids = [int(m) for m in re.findall(r"^node-\d \(pid (\d+)\)$", run.output(), re.M)]
    urls = re.findall(r"^  status page  (http://127\.0\.0\.1:\d+)/$", run.output(), re.M)
    assert len(pids) == len(urls) == 3, run.output()
    postmaster = int((cluster / "data" / "postmaster.pid").read_text().split()[0])

    for url in urls:
        assert get(f"{url}/readyz")[0] == 200, url

    def split() -> list[set[str]] | None:
        shown = [metrics_targets(get(f"{url}/metrics")[1]) for url in urls]
        if not all(shown) or set().union(*shown) != NAMES:
            return None
        if sum(len(s) for s in shown) != len(NAMES):  # one target on two nodes
            return None
        return shown

    end = time.monotonic() + 60
    while (shown := split()) is None:
        assert time.monotonic() < end, f"the targets never split:\n{run.output()}"
        time.sleep(0.5)
    assert all(len(s) < len(NAMES) for s in shown)

    run.proc.send_signal(signal.SIGINT)
    assert run.proc.wait(timeout=60) == 0, run.output()
    run._reader.join(timeout=5)
    assert not wait_gone([*pids, postmaster], 10), run.output()
    assert not cluster.exists(), run.output()
    assert not work.exists(), run.output()
    assert "nodes stopped (exit status: node-1 0, node-2 0, node-3 0)" in run.output()
    assert f"cluster stopped, {cluster} removed" in run.output()


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.usefixtures("demo_requirements")
def test_a_node_that_cannot_start_is_named_and_everything_is_removed(
    demo: list[DemoProcess],
) -> None:
    """node-2's port is taken: the demo says so, stops the others and removes the cluster."""
    with taken_port_above_a_free_one() as taken:
        port = taken.getsockname()[1]
        taken.listen(1)
        run = DemoProcess("--base-port", str(port - 1), "--lease-ttl", "3s")
        demo.append(run)
        assert run.proc.wait(timeout=150) == 1, run.output()
    run._reader.join(timeout=5)
    out = run.output()
    assert "fleet-demo: node-2 failed to start: exited with status" in out, out
    assert "address already in use" in out.lower(), out
    cluster, work = run.field("cluster"), run.field("work dir")
    assert not cluster.exists()
    assert not work.exists()
    stopped = r"^nodes stopped \(exit status: node-1 \d+, node-2 \d+, node-3 \d+\)$"
    assert re.search(stopped, out, re.M), out
