"""Scan benchmark: `exposuremon scan` against `nmap -sT -Pn -n -T4` over 1-65535 on the test bed.

Four variants on a router namespace we build (tests/support/testbed.py): closed (RST on every port
but
three open ones), filtered (everything dropped but three open ports), closed behind a 40 ms
RTT relay, and closed with 2% random loss (run 10 times: the open set must be exact every
time). Wall time, CPU time and peak RSS of each tool as a child process, ratios to nmap, and
whether the open set is exactly right; written to bench/results/scan.json.

    make bench                              # everything
    python -m bench.scan_bench --only closed --repeat 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.common import RESULTS, Run, machine, measure, nmap_open_ports, write_results
from tests.support.testbed import make_router, missing_requirements

OPEN_PORTS = (22, 443, 51413)  # one common, one hot, one high port no top-N list has
EXPOSUREMON = str(Path(sys.executable).with_name("exposuremon"))
NMAP = ["nmap", "-sT", "-Pn", "-n", "-T4", "-p1-65535", "-oX", "-"]

# variant -> (router rtt, default policy, loss, runs of exposuremon, runs of nmap, nmap timeout)
VARIANTS: dict[str, tuple[float, str, float, int, int, float]] = {
    "closed": (0.0, "reject", 0.0, 3, 3, 120),
    "filtered": (0.0, "drop", 0.0, 1, 1, 400),
    "rtt40ms": (0.040, "reject", 0.0, 3, 1, 200),
    "loss2pct": (0.0, "reject", 0.02, 10, 1, 300),
}


def run_exposuremon(address: str) -> tuple[Run, list[int], dict[str, Any]]:
    """One `exposuremon scan --json` of every port."""
    run = measure([EXPOSUREMON, "scan", address, "-p", "1-65535", "--json"], timeout=300)
    if run.returncode != 0:
        raise RuntimeError(f"exposuremon failed ({run.returncode}): {run.stderr.strip()}")
    doc = json.loads(run.stdout)
    return run, doc["open"], doc


def run_nmap(address: str, timeout: float) -> tuple[Run, list[int]]:
    """One nmap connect scan of every port."""
    run = measure([*NMAP, address], timeout=timeout)
    if run.returncode != 0:
        raise RuntimeError(f"nmap failed ({run.returncode}): {run.stderr.strip()}")
    return run, nmap_open_ports(run.stdout)


def summarise(runs: list[Run], opens: list[list[int]]) -> dict[str, Any]:
    """Median figures over repeated runs, and how many runs had the exact open set."""
    exact = sum(1 for found in opens if tuple(found) == OPEN_PORTS)
    return {
        "runs": len(runs),
        "wall_s": round(statistics.median(r.wall_s for r in runs), 3),
        "wall_s_all": [round(r.wall_s, 3) for r in runs],
        "cpu_s": round(statistics.median(r.cpu_s for r in runs), 3),
        "peak_rss_mb": round(max(r.peak_rss_mb for r in runs), 1),
        "open_exact": f"{exact}/{len(runs)}",
        "open_found": [found for found in opens if tuple(found) != OPEN_PORTS][:3],
    }


def bench_variant(name: str) -> dict[str, Any]:
    """Build the router for one variant and measure both tools against it."""
    rtt, default, loss, em_runs, nmap_runs, nmap_timeout = VARIANTS[name]
    with make_router(rtt=rtt) as router:
        for port in OPEN_PORTS:
            router.listen(port)
        router.set_policy(default, {p: "accept" for p in OPEN_PORTS}, loss=loss)
        address = router.delayed_addr if rtt else router.addr
        assert address is not None
        ours: list[Run] = []
        our_open: list[list[int]] = []
        scan_s: list[float] = []
        for _ in range(em_runs):
            run, found, doc = run_exposuremon(address)
            ours.append(run)
            our_open.append(found)
            scan_s.append(doc["duration_s"])
            print(f"  {name}: exposuremon {run.wall_s:.2f}s open={found}", flush=True)
        theirs: list[Run] = []
        their_open: list[list[int]] = []
        for _ in range(nmap_runs):
            nrun, nfound = run_nmap(address, nmap_timeout)
            theirs.append(nrun)
            their_open.append(nfound)
            print(f"  {name}: nmap {nrun.wall_s:.2f}s open={nfound}", flush=True)
    a, b = summarise(ours, our_open), summarise(theirs, their_open)
    a["scan_only_s"] = round(statistics.median(scan_s), 3)
    return {
        "exposuremon": a,
        "nmap": b,
        "ratio_wall": round(a["wall_s"] / b["wall_s"], 3),
        "ratio_cpu": round(a["cpu_s"] / b["cpu_s"], 3) if b["cpu_s"] else None,
        "ratio_rss": round(a["peak_rss_mb"] / b["peak_rss_mb"], 3),
    }


GOALS = {
    "closed": "wall <= 1.0x, CPU <= 1.5x nmap",
    "filtered": "wall <= 0.25x nmap",
    "rtt40ms": "wall <= 0.5x nmap",
    "loss2pct": "open set exact in 10 of 10 runs",
}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen variants, print a table, write bench/results/scan.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(VARIANTS))
    parser.add_argument("--repeat", type=int, default=None, help="runs of exposuremon per variant")
    args = parser.parse_args(argv)
    reason = missing_requirements()
    if reason:
        print(f"scan benchmark needs the namespace test bed: {reason}", file=sys.stderr)
        return 2
    if args.repeat:
        for key, (rtt, default, loss, _, nruns, nto) in list(VARIANTS.items()):
            VARIANTS[key] = (rtt, default, loss, args.repeat, nruns, nto)
    results: dict[str, Any] = {}
    for name in args.only or list(VARIANTS):
        print(f"variant {name} …", flush=True)
        results[name] = bench_variant(name)
    header = f"{'variant':10} {'tool':12} {'wall s':>8} {'cpu s':>7} {'rss MB':>7} {'open ok':>8}"
    print("\n" + header)
    for name, res in results.items():
        for tool in ("exposuremon", "nmap"):
            r = res[tool]
            print(
                f"{name:10} {tool:12} {r['wall_s']:8.2f} {r['cpu_s']:7.2f} "
                f"{r['peak_rss_mb']:7.1f} {r['open_exact']:>8}"
            )
        print(
            f"{'':10} {'ratio':12} {res['ratio_wall']:8.2f} {res['ratio_cpu'] or 0:7.2f} "
            f"{res['ratio_rss']:7.2f}   goal: {GOALS[name]}"
        )
    if args.only:  # a partial run updates the variants it ran, keeps the others
        previous = RESULTS / "scan.json"
        if previous.exists():
            results = json.loads(previous.read_text()).get("variants", {}) | results
    path = write_results(
        "scan",
        {"machine": machine(), "open_ports": list(OPEN_PORTS), "goals": GOALS, "variants": results},
    )
    print(f"\nwritten {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
