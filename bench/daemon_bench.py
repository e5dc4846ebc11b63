"""Daemon benchmark: 1000 targets on loopback, plus time-to-detect of reopened ports.

Runs `exposuremon run` as a child with 1000 targets spread over 127.0.0.0/8 (listeners on a
few of them) and one test-bed router, for two phases:

1. the default schedule compressed 10x (sentinel 3 s, quick 90 s, full 2.4 h) for
   `--seconds` (default 300): peak RSS, CPU share, and time from a port reopening on the
   router to `finding_reopened` in the store, over at least 20 reopen events;
2. the default schedule (30 s / 15 min / 24 h) for `--seconds`: peak RSS and CPU share, the
   figures the goals (≤ 150 MB, ≤ 25% of one core) speak of;
3. 100 targets at 10x: as many scans per second as 1000 on the default schedule, so the
   time-to-detect measured there is the one of that load, with sentinel = 3 s.

Results go to bench/results/daemon.json. Needs root (the test bed) and a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import machine, write_results
from exposuremon.model import EventType, FindingState
from exposuremon.store import Store
from tests.support.loopback import Listeners
from tests.support.testbed import make_router, missing_requirements

EXE = str(Path(sys.executable).with_name("exposuremon"))
N_TARGETS = 1000
WITH_LISTENER = 10  # targets with an expected open port
WITH_FINDING = 5  # targets with an unexpected open port too
REOPEN_PORT = 8081
CLK_TCK = os.sysconf("SC_CLK_TCK")


def address(i: int) -> str:
    """Target i's loopback address (127.1.0.1 ...), never 127.0.0.1 itself."""
    return f"127.1.{i // 250}.{i % 250 + 1}"


def write_config(
    directory: Path, router_addr: str, schedule: dict[str, str], n_targets: int = N_TARGETS
) -> Path:
    """The benchmark's config: `n_targets` loopback targets and the router."""
    lines = [
        "[daemon]",
        f'state_dir = "{directory / "state"}"',
        'log_format = "json"',
        'log_level = "info"',
        "[http]",
        'listen = "127.0.0.1:0"',
        "[schedule]",
        *(f'{k} = "{v}"' for k, v in schedule.items()),
        "jitter = 0.1",
        "[[targets]]",
        'name = "router"',
        f'address = "{router_addr}"',
        'expected_open = "443"',
    ]
    for i in range(n_targets):
        lines += ["[[targets]]", f'name = "t{i:04d}"', f'address = "{address(i)}"']
        if i < WITH_LISTENER:
            lines.append('expected_open = "8443"')
    path = directory / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def proc_usage(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS MB) of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    hwm = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return cpu, hwm


async def reopen_times(state_dir: Path, router: Any, rounds: int, deadline: float) -> list[float]:
    """Open → detect → close → resolve, `rounds` times: seconds from reopening to the event."""
    store = await Store.open(state_dir)
    times: list[float] = []
    try:
        seen = 0
        end = time.monotonic() + deadline
        for _ in range(rounds):
            if time.monotonic() > end:
                break
            router.set_policy("reject", {443: "accept", REOPEN_PORT: "accept"})
            opened = time.monotonic()
            while time.monotonic() < end:
                events, _ = await store.events(
                    target="router", type=EventType.FINDING_REOPENED, limit=1000
                )
                opened_events, _ = await store.events(
                    target="router", type=EventType.FINDING_OPENED, limit=1000
                )
                if len(events) + len(opened_events) > seen:
                    seen = len(events) + len(opened_events)
                    if events:  # the very first one is an opening, not a reopening
                        times.append(time.monotonic() - opened)
                    break
                await asyncio.sleep(0.1)
            router.set_policy("reject", {443: "accept"})
            while time.monotonic() < end:
                rows, _ = await store.findings(target="router", state=FindingState.OPEN)
                if not rows:
                    break
                await asyncio.sleep(0.2)
    finally:
        await store.close()
    return times


def _wait_started(log: Path, proc: subprocess.Popen[bytes], deadline: float) -> None:
    end = time.monotonic() + deadline
    while b'"started"' not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > end:
            raise RuntimeError(f"daemon did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)


def phase(
    name: str,
    schedule: dict[str, str],
    seconds: float,
    rounds: int,
    n_targets: int = N_TARGETS,
) -> dict[str, Any]:
    """Run the daemon for one schedule; measure it and (optionally) reopen detection."""
    listeners = Listeners()
    with tempfile.TemporaryDirectory(prefix="emdaemon-") as tmp, make_router() as router:
        directory = Path(tmp)
        router.listen(443)
        router.listen(REOPEN_PORT)
        router.set_policy("reject", {443: "accept"})
        for i in range(WITH_LISTENER):
            listeners.open(address(i), 8443)
        for i in range(WITH_FINDING):
            listeners.open(address(i), 2222)
        config = write_config(directory, router.addr, schedule, n_targets)
        log = (directory / "daemon.log").open("wb")
        proc = subprocess.Popen([EXE, "run", "-c", str(config)], stdout=log, stderr=log)
        try:
            _wait_started(directory / "daemon.log", proc, 60)
            cpu0, _ = proc_usage(proc.pid)
            t0 = time.monotonic()
            times: list[float] = []
            if rounds:
                times = asyncio.run(reopen_times(directory / "state", router, rounds, seconds))
            remaining = seconds - (time.monotonic() - t0)
            if remaining > 0:
                time.sleep(remaining)
            cpu1, peak = proc_usage(proc.pid)
            elapsed = time.monotonic() - t0
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()
            listeners.close()
    result: dict[str, Any] = {
        "schedule": schedule,
        "targets": n_targets + 1,
        "seconds": round(elapsed, 1),
        "cpu_share_of_one_core": round((cpu1 - cpu0) / elapsed, 3),
        "peak_rss_mb": round(peak, 1),
        "exit_code": proc.returncode,
    }
    if rounds:
        ordered = sorted(times)
        result["reopen_events"] = len(times)
        result["time_to_detect_s"] = {
            "median": round(statistics.median(ordered), 2) if ordered else None,
            "p95": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 2) if ordered else None,
            "all": [round(t, 2) for t in times],
        }
    print(f"{name}: {result}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    """Both phases; writes bench/results/daemon.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args(argv)
    reason = missing_requirements()
    if reason:
        print(f"daemon benchmark needs the namespace test bed: {reason}", file=sys.stderr)
        return 2
    compressed = {"sentinel": "3s", "quick": "90s", "full": "8640s"}
    default = {"sentinel": "30s", "quick": "15m", "full": "24h"}
    results = {
        "compressed_10x": phase("compressed 10x", compressed, args.seconds, args.rounds),
        "default": phase("default schedule", default, args.seconds, 0),
        # 100 targets at 10x make as many scans per second as 1000 on the default schedule:
        # time-to-detect at that load, with ten times the reopen events per minute.
        "load_of_1000_default": phase(
            "100 targets at 10x", compressed, args.seconds, args.rounds, n_targets=100
        ),
    }
    goals = {
        "peak_rss_mb": "<= 150 (default schedule)",
        "cpu_share_of_one_core": "<= 0.25 (default schedule)",
        "time_to_detect_p95_s": "<= sentinel interval + 5 s",
    }
    path = write_results("daemon", {"machine": machine(), "goals": goals, "phases": results})
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
