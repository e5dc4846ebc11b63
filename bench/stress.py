"""`make stress`: the outage, incident and loss tests N times in a row on a CPU-starved machine.

Issue 13: a false `target_up` / `reboot_suspected` showed up when both cores were busy. This
keeps one busy loop per core running (plain `while True` processes, killed at the end) and
runs the tests below `--runs` times (default 20), each run a fresh pytest process. It prints
one line per run and a summary, `N/20 passed in S s`, and exits 1 unless every run passed.

    python -m bench.stress [--runs 20] [--busy N] [--timeout 600]

With `--suite` each run is the whole test suite instead (`make stress-suite`: 3 runs, what CI
must survive on a busy machine).

    python -m bench.stress --suite --runs 3 --timeout 1800

Each run's whole output is kept in `--log-dir` (default `bench/results/stress/`) as
`run-N.log`, so a failure late in a long suite can be read in full afterwards.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

TESTS = (
    "tests/e2e/test_daemon.py::test_long_outage_changes_no_port",
    "tests/e2e/test_daemon.py::test_the_incident",
    "tests/support/test_testbed.py::test_incident_ports_reopen_after_reboot",
    "tests/test_detect.py::test_incident_walk",
    "tests/test_service.py::test_no_false_findings_with_loss_and_latency",
)
_BUSY = "while True:\n    pass\n"


def main(argv: list[str] | None = None) -> int:
    """Run the stress loop; 0 when every run passed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--busy", type=int, default=os.cpu_count() or 2, help="busy loops")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    parser.add_argument("--suite", action="store_true", help="run the whole suite each time")
    parser.add_argument("--log-dir", type=Path, default=Path("bench/results/stress"))
    args = parser.parse_args(argv)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    tests = () if args.suite else TESTS
    busy = [subprocess.Popen([sys.executable, "-c", _BUSY]) for _ in range(args.busy)]
    passed = 0
    began = time.monotonic()
    try:
        for run in range(1, args.runs + 1):
            start = time.monotonic()
            proc: subprocess.CompletedProcess[str] | None = None
            try:
                proc = subprocess.run(
                    [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                    capture_output=True,
                    text=True,
                    timeout=args.timeout,
                    check=False,
                )
                ok, tail = proc.returncode == 0, (proc.stdout.strip().splitlines() or [""])[-1]
            except subprocess.TimeoutExpired:
                ok, tail = False, f"timed out after {args.timeout:.0f} s"
            passed += ok
            took = time.monotonic() - start
            log = args.log_dir / f"run-{run}.log"
            if proc is not None:
                log.write_text(proc.stdout + proc.stderr)
            print(f"run {run:2}/{args.runs}: {'ok  ' if ok else 'FAIL'} {took:6.1f} s  {tail}")
            if not ok and proc is not None:
                print(f"whole output: {log}", file=sys.stderr)
                print(proc.stdout[-4000:], file=sys.stderr)
            sys.stdout.flush()
    finally:
        for p in busy:
            p.send_signal(signal.SIGKILL)
            p.wait()
    total = time.monotonic() - began
    print(f"{passed}/{args.runs} passed in {total:.0f} s with {args.busy} busy loops")
    return 0 if passed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
