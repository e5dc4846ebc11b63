"""`exposuremon export` as a user runs it, checked with the real readers: Debian's ndiff (also
against a real nmap run) and python-libnmap.

The store is filled by real detection on hand-made observations (the story of
test_daemon_commands), as the daemon fills it.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import datetime as dt
import io
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from libnmap.parser import NmapParser

from exposuremon.detect import TargetPolicy
from exposuremon.model import Fingerprint, Observation, Observed, ScanKind, TargetState
from exposuremon.store.database import Store
from exposuremon.web.export import CSV_COLUMNS
from tests.cli.test_daemon_commands import (
    CONFIG,
    OFFICE_ADDR,
    T0,
    apply_scans,
    fill,
    observe,
    run_cli,
)
from tests.support.loopback import Listeners


@dataclasses.dataclass(frozen=True)
class Story:
    """A config and the story's store it points at; `ids` names the findings."""

    config: Path
    state_dir: Path
    ids: dict[str, int]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Story:
    """The story's store, built once per module; tests work on copies."""
    base = tmp_path_factory.mktemp("export")
    ids, _ = asyncio.run(fill(base / "state"))
    return Story(base / "config.toml", base / "state", ids)


@pytest.fixture
def story(template: Story, tmp_path: Path) -> Story:
    """A private copy of the story's store with a config pointing at it."""
    shutil.copytree(template.state_dir, tmp_path / "state")
    config = tmp_path / "config.toml"
    config.write_text(CONFIG, encoding="utf-8")
    return Story(config, tmp_path / "state", template.ids)


@pytest.fixture
def listeners() -> Iterator[Listeners]:
    """Listening sockets on loopback, closed after the test."""
    ls = Listeners()
    yield ls
    ls.close()


def export(config: Path, *args: str) -> str:
    """Run `export` successfully; what it printed."""
    proc = run_cli("export", "-c", str(config), *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def ndiff(a: Path, b: Path) -> subprocess.CompletedProcess[str]:
    """Debian's ndiff on two documents (exit 1: they differ, 2: it could not read them)."""
    return subprocess.run(
        ["ndiff", str(a), str(b)], capture_output=True, text=True, timeout=60, check=False
    )


def diff_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """ndiff's lines with the column padding collapsed: `+25/tcp open`."""
    return [" ".join(line.split()) for line in proc.stdout.splitlines()]


async def add_scan(state_dir: Path, name: str, policy: TargetPolicy, obs: Observation) -> None:
    """Detect and save one more scan of `name`, as the daemon would."""
    async with await Store.open(state_dir) as store:
        state = await store.load_state(name)
        await apply_scans(store, state, policy, [obs])


def test_ndiff_reads_two_exports_and_reports_the_port_difference(
    story: Story, tmp_path: Path
) -> None:
    """Between two exports, ndiff shows the port that closed and the one that opened."""
    before = tmp_path / "before.xml"
    before.write_text(export(story.config))
    later = T0 + dt.timedelta(hours=1)
    scan = observe("office", OFFICE_ADDR, later, {443, 80, 8080, 25}, {3389})
    asyncio.run(add_scan(story.state_dir, "office", TargetPolicy(frozenset({443})), scan))
    after = tmp_path / "after.xml"
    after.write_text(export(story.config, "--format", "nmap-xml"))
    proc = ndiff(before, after)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr == ""
    lines = diff_lines(proc)
    assert f"{OFFICE_ADDR}:" in lines
    assert "-3389/tcp open" in lines
    assert "+3389/tcp closed" in lines
    assert "+25/tcp open" in lines
    assert not any("22/tcp" in line for line in lines)  # branch did not change
    same = ndiff(after, after)
    assert same.returncode == 0, same.stdout + same.stderr


def test_libnmap_parses_the_export(story: Story) -> None:
    """python-libnmap reads every target as a host, with its open ports, services and
    verdicts."""
    report = NmapParser.parse_fromstring(export(story.config))
    hosts = {h.address: h for h in report.hosts}
    assert set(hosts) == {OFFICE_ADDR, "203.0.113.9", "192.0.2.44"}
    office = hosts[OFFICE_ADDR]
    assert office.status == "up"
    assert sorted(office.get_open_ports()) == [
        (80, "tcp"),
        (443, "tcp"),
        (3389, "tcp"),
        (8080, "tcp"),
    ]
    web = office.get_service(80)
    assert web.service == "http"
    assert web.service_dict["product"] == "bintec httpd"
    scripts = {s.port: [(r["id"], r["output"]) for r in s.scripts_results] for s in office.services}
    assert scripts[443] == [("exposuremon", "verdict: expected")]
    assert scripts[80] == [
        (
            "exposuremon",
            f"verdict: unexpected; finding {story.ids['office80']} open, critical\n"
            "http-server-header: bintec httpd",
        )
    ]
    ((_, acked),) = scripts[8080]
    assert acked.endswith("acked, critical, acked until 2099-06-01T00:00:00Z")
    assert hosts["192.0.2.44"].status == "unknown"  # lab: configured, never scanned
    assert hosts["192.0.2.44"].services == []
    names = {h.address: h.scripts_results[0]["output"] for h in report.hosts}
    assert names[OFFICE_ADDR] == "target office"


def test_ndiff_compares_an_export_with_a_real_nmap_run(
    tmp_path: Path, listeners: Listeners
) -> None:
    """An export that knows one loopback port open, against nmap's scan of the loopback
    listener we own: ndiff shows the port that closed and the one nmap found open."""
    gone = listeners.open()
    listeners.close()  # known open to the store, closed by the time nmap looks
    live = listeners.open()
    config = tmp_path / "config.toml"
    config.write_text(
        '[daemon]\nstate_dir = "state"\n[[targets]]\nname = "lo"\naddress = "127.0.0.1"\n'
    )
    scan = Observation(
        target="lo",
        kind=ScanKind.QUICK,
        address="127.0.0.1",
        started=T0,
        finished=T0 + dt.timedelta(seconds=1),
        complete=True,
        states={gone: Observed.OPEN},
        confirmed_open=frozenset({gone}),
        responded=True,
    )

    async def save() -> None:
        async with await Store.open(tmp_path / "state") as store:
            await apply_scans(store, TargetState(name="lo"), TargetPolicy(), [scan])

    asyncio.run(save())
    ours = tmp_path / "ours.xml"
    ours.write_text(export(config))
    nmap_xml = tmp_path / "nmap.xml"
    nmap = subprocess.run(
        ["nmap", "-n", "-sT", "-p", f"{gone},{live}", "127.0.0.1", "-oX", str(nmap_xml)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert nmap.returncode == 0, nmap.stderr
    proc = ndiff(ours, nmap_xml)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = diff_lines(proc)
    assert "127.0.0.1:" in lines  # one host on both sides: matched by its address
    assert f"-{gone}/tcp open" in lines
    assert any(line.startswith(f"+{gone}/tcp closed") for line in lines)
    assert any(line.startswith(f"+{live}/tcp open") for line in lines), proc.stdout
    parsed = NmapParser.parse_fromfile(str(nmap_xml))
    assert parsed.hosts[0].get_open_ports() == [(live, "tcp")]


def test_json_export(story: Story) -> None:
    """--format json: every configured target in config order, each port with its verdict,
    finding and fingerprint."""
    doc = json.loads(export(story.config, "--format", "json"))
    assert doc["exported_at"].endswith("Z")
    assert [t["name"] for t in doc["targets"]] == ["office", "branch", "lab"]
    office, branch, lab = doc["targets"]
    ports = {p["port"]: p for p in office["ports"]}
    assert sorted(ports) == [80, 443, 3389, 8080]
    assert ports[80]["fingerprint"] == {"http_server": "bintec httpd"}
    assert ports[80]["finding"]["state"] == "open"
    assert ports[443]["verdict"] == "expected"
    assert ports[443]["finding"] is None
    assert ports[8080]["finding"]["ack_until"] == "2099-06-01T00:00:00Z"
    assert [(p["port"], p["state"]) for p in branch["ports"]] == [(22, "open")]
    assert lab == {
        "name": "lab",
        "address": "192.0.2.44",
        "status": "never scanned",
        "status_since": None,
        "last_observed": None,
        "ports": [],
    }


def test_csv_export_and_target_filter(story: Story, tmp_path: Path) -> None:
    """--format csv: a header, one line per port record, one bare line for a target without
    any; --target limits the export; -o writes a file."""
    out = tmp_path / "export.csv"
    assert (
        export(
            story.config, "--format", "csv", "--target", "branch", "--target", "lab", "-o", str(out)
        )
        == ""
    )
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [(r["target"], r["port"], r["state"], r["verdict"]) for r in rows] == [
        ("branch", "22", "open", "unexpected"),
        ("lab", "", "", ""),
    ]
    assert rows[0]["finding_state"] == "open"
    assert rows[1]["status"] == "never scanned"


def test_csv_cells_from_the_network_are_not_formulas(tmp_path: Path) -> None:
    """A banner a spreadsheet would run as a formula is written as text (a leading quote)."""
    config = tmp_path / "config.toml"
    config.write_text(
        '[daemon]\nstate_dir = "state"\n[[targets]]\nname = "r"\naddress = "192.0.2.1"\n'
    )
    evil = Fingerprint(banner='=HYPERLINK("http://x")', http_title="+1", http_server="nginx")
    scan = Observation(
        target="r",
        kind=ScanKind.QUICK,
        address="192.0.2.1",
        started=T0,
        finished=T0 + dt.timedelta(seconds=1),
        complete=True,
        states={21: Observed.OPEN},
        confirmed_open=frozenset({21}),
        fingerprints={21: evil},
        responded=True,
    )

    async def save() -> None:
        async with await Store.open(tmp_path / "state") as store:
            await apply_scans(store, TargetState(name="r"), TargetPolicy(), [scan])

    asyncio.run(save())
    (row,) = csv.DictReader(io.StringIO(export(config, "--format", "csv")))
    assert row["banner"] == '\'=HYPERLINK("http://x")'
    assert row["http_title"] == "'+1"
    assert row["http_server"] == "nginx"


def test_unknown_target_and_missing_store(story: Story, tmp_path: Path) -> None:
    """--target with an unknown name exits 2 naming it; a config whose daemon never ran, 1."""
    proc = run_cli("export", "-c", str(story.config), "--target", "nope")
    assert proc.returncode == 2
    assert "no target named 'nope'" in proc.stderr
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.toml").write_text(CONFIG)
    proc = run_cli("export", "-c", str(fresh / "config.toml"))
    assert proc.returncode == 1
    assert "no database at" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_target_may_name_a_range_entry(story: Story) -> None:
    """--target with the name of a range entry exports all the targets it expanded to."""
    story.config.write_text(CONFIG + '\n[[targets]]\nname = "blk"\naddress = "192.0.2.8/31"\n')
    doc = json.loads(export(story.config, "--format", "json", "--target", "blk", "--target", "lab"))
    assert [(t["name"], t["address"], t["status"]) for t in doc["targets"]] == [
        ("lab", "192.0.2.44", "never scanned"),
        ("blk-192.0.2.8", "192.0.2.8", "never scanned"),
        ("blk-192.0.2.9", "192.0.2.9", "never scanned"),
    ]
