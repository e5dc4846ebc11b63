"""Daemon under SYN-flood protection: issue 12's two daemon goals, measured.

Runs `exposuremon run` as a child (as bench/daemon_bench.py does) against one test-bed router
with 443 open and expected (TLS) and the incident's 19 bug ports 80-89 and 440-449 open (HTTP).
Once the daemon has a finding open for each of the 19, the router's firewall gets a token
bucket on new connections (`Router.rate_limit`, over-limit SYNs dropped silently) and nothing
else changes, so every event raised from then on is a false one. Two phases:

1. `burst5`: 20/s burst 5, sentinel every 2 s, quick every 20 s (the default quick port set:
   top 1000 + hot ports), for 90 s. Goal: 0 finding_resolved, 0 finding_reopened,
   0 port_closed, 0 reboot_suspected.
2. `openwrt`: OpenWrt's default 25/s burst 50, sentinel 30 s, quick 3 min (default quick set),
   for 10 minutes. Goal: no event of any kind.

The schedule's jitter is the daemon's default, 0.1 (`--jitter 0` lines every 6th sentinel up
with the quick scan). For each phase: every event raised after the limit went on (and any the
daemon raised while stopping), by type and by the kind of scan that raised it (from the
daemon's debug log), the scans recorded per kind with their durations, the learned rate
(`GET /api/v1/targets/router` → `accepted_connection_rate`, and the metric
`exposuremon_target_accepted_connection_rate`), the daemon's CPU share and peak RSS, and the
load average. Written to bench/results/ratelimit.json. Needs root (the test bed), ~13 minutes.

    python -m bench.ratelimit_bench                      # both phases
    python -m bench.ratelimit_bench --only burst5 --log-dir /tmp/rl   # keep the debug log
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import RESULTS, machine, write_results
from bench.daemon_bench import proc_usage
from exposuremon.model import Event, FindingState
from exposuremon.store import Store
from tests.support.testbed import Router, make_router, missing_requirements

EXE = str(Path(sys.executable).with_name("exposuremon"))
TARGET = "router"
EXPECTED = 443
BUG_PORTS = (*range(80, 90), *range(440, 443), *range(444, 450))  # 19 ports; 443 is the forward
SETTLE_DEADLINE = 180.0  # for the 19 findings and the first scan of every kind
SAMPLE_EVERY = 10.0  # seconds between samples of the learned rate, load, CPU
STOP_DEADLINE = 30.0
METRIC = "exposuremon_target_accepted_connection_rate"


@dataclasses.dataclass(frozen=True)
class Phase:
    """One router limit, one schedule, and what must not happen under them."""

    rate: int
    burst: int
    sentinel: str
    quick: str
    seconds: float
    forbidden: tuple[str, ...] | None  # event types the goal forbids; None: every type
    full: str = "24h"  # runs once at start, before the limit; not again within the phase
    jitter: float = 0.1  # the daemon's default; 0 starts every 6th sentinel with the quick scan

    @property
    def goal(self) -> str:
        """The goal as the issue states it."""
        if self.forbidden is None:
            return "0 events of any kind"
        return ", ".join(f"0 {t}" for t in self.forbidden)


PHASES: dict[str, Phase] = {
    "burst5": Phase(
        20,
        5,
        "2s",
        "20s",
        90,
        ("finding_resolved", "finding_reopened", "port_closed", "reboot_suspected"),
    ),
    "openwrt": Phase(25, 50, "30s", "3m", 600, None),
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now (for the daemon's HTTP listener)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(directory: Path, router_addr: str, http_port: int, phase: Phase) -> Path:
    """One target, the router; debug JSON log; the phase's schedule and jitter."""
    lines = [
        "[daemon]",
        f'state_dir = "{directory / "state"}"',
        'log_format = "json"',
        'log_level = "debug"',
        "[http]",
        f'listen = "127.0.0.1:{http_port}"',
        "[schedule]",
        f'sentinel = "{phase.sentinel}"',
        f'quick = "{phase.quick}"',
        f'full = "{phase.full}"',
        f"jitter = {phase.jitter}",
        "[[targets]]",
        f'name = "{TARGET}"',
        f'address = "{router_addr}"',
        f'expected_open = "{EXPECTED}"',
    ]
    path = directory / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def log_records(path: Path, offset: int = 0) -> list[dict[str, Any]]:
    """The daemon's JSON log lines from byte `offset` on (non-JSON lines skipped)."""
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    records = []
    for line in data.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                records.append(record)
    return records


SKIPPED = re.compile(r'job "[^/"]+/(\w+) \(trigger.*skipped: maximum number of running')


def scans_by_kind(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Scans recorded per kind (complete / not), failed, and runs skipped because the previous
    scan of that kind was still running (the scheduler runs one at a time), from the log.
    """
    done: collections.Counter[str] = collections.Counter()
    incomplete: collections.Counter[str] = collections.Counter()
    failed: collections.Counter[str] = collections.Counter()
    skipped: collections.Counter[str] = collections.Counter()
    durations: dict[str, list[float]] = collections.defaultdict(list)
    for r in records:
        match = SKIPPED.search(str(r.get("event", "")))
        if match:
            skipped[match.group(1)] += 1
        elif r.get("event") == "scan recorded":
            done[r["kind"]] += 1
            if not r.get("complete", True):
                incomplete[r["kind"]] += 1
            durations[r["kind"]].append(float(r.get("duration_s", 0.0)))
        elif r.get("event") == "scan failed":
            failed[str(r.get("kind"))] += 1
    return {
        kind: {
            "recorded": done[kind],
            "incomplete": incomplete[kind],
            "failed": failed[kind],
            "skipped_still_running": skipped[kind],
            "duration_s_max": round(max(durations[kind]), 1) if durations[kind] else None,
        }
        for kind in sorted(set(done) | set(failed) | set(skipped))
    }


def scan_timeline(records: list[dict[str, Any]], t0_wall: float) -> list[dict[str, Any]]:
    """Each scan recorded: its kind, when it ended (s after the limit went on), how long it
    took, whether it completed and how many ports it saw open.
    """
    out = []
    for r in records:
        if r.get("event") == "scan recorded":
            ended = dt.datetime.fromisoformat(str(r["timestamp"]).replace("Z", "+00:00"))
            out.append(
                {
                    "kind": r.get("kind"),
                    "ended_s": round(ended.timestamp() - t0_wall, 1),
                    "duration_s": r.get("duration_s"),
                    "complete": r.get("complete"),
                    "open": r.get("open"),
                }
            )
    return out


def events_by_scan_kind(
    records: list[dict[str, Any]], types: set[str]
) -> dict[str, dict[str, int]]:
    """Event lines by the kind of the scan that raised them.

    The daemon logs "scan recorded" (debug) and then each of the scan's events in one go, so
    an event line belongs to the last "scan recorded" line before it.
    """
    out: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    kind = "?"
    for r in records:
        if r.get("event") == "scan recorded":
            kind = str(r.get("kind"))
        elif r.get("event") in types:
            out[kind][str(r["event"])] += 1
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


async def wait_for(check: Any, deadline: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    """Poll an async condition (every 0.2 s) until true; fail after `deadline` s or on exit."""
    end = time.monotonic() + deadline
    while not await check():
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited {proc.returncode} while waiting for {what}")
        if time.monotonic() > end:
            raise RuntimeError(f"not within {deadline:.0f} s: {what}")
        await asyncio.sleep(0.2)


async def events_since(store: Store, last_id: int) -> list[Event]:
    """The router's events with an id above `last_id`, oldest first (bounded paging)."""
    events: list[Event] = []
    cursor = None
    for _ in range(100):
        page, cursor = await store.events(target=TARGET, limit=500, cursor=cursor)
        events.extend(e for e in page if (e.id or 0) > last_id)
        if cursor is None or (page and (page[-1].id or 0) <= last_id):
            break
    return sorted(events, key=lambda e: e.id or 0)


async def stored_events(state: Path, last_id: int) -> list[Event]:
    """What the store holds after the daemon stopped: events with an id above `last_id`."""
    store = await Store.open(state)
    try:
        return await events_since(store, last_id)
    finally:
        await store.close()


async def learned_rate(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    """The learned rate as the API and the metric show it now."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with session.get(f"{base}/api/v1/targets/{TARGET}", timeout=timeout) as response:
        body = await response.json()
    async with session.get(f"{base}/metrics", timeout=timeout) as response:
        text = await response.text()
    match = re.search(rf'^{METRIC}\{{target="{TARGET}"\}} (\S+)$', text, re.M)
    scans = {
        (m["kind"], m["complete"]): float(m["n"])
        for m in re.finditer(
            r'^exposuremon_scans_total\{(?=.*complete="(?P<complete>\w+)")(?=.*kind="(?P<kind>\w+)")'
            r"[^}]*\} (?P<n>\S+)$",
            text,
            re.M,
        )
    }
    return {
        "api": body.get("accepted_connection_rate"),
        "metric": float(match.group(1)) if match else None,
        "scans_total": {f"{k}/complete={c}": int(n) for (k, c), n in sorted(scans.items())},
    }


async def measure_phase(
    phase: Phase, router: Router, proc: subprocess.Popen[bytes], log: Path, state: Path, base: str
) -> dict[str, Any]:
    """Settle, put the limit on, watch for `phase.seconds`; what happened after the limit."""

    async def started() -> bool:
        return b'"started"' in await asyncio.to_thread(log.read_bytes)

    await wait_for(started, 60, "daemon start", proc)
    store = await Store.open(state)
    try:

        async def settled() -> bool:
            rows, _ = await store.findings(target=TARGET, state=FindingState.OPEN, limit=100)
            kinds = {
                r.get("kind")
                for r in await asyncio.to_thread(log_records, log)
                if r.get("event") == "scan recorded"
            }
            return len(rows) == len(BUG_PORTS) and {"sentinel", "quick", "full"} <= kinds

        await wait_for(settled, SETTLE_DEADLINE, "19 findings and a scan of each kind", proc)
        last_id = max((e.id or 0 for e in await events_since(store, 0)), default=0)
        offset = await asyncio.to_thread(os.path.getsize, log)
        cpu0, _ = proc_usage(proc.pid)
        load0 = os.getloadavg()
        await asyncio.to_thread(router.rate_limit, phase.rate, phase.burst)
        t0, t0_wall = time.monotonic(), time.time()
        samples: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as session:
            while True:
                elapsed = time.monotonic() - t0
                rate = await learned_rate(session, base)
                samples.append(
                    {
                        "t_s": round(elapsed, 1),
                        "rate_api": rate["api"],
                        "rate_metric": rate["metric"],
                        "load1": round(os.getloadavg()[0], 2),
                    }
                )
                if elapsed >= phase.seconds or proc.poll() is not None:
                    break
                await asyncio.sleep(min(SAMPLE_EVERY, phase.seconds - elapsed))
            final_rate = await learned_rate(session, base)
        cpu1, peak = proc_usage(proc.pid)
        elapsed = time.monotonic() - t0
        load = os.getloadavg()
        after = await events_since(store, last_id)
        rows, _ = await store.findings(target=TARGET, state=FindingState.OPEN, limit=100)
    finally:
        await store.close()
    records = log_records(log, offset)
    by_type = dict(sorted(collections.Counter(e.type.value for e in after).items()))
    forbidden = phase.forbidden
    missed = {t: n for t, n in by_type.items() if forbidden is None or t in forbidden}
    return {
        "limit": {"rate_per_s": phase.rate, "burst": phase.burst},
        "schedule": {
            "sentinel": phase.sentinel,
            "quick": phase.quick,
            "full": phase.full,
            "jitter": phase.jitter,
        },
        "ports_quick": "default (top1000 + hot)",
        "seconds_after_limit": round(elapsed, 1),
        "goal": phase.goal,
        "goal_met": not missed,
        "events_after_limit": len(after),
        "events_by_type": by_type,
        "events_by_scan_kind": events_by_scan_kind(records, {e.type.value for e in after}),
        "events": [
            {
                "type": e.type.value,
                "port": e.port,
                "at_s": round(e.observed_at.timestamp() - t0_wall, 1),
                "summary": e.summary,
            }
            for e in after[:200]
        ],
        "findings_open_at_end": len(rows),
        "scans_after_limit": scans_by_kind(records),
        "scans": scan_timeline(records, t0_wall),
        "scans_total_metric": final_rate["scans_total"],
        "learned_rate": {"api": final_rate["api"], "metric": final_rate["metric"]},
        "samples": samples,
        "daemon": {
            "cpu_share_of_one_core": round((cpu1 - cpu0) / elapsed, 3),
            "peak_rss_mb": round(peak, 1),
        },
        "loadavg_at_limit": [round(x, 2) for x in load0],
        "loadavg_at_end": [round(x, 2) for x in load],
        "load1_mean": round(statistics.fmean(s["load1"] for s in samples), 2),
        "load1_max": max(s["load1"] for s in samples),
        "_last_event_id": last_id,
    }


def run_phase(name: str, phase: Phase, log_dir: Path | None) -> dict[str, Any]:
    """Build the router, run the daemon against it, measure one phase, clean everything up."""
    with tempfile.TemporaryDirectory(prefix="emrl-") as tmp, make_router() as router:
        directory = Path(tmp)
        router.listen(EXPECTED, "tls")
        for port in BUG_PORTS:
            router.listen(port, "http")
        router.set_policy("reject", {EXPECTED: "accept", (80, 89): "accept", (440, 449): "accept"})
        http_port = free_port()
        config = write_config(directory, router.addr, http_port, phase)
        log_path = directory / "daemon.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [EXE, "run", "-c", str(config)], stdout=log, stderr=log, env=env
            )
        try:
            result = asyncio.run(
                measure_phase(
                    phase,
                    router,
                    proc,
                    log_path,
                    directory / "state",
                    f"http://127.0.0.1:{http_port}",
                )
            )
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_DEADLINE)
            if log_dir is not None:
                log_dir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(log_path, log_dir / f"ratelimit-{name}.log")
        # Events the daemon raised while stopping (the scan it cut short) are false ones too.
        at_stop = asyncio.run(stored_events(directory / "state", result.pop("_last_event_id")))
    shutdown = collections.Counter(e.type.value for e in at_stop[result["events_after_limit"] :])
    result["events_at_shutdown"] = dict(sorted(shutdown.items()))
    result["exit_code"] = proc.returncode
    summary = {k: result[k] for k in ("events_by_type", "learned_rate", "goal_met")}
    print(f"{name}: {summary} scans={result['scans_after_limit']}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    """The phases asked for (both by default); writes bench/results/ratelimit.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(PHASES))
    parser.add_argument("--seconds", type=float, help="override every phase's duration")
    parser.add_argument("--jitter", type=float, help="schedule jitter (default 0.1)")
    parser.add_argument("--log-dir", type=Path, help="keep the daemon's debug logs here")
    args = parser.parse_args(argv)
    reason = missing_requirements()
    if reason:
        print(f"rate-limit benchmark needs the namespace test bed: {reason}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {}
    for name in args.only or list(PHASES):
        phase = PHASES[name]
        if args.seconds is not None:
            phase = dataclasses.replace(phase, seconds=args.seconds)
        if args.jitter is not None:
            phase = dataclasses.replace(phase, jitter=args.jitter)
        results[name] = run_phase(name, phase, args.log_dir)
    previous = RESULTS / "ratelimit.json"
    if args.only and previous.exists():  # a partial run keeps the other phases' figures
        results = {**json.loads(previous.read_text()).get("phases", {}), **results}
    doc = {
        "machine": machine(),
        "router": {"open": [EXPECTED, *BUG_PORTS], "expected": [EXPECTED], "other": "reject"},
        "phases": results,
    }
    path = write_results("ratelimit", doc)
    print(f"written {path}")
    return 0 if all(r["goal_met"] for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
