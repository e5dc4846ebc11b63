"""`exposuremon scan` as a user runs it: output, JSON shape and exit codes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from libnmap.parser import NmapParser

from exposuremon.scan.report import rate_limit_note
from exposuremon.scan.result import ScanResult, ScanStats
from tests.support.loopback import Listeners, listening_ports
from tests.support.testbed import Router


@pytest.fixture
def listeners() -> Iterator[Listeners]:
    """Listening sockets on loopback, closed after the test."""
    ls = Listeners()
    yield ls
    ls.close()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed console script the way a user or cron would."""
    exe = os.path.join(os.path.dirname(sys.executable), "exposuremon")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, check=False)


def test_json_document_shape(listeners: Listeners) -> None:
    """--json prints one object with the documented keys and the exact open ports."""
    port = listeners.open()
    lo, hi = port - 50, port + 50
    proc = run_cli("scan", "127.0.0.1", "-p", f"{lo}-{hi}", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    for key in ("target", "address", "started_at", "duration_s", "complete", "open", "counts"):
        assert key in doc
    assert doc["target"] == doc["address"] == "127.0.0.1"
    assert doc["complete"] is True
    assert doc["open"] == sorted(listening_ports() & set(range(lo, hi + 1)))
    assert port in doc["open"]
    assert set(doc["counts"]) >= {"open", "closed", "filtered"}
    assert sum(doc["counts"][k] for k in ("open", "closed", "filtered")) == hi - lo + 1
    assert doc["started_at"].endswith("Z")


def test_table_output(listeners: Listeners) -> None:
    """Without --json, the open port is listed and the counts are summarised."""
    port = listeners.open()
    proc = run_cli("scan", "127.0.0.1", "-p", f"{port},{port + 1}")
    assert proc.returncode == 0, proc.stderr
    assert str(port) in proc.stdout
    assert "1 open" in proc.stdout
    assert "\x1b[" not in proc.stdout  # no colour codes when not a TTY


def test_expect_open_exit_codes(listeners: Listeners) -> None:
    """--expect-open: exit 0 when only expected ports are open, 1 when another one is."""
    a, b = listeners.open(), listeners.open()
    ok = run_cli("scan", "127.0.0.1", "-p", f"{a},{b}", "--expect-open", f"{a},{b}")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = run_cli("scan", "127.0.0.1", "-p", f"{a},{b}", "--expect-open", str(a), "--json")
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["unexpected_open"] == [b]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["scan", "127.0.0.1", "-p", "70000"], "70000"),
        (["scan", "127.0.0.1", "-p", "80-"], "80-"),
        (["scan", "127.0.0.1", "--timeout-max", "soon"], "soon"),
        (["scan", "127.0.0.1", "--concurrency", "0"], "concurrency"),
        (["scan", "127.0.0.1", "--retries", "-1"], "retries"),
        (["scan", "127.0.0.1", "--rate", "0"], "rate"),
        (["scan", "127.0.0.1", "-p", "\u00b2"], "is not a port number"),
        (["scan", "127.0.0.1", "-p", "\u0668\u0660"], "is not a port number"),
        (["scan", "127.0.0.1", "--rate", "1e-300"], "between 1 and 1000000"),
        (["scan", "127.0.0.1", "--rate", "nan"], "between 1 and 1000000"),
        (["scan", "127.0.0.1", "--rate", "inf"], "between 1 and 1000000"),
        (["scan", "127.0.0.1", "--timeout-max", "1ms"], "between 10ms and"),
        (["scan", "127.0.0.1", "--timeout-max", "1h"], "between 10ms and"),
        (["scan", "127.0.0.1", "--timeout-max", "9" * 400], "finite"),
        (["scan", "127.0.0.1", "--concurrency", "70000"], "concurrency"),
        (["scan", "127.0.0.1", "--retries", "11"], "retries"),
        (["scan", "127.0.0.1", "--workers", "17"], "workers"),
        (["scan", "127.0.0.1", "--expect-open", "x"], "'x'"),
        (["scan", "no-such-host.invalid", "-p", "80"], "no-such-host.invalid"),
        (["scan"], "HOST"),
        (["scna", "127.0.0.1"], "scna"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str) -> None:
    """Bad input: exit code 2, one line on stderr naming the problem, no traceback."""
    proc = run_cli(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr


def test_progress_bar_only_on_a_terminal(listeners: Listeners) -> None:
    """A progress bar is drawn on stderr when it is a terminal, and never in pipes."""
    import pty

    listeners.open()
    exe = os.path.join(os.path.dirname(sys.executable), "exposuremon")
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [exe, "scan", "127.0.0.1", "-p", "1-65535", "--rate", "20000"],
        stdout=subprocess.PIPE,
        stderr=secondary,
        text=True,
    )
    os.close(secondary)
    seen = b""
    while True:  # bounded: the scan ends, then the pty reports EOF (EIO)
        try:
            chunk = os.read(primary, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    out, _ = proc.communicate(timeout=60)
    os.close(primary)
    assert proc.returncode == 0
    assert b"scanning 127.0.0.1" in seen
    assert "scanning" not in out
    piped = run_cli("scan", "127.0.0.1", "-p", "1-2000")
    assert piped.stderr == ""


@pytest.mark.netns
def test_rate_limited_router_is_reported(router: Router) -> None:
    """Against a router limiting SYNs to 20/s, `scan` says so on stderr and in the JSON stats."""
    router.listen(80)
    router.set_policy("reject", {80: "accept"})
    router.rate_limit(20, burst=5)
    proc = run_cli("scan", router.addr, "-p", "1-120", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["open"] == [80]
    assert doc["counts"]["closed"] == 119
    assert doc["stats"]["rate_limited"] is True
    assert 5 <= doc["stats"]["learned_rate"] <= 80
    assert re.fullmatch(r"target limits new connections to ~\d+/s; scan paced\n", proc.stderr)


def test_rate_limit_note_wording() -> None:
    """The note names the learned rate (one decimal below 10/s) and is absent without a limit."""
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    base = ScanResult("r", "198.18.0.2", (), when, when, True, bytes(65536))
    assert rate_limit_note(base) is None
    limited = ScanStats(rate_limited=True, learned_rate=25.4)
    assert rate_limit_note(dataclasses.replace(base, stats=limited)) == (
        "target limits new connections to ~25/s; scan paced"
    )
    slow = ScanStats(rate_limited=True, learned_rate=1.04)
    assert "~1.0/s" in (rate_limit_note(dataclasses.replace(base, stats=slow)) or "")


# ----------------------------------------------------------------------------- nmap XML


def nmap_lines(a: Path, b: Path) -> tuple[int, list[str]]:
    """Debian's ndiff on two documents: its exit code and its lines, padding collapsed."""
    proc = subprocess.run(
        ["ndiff", str(a), str(b)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.stderr == ""
    return proc.returncode, [" ".join(line.split()) for line in proc.stdout.splitlines()]


def test_nmap_xml_is_read_by_libnmap(listeners: Listeners) -> None:
    """--format nmap-xml prints one nmap run that python-libnmap reads: the host, the open
    port, the closed ones, and the verdict of --expect-open."""
    port = listeners.open()
    spec = f"{port - 3}-{port + 3}"
    proc = run_cli("scan", "127.0.0.1", "-p", spec, "--format", "nmap-xml", "--expect-open", "1")
    assert proc.returncode == 1, proc.stderr  # the open port was not expected
    report = NmapParser.parse_fromstring(proc.stdout)
    assert report.commandline == f"exposuremon scan -p {spec} 127.0.0.1"
    (host,) = report.hosts
    assert host.address == "127.0.0.1"
    assert host.status == "up"
    states = {s.port: s.state for s in host.services}
    open_ = sorted(listening_ports() & set(range(port - 3, port + 4)))
    assert sorted(p for p, s in states.items() if s == "open") == open_
    assert set(states) == set(range(port - 3, port + 4))  # 7 ports: each listed, as nmap does
    (script,) = host.get_service(port).scripts_results
    assert script["output"] == "verdict: unexpected"


def test_ox_writes_the_file_beside_the_table(listeners: Listeners, tmp_path: Path) -> None:
    """-oX FILE writes the XML and still prints the table; ndiff compares two such files."""
    port = listeners.open()
    first, second = tmp_path / "first.xml", tmp_path / "second.xml"
    proc = run_cli("scan", "127.0.0.1", "-p", f"{port},{port + 1}", "-oX", str(first))
    assert proc.returncode == 0, proc.stderr
    assert "1 open" in proc.stdout
    assert first.read_text().startswith('<?xml version="1.0" encoding="UTF-8"?>')
    listeners.close()
    proc = run_cli("scan", "127.0.0.1", "-p", f"{port},{port + 1}", "-oX", str(second), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["open"] == []
    code, lines = nmap_lines(first, second)
    assert code == 1
    assert "127.0.0.1:" in lines
    assert f"-{port}/tcp open" in lines
    assert f"+{port}/tcp closed" in lines
    assert nmap_lines(second, second)[0] == 0


def test_ndiff_against_a_real_nmap_scan(listeners: Listeners, tmp_path: Path) -> None:
    """Our scan and nmap's of the same loopback listeners agree: ndiff finds no port that
    differs in state; after one listener closes, ndiff shows it."""
    a, b = listeners.open(), listeners.open()
    spec = f"{a},{b}"
    ours = tmp_path / "ours.xml"
    proc = run_cli("scan", "127.0.0.1", "-p", spec, "-oX", str(ours))
    assert proc.returncode == 0, proc.stderr
    theirs = tmp_path / "nmap.xml"
    nmap = ["nmap", "-n", "-sT", "-p", spec, "127.0.0.1", "-oX", str(theirs)]
    done = subprocess.run(nmap, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    _, lines = nmap_lines(ours, theirs)
    changed = [line for line in lines if line.startswith(("-", "+")) and "/tcp" in line]
    # nmap names services from its table (ours has no name): a service column may differ,
    # the state column may not.
    assert {line[1:].split()[1] for line in changed} <= {"open"}, lines
    assert sorted(NmapParser.parse_fromfile(str(theirs)).hosts[0].get_open_ports()) == sorted(
        NmapParser.parse_fromfile(str(ours)).hosts[0].get_open_ports()
    )
    listeners.close()
    done = subprocess.run(nmap, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    code, lines = nmap_lines(ours, theirs)
    assert code == 1
    assert f"-{a}/tcp open" in lines
    assert any(line.startswith(f"+{a}/tcp closed") for line in lines), lines


def test_json_flag_contradicting_format() -> None:
    """--json with --format nmap-xml is a usage error (exit 2), not a guess."""
    proc = run_cli("scan", "127.0.0.1", "-p", "1", "--json", "--format", "nmap-xml")
    assert proc.returncode == 2
    assert "--json contradicts --format nmap-xml" in proc.stderr
