"""Shared benchmark plumbing: run a command as a child and measure it like `time -v` does."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def percentile(samples: Sequence[float], q: float) -> float | None:
    """The q-quantile by nearest rank, rounded to 2 places; None for no samples."""
    if not samples:
        return None
    ordered = sorted(samples)
    return round(ordered[max(0, math.ceil(len(ordered) * q) - 1)], 2)


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


@dataclasses.dataclass(frozen=True)
class Run:
    """One measured child process."""

    wall_s: float
    cpu_s: float  # user + system of the child
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


def measure(argv: list[str], timeout: float) -> Run:
    """Run argv to completion; its own CPU time and peak RSS come from wait4()."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        killer = threading.Timer(timeout, proc.kill)  # bounded: a hung tool cannot stall us
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(
            wall_s=wall,
            cpu_s=usage.ru_utime + usage.ru_stime,
            peak_rss_mb=usage.ru_maxrss / 1024,
            returncode=proc.returncode,
            stdout=out.read(),
            stderr=err.read(),
        )


def nmap_open_ports(xml: str) -> list[int]:
    """Open TCP ports from nmap's -oX output."""
    return sorted(
        int(m.group(1))
        for m in re.finditer(r'<port protocol="tcp" portid="(\d+)"><state state="open"', xml)
    )


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nmap": _version(["nmap", "--version"]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return "missing"
    return out.splitlines()[0] if out else "unknown"


def write_results(name: str, doc: dict[str, Any]) -> Path:
    """Write bench/results/<name>.json."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path
