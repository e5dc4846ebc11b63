"""One-shot scans sharded across worker processes: exact merged results, clean interruption."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exposuremon.scan import PortState, ScanOptions, ScanResult, ScanStats
from exposuremon.scan.oneshot import _merge, _tuned, auto_workers, scan_blocking, share_options
from tests.support.loopback import Listeners, exact_against_listeners, listening_ports


@pytest.fixture
def listeners() -> Iterator[Listeners]:
    """Listening sockets on loopback, closed after the test."""
    ls = Listeners()
    yield ls
    ls.close()


def test_two_workers_give_the_exact_full_result(listeners: Listeners) -> None:
    """A full scan split over two processes merges into the exact, complete result."""
    mine = {listeners.open() for _ in range(4)}
    before = listening_ports()
    seen: list[tuple[int, int]] = []
    result = scan_blocking(
        "127.0.0.1",
        range(1, 65536),
        ScanOptions(),
        workers=2,
        progress=lambda done, total: seen.append((done, total)),
    )
    after = listening_ports()
    assert mine <= before & after
    assert result.complete
    assert exact_against_listeners(set(result.open), before, after) == []
    assert result.counts["closed"] == 65535 - len(result.open)
    assert result.counts["unknown"] == 0
    assert result.stats.probes_sent >= 65535
    assert all(total == 65535 and 0 <= done <= total for done, total in seen)


def test_shares_keep_the_per_target_bounds() -> None:
    """Workers together never exceed the configured concurrency or rate for the target."""
    opts = ScanOptions(concurrency=1000, rate=300.0, initial_cwnd=64)
    share = share_options(opts, 3)
    assert share.concurrency * 3 <= 1000 + 2
    assert share.rate == pytest.approx(100.0)
    assert share_options(opts, 1) is opts
    assert auto_workers(100, ScanOptions()) == 1
    assert auto_workers(65535, ScanOptions(rate=100)) == 1
    assert auto_workers(65535, ScanOptions()) == min(len(os.sched_getaffinity(0)), 4)


def test_a_lost_worker_makes_the_scan_incomplete() -> None:
    """If a worker dies without a result, its ports stay unknown and the scan is incomplete."""
    table = bytearray(65536)
    table[80] = PortState.OPEN
    table[81] = PortState.CLOSED
    now = dt.datetime.now(dt.UTC)
    first = ScanResult("t", "127.0.0.1", (80, 81), now, now, True, bytes(table), ScanStats())
    other = bytearray(65536)
    other[82] = PortState.FILTERED
    merged = _merge(first, [(True, ScanStats(probes_sent=1), bytes(other)), None], (80, 81, 82, 83))
    assert not merged.complete
    assert merged.state(80) is PortState.OPEN
    assert merged.state(82) is PortState.FILTERED
    assert merged.state(83) is PortState.UNKNOWN
    assert merged.counts == {"open": 1, "closed": 1, "filtered": 1, "unknown": 1}
    complete = _merge(first, [(True, ScanStats(), bytes(other))], (80, 81, 82))
    assert complete.complete
    assert dataclasses.replace(complete, complete=False).complete is False


def test_shards_learned_rates_add_up_and_the_first_look_is_left_out() -> None:
    """Shards share one target's limit: their learned rates add up, the solo first look's not."""
    now = dt.datetime.now(dt.UTC)
    table = bytes(65536)
    parent = ScanStats(learned_rate=12.0, rate_limited=True, drops=3)
    first = ScanResult("t", "198.18.0.2", (80,), now, now, True, table, parent)
    look = ScanStats(learned_rate=25.0, drops=1)  # ran alone before the shards
    worker = ScanStats(learned_rate=13.0, drops=2)
    merged = _merge(first, [(True, look, table), (True, worker, table)], (80,))
    assert merged.stats.learned_rate == pytest.approx(25.0)
    assert merged.stats.rate_limited
    assert merged.stats.drops == 6
    unpaced = _merge(dataclasses.replace(first, stats=ScanStats()), [], (80,))
    assert unpaced.stats.learned_rate is None
    assert not unpaced.stats.rate_limited
    assert share_options(ScanOptions(start_rate=30.0), 2).start_rate == pytest.approx(15.0)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def test_sigint_stops_all_workers_and_reports_partial_result(listeners: Listeners) -> None:
    """Ctrl-C during a sharded scan: exit 130, JSON marked incomplete, no worker left behind."""
    port = listeners.open()
    exe = str(Path(sys.executable).with_name("exposuremon"))
    proc = subprocess.Popen(
        [
            exe,
            "scan",
            "127.0.0.1",
            "-p",
            "1-65535",
            "--rate",
            "3000",
            "--workers",
            "2",
            "--json",
            "--expect-open",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    workers: list[int] = []
    while not workers and time.monotonic() < deadline:
        workers = _children(proc.pid)
        time.sleep(0.01)
    assert workers, "the worker process never started"
    assert listeners.wait_connection(port), "the scan never reached the hinted port"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    doc = json.loads(out)
    assert doc["complete"] is False
    assert doc["counts"]["unknown"] > 0
    assert port in doc["open"]  # the hint went first
    assert sum(doc["counts"].values()) == 65535
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_workers_start_from_what_the_first_ports_taught() -> None:
    """After the first look, workers get its timeout and the ports that answered, first."""
    table = bytearray(65536)
    table[80], table[443], table[22] = PortState.CLOSED, PortState.OPEN, PortState.FILTERED
    now = dt.datetime.now(dt.UTC)
    stats = ScanStats(srtt=0.02, timeout=0.15)
    first = ScanResult("t", "127.0.0.1", (80, 443, 22), now, now, True, bytes(table), stats)
    options, hints = _tuned(ScanOptions(), first, (8443,))
    assert options.timeout_initial == 0.15
    assert hints == (80, 443, 8443)
    silent = dataclasses.replace(first, stats=ScanStats())  # nothing answered: keep defaults
    options, _ = _tuned(ScanOptions(), silent, ())
    assert options.timeout_initial == ScanOptions().timeout_initial
