"""Scan benchmark: `exposuremon scan` against `nmap -sT -Pn -n -T4` on the test bed.

Variants on a router namespace we build (tests/support/testbed.py), over 1-65535 with three open
ports: closed (RST on every port but the open ones), filtered (everything dropped but the open
ports), closed behind a 40 ms RTT relay, and closed with 2% random loss (run 10 times: the open
set must be exact every time). Token-bucket variants model a router's SYN-flood protection (an
nft `limit rate N/second burst B` on SYNs, over-limit SYNs dropped): 25/s burst 50 (OpenWrt's
default) and 100/s burst 5 over 1-2000 with 22 open ports, 1/s burst 3 over 1-100. Wall time,
CPU time and peak RSS of each tool as a child process, ratios to nmap, whether the open set is
exactly right and how many closed ports each tool reported filtered (or, for exposuremon,
unknown); written to bench/results/scan.json.

    make bench                              # everything
    python -m bench.scan_bench --only closed --repeat 3
    python -m bench.scan_bench --only bucket25 --only bucket100 --only bucket1 --jobs 3
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.common import RESULTS, Run, machine, measure, nmap_open_ports, write_results
from tests.support.testbed import make_router, missing_requirements

OPEN_PORTS = (22, 443, 51413)  # one common, one hot, one high port no top-N list has
# A router's admin and service ranges, one mid and one high port: what the issue measured.
BUCKET_OPEN = (*range(80, 90), *range(440, 450), 1500, 1777)
EXPOSUREMON = str(Path(sys.executable).with_name("exposuremon"))
NMAP = ["nmap", "-sT", "-Pn", "-n", "-T4", "-oX", "-"]


@dataclasses.dataclass(frozen=True)
class Variant:
    """One router set-up and how often each tool scans it."""

    rtt: float
    default: str  # policy for ports that are not open
    loss: float
    em_runs: int
    nmap_runs: int
    nmap_timeout: float
    ports: str = "1-65535"
    open_ports: tuple[int, ...] = OPEN_PORTS
    syn_limit: tuple[int, int] | None = None  # (SYNs per second, burst)

    @property
    def expected_open(self) -> tuple[int, ...]:
        """The open ports within the scanned range."""
        low, high = (int(x) for x in self.ports.split("-"))
        return tuple(p for p in self.open_ports if low <= p <= high)

    @property
    def floor_s(self) -> float | None:
        """Least time any scan can take through the bucket: (ports - burst) / rate."""
        if self.syn_limit is None:
            return None
        low, high = (int(x) for x in self.ports.split("-"))
        rate, burst = self.syn_limit
        return (high - low + 1 - burst) / rate


VARIANTS: dict[str, Variant] = {
    "closed": Variant(0.0, "reject", 0.0, 3, 3, 120),
    "filtered": Variant(0.0, "drop", 0.0, 1, 1, 400),
    "rtt40ms": Variant(0.040, "reject", 0.0, 3, 1, 200),
    "loss2pct": Variant(0.0, "reject", 0.02, 10, 1, 300),
    "bucket25": Variant(0.0, "reject", 0.0, 10, 1, 600, "1-2000", BUCKET_OPEN, (25, 50)),
    "bucket100": Variant(0.0, "reject", 0.0, 10, 1, 900, "1-2000", BUCKET_OPEN, (100, 5)),
    "bucket1": Variant(0.0, "reject", 0.0, 8, 1, 900, "1-100", BUCKET_OPEN, (1, 3)),
}


def run_exposuremon(address: str, ports: str) -> tuple[Run, list[int], dict[str, Any]]:
    """One `exposuremon scan --json`."""
    run = measure([EXPOSUREMON, "scan", address, "-p", ports, "--json"], timeout=900)
    if run.returncode != 0:
        raise RuntimeError(f"exposuremon failed ({run.returncode}): {run.stderr.strip()}")
    doc = json.loads(run.stdout)
    return run, doc["open"], doc


def nmap_filtered_count(xml: str) -> int:
    """Ports nmap reported filtered, listed one by one or summed up in `extraports`."""
    listed = len(re.findall(r'<state state="filtered"', xml))
    summed = sum(int(n) for n in re.findall(r'<extraports state="filtered" count="(\d+)"', xml))
    return listed + summed


def run_nmap(address: str, ports: str, timeout: float) -> tuple[Run, list[int], int]:
    """One nmap connect scan."""
    run = measure([*NMAP, f"-p{ports}", address], timeout=timeout)
    if run.returncode != 0:
        raise RuntimeError(f"nmap failed ({run.returncode}): {run.stderr.strip()}")
    return run, nmap_open_ports(run.stdout), nmap_filtered_count(run.stdout)


def summarise(
    runs: list[Run], opens: list[list[int]], filtered: list[int], expected: tuple[int, ...]
) -> dict[str, Any]:
    """Median figures over repeated runs, and how many runs had the exact open set."""
    exact = sum(1 for found in opens if tuple(found) == expected)
    return {
        "runs": len(runs),
        "wall_s": round(statistics.median(r.wall_s for r in runs), 3),
        "wall_s_all": [round(r.wall_s, 3) for r in runs],
        "cpu_s": round(statistics.median(r.cpu_s for r in runs), 3),
        "peak_rss_mb": round(max(r.peak_rss_mb for r in runs), 1),
        "open_exact": f"{exact}/{len(runs)}",
        "open_found": [found for found in opens if tuple(found) != expected][:3],
        "filtered_all": filtered,
    }


def bench_variant(name: str) -> dict[str, Any]:
    """Build the router for one variant and measure both tools against it."""
    v = VARIANTS[name]
    with make_router(rtt=v.rtt) as router:
        for port in v.open_ports:
            router.listen(port)
        router.set_policy(v.default, {p: "accept" for p in v.open_ports}, loss=v.loss)
        if v.syn_limit is not None:
            router.rate_limit(*v.syn_limit)
        address = router.delayed_addr if v.rtt else router.addr
        assert address is not None
        ours: list[Run] = []
        our_open: list[list[int]] = []
        our_filtered: list[int] = []
        our_unknown: list[int] = []
        learned: list[float | None] = []
        scan_s: list[float] = []
        for _ in range(v.em_runs):
            run, found, doc = run_exposuremon(address, v.ports)
            ours.append(run)
            our_open.append(found)
            our_filtered.append(doc["counts"]["filtered"])
            our_unknown.append(doc["counts"]["unknown"])
            learned.append(doc["stats"].get("learned_rate"))
            scan_s.append(doc["duration_s"])
            print(
                f"  {name}: exposuremon {run.wall_s:.2f}s open={len(found)} "
                f"filtered={our_filtered[-1]} unknown={our_unknown[-1]} learned={learned[-1]}",
                flush=True,
            )
        theirs: list[Run] = []
        their_open: list[list[int]] = []
        their_filtered: list[int] = []
        for _ in range(v.nmap_runs):
            nrun, nfound, nfiltered = run_nmap(address, v.ports, v.nmap_timeout)
            theirs.append(nrun)
            their_open.append(nfound)
            their_filtered.append(nfiltered)
            print(f"  {name}: nmap {nrun.wall_s:.2f}s open={len(nfound)}", flush=True)
    a = summarise(ours, our_open, our_filtered, v.expected_open)
    b = summarise(theirs, their_open, their_filtered, v.expected_open)
    a["scan_only_s"] = round(statistics.median(scan_s), 3)
    a["unknown_all"] = our_unknown
    a["learned_rate_all"] = learned
    result: dict[str, Any] = {
        "ports": v.ports,
        "exposuremon": a,
        "nmap": b,
        "ratio_wall": round(a["wall_s"] / b["wall_s"], 3),
        "ratio_cpu": round(a["cpu_s"] / b["cpu_s"], 3) if b["cpu_s"] else None,
        "ratio_rss": round(a["peak_rss_mb"] / b["peak_rss_mb"], 3),
    }
    if v.syn_limit is not None:
        floor = v.floor_s
        assert floor is not None
        result["syn_limit"] = {"rate": v.syn_limit[0], "burst": v.syn_limit[1]}
        result["floor_s"] = round(floor, 1)
        result["ratio_wall_floor"] = round(a["wall_s"] / floor, 3)
    return result


GOALS = {
    "closed": "wall <= 1.0x, CPU <= 1.5x nmap",
    "filtered": "wall <= 0.25x nmap",
    "rtt40ms": "wall <= 0.5x nmap",
    "loss2pct": "open set exact in 10 of 10 runs",
    "bucket25": "exact 10/10, 0 closed reported filtered, wall <= 1.1x nmap",
    "bucket100": "exact 10/10, 0 closed reported filtered, wall <= 2x the floor (20 s)",
    "bucket1": "exact, wall <= 1.5x nmap",
}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen variants, print a table, write bench/results/scan.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(VARIANTS))
    parser.add_argument("--repeat", type=int, default=None, help="runs of exposuremon per variant")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="variants measured at once, each on its own router (the token-bucket variants "
        "wait on their bucket, not on the CPU)",
    )
    args = parser.parse_args(argv)
    reason = missing_requirements()
    if reason:
        print(f"scan benchmark needs the namespace test bed: {reason}", file=sys.stderr)
        return 2
    if args.repeat:
        for key, variant in list(VARIANTS.items()):
            VARIANTS[key] = dataclasses.replace(variant, em_runs=args.repeat)
    names = args.only or list(VARIANTS)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {name: pool.submit(bench_variant, name) for name in names}
        results: dict[str, Any] = {name: future.result() for name, future in futures.items()}
    print_table(results)
    previous_doc: dict[str, Any] = {}
    previous = RESULTS / "scan.json"
    if previous.exists():
        previous_doc = json.loads(previous.read_text())
    if args.only:  # a partial run updates the variants it ran, keeps the others
        results = previous_doc.get("variants", {}) | results
    doc = {"machine": machine(), "open_ports": list(OPEN_PORTS), "goals": GOALS}
    doc["variants"] = results
    # The figures from before the engine learned rate limits, kept to compare against.
    baseline = previous_doc.get("baseline_before_rate_learning") or {
        "machine": previous_doc.get("machine"),
        "variants": {k: v for k, v in previous_doc.get("variants", {}).items() if k in BASELINE},
    }
    doc["baseline_before_rate_learning"] = baseline
    path = write_results("scan", doc)
    print(f"\nwritten {path}")
    return 0


BASELINE = ("closed", "filtered", "rtt40ms", "loss2pct")


def print_table(results: dict[str, Any]) -> None:
    """One line per tool and variant, then the ratios and the goal."""
    header = (
        f"{'variant':10} {'tool':12} {'wall s':>8} {'cpu s':>7} {'rss MB':>7} {'open ok':>8} "
        f"{'filtered':>9}"
    )
    print("\n" + header)
    for name, res in results.items():
        for tool in ("exposuremon", "nmap"):
            r = res[tool]
            print(
                f"{name:10} {tool:12} {r['wall_s']:8.2f} {r['cpu_s']:7.2f} "
                f"{r['peak_rss_mb']:7.1f} {r['open_exact']:>8} {max(r['filtered_all']):>9}"
            )
        floor = ""
        if "floor_s" in res:
            floor = f", floor {res['floor_s']} s ({res['ratio_wall_floor']}x)"
        print(
            f"{'':10} {'ratio':12} {res['ratio_wall']:8.2f} {res['ratio_cpu'] or 0:7.2f} "
            f"{res['ratio_rss']:7.2f}{floor}   goal: {GOALS[name]}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
