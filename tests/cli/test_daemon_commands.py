"""`check-config`, `status`, `findings` and `ack` as a user runs them, on a real filled store.

The store is filled by real detection (`detect.evaluate` on hand-made observations) saved with
`Store.apply`, exactly as the daemon does, then read and changed by the console script.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from exposuremon.detect import TargetPolicy, acknowledge, evaluate
from exposuremon.model import (
    Finding,
    FindingState,
    Fingerprint,
    Observation,
    Observed,
    ScanKind,
    TargetState,
)
from exposuremon.store.database import MAX_PAGE, Store, db_path
from tests.support.daemon import write_config
from tests.support.records import scan_record_of

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"
T0 = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)
OFFICE_ADDR, BRANCH_ADDR, LAB_ADDR = "198.51.100.7", "203.0.113.9", "192.0.2.44"
PRE_ACK_UNTIL = dt.datetime(2099, 6, 1, tzinfo=dt.UTC)
HTTPD = Fingerprint(http_server="bintec httpd")
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
FINDING_KEYS = {
    "id",
    "target",
    "address",
    "port",
    "protocol",
    "state",
    "severity",
    "opened_at",
    "resolved_at",
    "reopen_count",
    "previous_resolved_at",
    "ack_until",
    "ack_reason",
    "fingerprint",
    "seen_from",
}
CONFIG = f"""
[daemon]
state_dir = "state"

[[targets]]
name = "office"
address = "{OFFICE_ADDR}"
expected_open = "443"

[[targets]]
name = "branch"
address = "{BRANCH_ADDR}"

[[targets]]
name = "lab"
address = "{LAB_ADDR}"
"""


@dataclasses.dataclass(frozen=True)
class Bed:
    """A config file and the filled store it points at; `ids` names the findings."""

    config: Path
    state_dir: Path
    ids: dict[str, int]
    scans: dict[str, dt.datetime]  # when each scan of the story finished, by label


def run_cli(*args: str, columns: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed console script the way a user or cron would."""
    exe = os.path.join(os.path.dirname(sys.executable), "exposuremon")
    env = dict(os.environ)
    if columns is not None:
        env["COLUMNS"] = str(columns)  # rich wraps table cells to the terminal width
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


def observe(
    target: str,
    address: str,
    when: dt.datetime,
    open_: Iterable[int],
    closed: Iterable[int] = (),
    kind: ScanKind = ScanKind.SENTINEL,
) -> Observation:
    """A complete scan finishing at `when`; every open port confirmed, 80 serving HTTP."""
    states = {p: Observed.CLOSED for p in closed} | {p: Observed.OPEN for p in open_}
    opened = frozenset(p for p, s in states.items() if s is Observed.OPEN)
    return Observation(
        target=target,
        kind=kind,
        address=address,
        started=when - dt.timedelta(seconds=3),
        finished=when,
        complete=True,
        states=states,
        confirmed_open=opened,
        fingerprints={80: HTTPD} if 80 in opened else {},
        responded=True,
    )


async def apply_scans(
    store: Store, state: TargetState, policy: TargetPolicy, scans: Iterable[Observation]
) -> TargetState:
    """Detect and save each scan in turn, as the service does; the state as stored."""
    for obs in scans:
        out = evaluate(state, obs, policy, obs.finished)
        applied = await store.apply(scan_record_of(obs), out.state, out.events, out.findings, ())
        state = applied.state
    return state


async def fill(state_dir: Path) -> tuple[dict[str, int], dict[str, dt.datetime]]:
    """The story: office opens 80, 3389, 8080; 3389 closes (resolved) and reopens; 8080 acked.

    Branch opens 22 on one quick scan; lab is configured and never scanned.
    """
    at = {f"office{i}": T0 + dt.timedelta(minutes=i) for i in range(1, 5)}
    at["branch"] = T0 + dt.timedelta(minutes=10)
    office = [
        observe("office", OFFICE_ADDR, at["office1"], {443, 80, 3389, 8080}),
        observe("office", OFFICE_ADDR, at["office2"], {443, 80, 8080}, {3389}),
        observe("office", OFFICE_ADDR, at["office3"], {443, 80, 8080}, {3389}),
        observe("office", OFFICE_ADDR, at["office4"], {443, 80, 3389, 8080}),
    ]
    branch = observe("branch", BRANCH_ADDR, at["branch"], {22}, {80, 443}, ScanKind.QUICK)
    async with await Store.open(state_dir) as store:
        policy = TargetPolicy(expected_open=frozenset({443}))
        state = await apply_scans(store, TargetState(name="office"), policy, office)
        _, acked = acknowledge(state, 8080, PRE_ACK_UNTIL, "vendor remote support", at["office4"])
        await store.save_ack(acked)
        await apply_scans(store, TargetState(name="branch"), TargetPolicy(), [branch])
        rows, _ = await store.findings(limit=MAX_PAGE)
    by = {(f.target, f.port, f.state): f.id for f in rows if f.id is not None}
    ids = {
        "office80": by[("office", 80, FindingState.OPEN)],
        "office8080": by[("office", 8080, FindingState.ACKED)],
        "office3389_resolved": by[("office", 3389, FindingState.RESOLVED)],
        "office3389": by[("office", 3389, FindingState.OPEN)],
        "branch22": by[("branch", 22, FindingState.OPEN)],
    }
    assert len(rows) == len(ids), rows  # the story made exactly these findings
    return ids, at


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Bed:
    """The story's store, built once per module; tests work on copies."""
    base = tmp_path_factory.mktemp("template")
    ids, at = asyncio.run(fill(base / "state"))
    return Bed(config=base / "config.toml", state_dir=base / "state", ids=ids, scans=at)


@pytest.fixture
def bed(template: Bed, tmp_path: Path) -> Bed:
    """A private copy of the story's store with a config pointing at it."""
    shutil.copytree(template.state_dir, tmp_path / "state")
    config = tmp_path / "config.toml"
    config.write_text(CONFIG, encoding="utf-8")
    return dataclasses.replace(template, config=config, state_dir=tmp_path / "state")


def cli_json(*args: str) -> dict[str, Any]:
    """Run a command that must succeed and print JSON; the parsed document."""
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def findings_rows(state_dir: Path) -> list[tuple[Any, ...]]:
    """Every findings row, read with plain sqlite3 (not through the code under test)."""
    with contextlib.closing(sqlite3.connect(db_path(state_dir))) as db:
        return db.execute("SELECT * FROM findings ORDER BY id").fetchall()


def stored_finding(state_dir: Path, finding_id: int) -> tuple[Finding | None, TargetState]:
    """A finding and its target's state as a freshly opened Store (the daemon's view) has them."""

    async def read() -> tuple[Finding | None, TargetState]:
        async with await Store.open(state_dir) as store:
            finding = await store.finding(finding_id)
            name = finding.target if finding is not None else ""
            return finding, await store.load_state(name)

    return asyncio.run(read())


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """Exit 2 with exactly one line on stderr and no traceback; that line."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# ----------------------------------------------------------------------------- check-config


def test_check_config_example_is_valid_with_a_loopback_warning(tmp_path: Path) -> None:
    """The example config passes: exit 0, one ok line, a warning that it scans loopback."""
    text = EXAMPLE.read_text(encoding="utf-8")
    config = tmp_path / "config.toml"
    config.write_text(
        re.sub(r'(?m)^state_dir = "state"$', f'state_dir = "{tmp_path / "state"}"', text),
        encoding="utf-8",
    )
    proc = run_cli("check-config", "-c", str(config))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == [f"{config}: ok, 1 targets, 0 channels"]
    assert "Traceback" not in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1, proc.stderr
    assert "targets[0].address" in warnings[0]
    assert "127.0.0.1" in warnings[0]
    assert not (tmp_path / "state").exists()  # checking a config writes nothing


INLINE_URL = (
    '[[targets]]\nname = "office"\naddress = "198.51.100.7"\n'
    '[[notify]]\nname = "ops"\ntype = "slack"\nurl = "https://hooks.example/T0/B0/SECRET"\n'
)


@pytest.mark.parametrize(
    ("mode", "warned"), [(0o644, True), (0o604, True), (0o640, False), (0o600, False)]
)
def test_check_config_warns_about_an_inline_url_others_can_read(
    tmp_path: Path, mode: int, warned: bool
) -> None:
    """An inline webhook URL in a world-readable config is a warning naming notify[0].url;
    group-readable (0640, as install.sh installs it) is fine; the URL itself is never shown."""
    config = tmp_path / "config.toml"
    config.write_text(INLINE_URL, encoding="utf-8")
    os.chmod(config, mode)
    proc = run_cli("check-config", "-c", str(config))
    assert proc.returncode == 0, proc.stderr
    exposed = [line for line in proc.stderr.splitlines() if "notify[0].url:" in line]
    assert bool(exposed) is warned, proc.stderr
    assert "SECRET" not in proc.stderr + proc.stdout


def test_check_config_warns_about_world_readable_secret_files(tmp_path: Path) -> None:
    """A url_file or token_file readable by every user is a warning naming its key."""
    url_file, token_file = tmp_path / "url", tmp_path / "token"
    for path in (url_file, token_file):
        path.write_text("https://hooks.example/T0/B0/SECRET\n", encoding="utf-8")
        os.chmod(path, 0o644)
    config = tmp_path / "config.toml"
    config.write_text(
        INLINE_URL.replace('url = "https://hooks.example/T0/B0/SECRET"', f'url_file = "{url_file}"')
        + f'[http]\ntoken_file = "{token_file}"\n',
        encoding="utf-8",
    )
    os.chmod(config, 0o600)
    proc = run_cli("check-config", "-c", str(config))
    assert proc.returncode == 0, proc.stderr
    assert "notify[0].url_file: " in proc.stderr
    assert "http.token_file: " in proc.stderr
    assert "SECRET" not in proc.stderr


def test_check_config_refuses_non_finite_numbers(tmp_path: Path) -> None:
    """The issue's config (sentinel = nan, quick = inf, rate = nan, anomaly_share = nan) is
    refused with exit 2 and one line per key, instead of "ok" and a crash in `run`."""
    config = tmp_path / "config.toml"
    config.write_text(
        "[schedule]\nsentinel = nan\nquick = inf\n[scan]\nrate = nan\nanomaly_share = nan\n"
        + INLINE_URL.split("[[notify]]")[0],
        encoding="utf-8",
    )
    for command in ("check-config", "run"):
        proc = run_cli(command, "-c", str(config))
        assert proc.returncode == 2, proc.stderr
        keys = sorted(line.split(": ")[1] for line in proc.stderr.strip().splitlines())
        assert keys == ["scan.anomaly_share", "scan.rate", "schedule.quick", "schedule.sentinel"]


def test_check_config_reports_every_error_on_its_own_line(tmp_path: Path) -> None:
    """A broken config exits 2 with one line per problem, each naming its key path."""
    config = tmp_path / "broken.toml"
    config.write_text(
        "[daemon]\n"
        'state_dir = "state"\n'
        'colour = "blue"\n'
        "[[targets]]\n"
        'name = "office"\n'
        f'address = "{OFFICE_ADDR}"\n'
        'expected_open = "443,70000"\n'
        "[[targets]]\n"
        'name = "office"\n'
        f'address = "{BRANCH_ADDR}"\n',
        encoding="utf-8",
    )
    proc = run_cli("check-config", "-c", str(config))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 3, proc.stderr
    assert all(line.startswith(f"{config}: ") for line in lines)
    unknown, port, duplicate = sorted(lines, key=lambda line: ("colour" not in line, line))
    assert "daemon.colour" in unknown
    assert "unknown key" in unknown
    assert "targets[0].expected_open:" in port
    assert "70000" in port
    assert "targets[1].name:" in duplicate
    assert "duplicate" in duplicate
    assert "office" in duplicate


def test_check_config_missing_file_is_one_line(tmp_path: Path) -> None:
    """A config file that does not exist: exit 2, one line naming the file."""
    missing = tmp_path / "nope.toml"
    line = one_error_line(run_cli("check-config", "-c", str(missing)))
    assert str(missing) in line
    assert "cannot read config file" in line


# ---------------------------------------------------------------------------------- status


def test_status_json_shows_every_configured_target(bed: Bed) -> None:
    """status --json: each target in config order; open ports flagged; counts; last scans."""
    doc = cli_json("status", "-c", str(bed.config), "--json")
    targets = {t["name"]: t for t in doc["targets"]}
    assert [t["name"] for t in doc["targets"]] == ["office", "branch", "lab"]

    office = targets["office"]
    assert office["address"] == OFFICE_ADDR
    assert office["status"] == "up"
    assert [(p["port"], p["expected"]) for p in office["open_ports"]] == [
        (80, False),
        (443, True),
        (3389, False),
        (8080, False),
    ]
    assert office["unexpected_open"] == [80, 3389, 8080]
    assert office["findings"] == {"open": 2, "acked": 1}
    assert office["findings_reopened"] == 1
    assert office["last_scan"] == {
        "sentinel": rfc3339(bed.scans["office4"]),
        "quick": None,
        "full": None,
    }

    branch = targets["branch"]
    assert branch["unexpected_open"] == [22]
    assert branch["findings"] == {"open": 1, "acked": 0}
    assert branch["last_scan"]["quick"] == rfc3339(bed.scans["branch"])
    assert branch["last_scan"]["sentinel"] is None

    lab = targets["lab"]
    assert lab["status"] == "never scanned"
    assert lab["address"] == LAB_ADDR
    assert lab["open_ports"] == []
    assert lab["findings"] == {"open": 0, "acked": 0}
    assert set(lab) == set(office)  # one shape for scripts, scanned or not


def test_status_table_lists_targets(bed: Bed) -> None:
    """status without --json: a table of every target, unexpected ports marked with `!`."""
    proc = run_cli("status", "-c", str(bed.config), columns=200)
    assert proc.returncode == 0, proc.stderr
    assert not proc.stdout.lstrip().startswith("{")
    rows = {line.split("│")[1].strip(): line for line in proc.stdout.splitlines() if "│" in line}
    assert set(rows) >= {"office", "branch", "lab"}
    assert "80!, 443, 3389!, 8080!" in rows["office"]
    assert "2 open, 1 acked" in rows["office"]
    assert "never scanned" in rows["lab"]
    assert "\x1b[" not in proc.stdout


# -------------------------------------------------------------------------------- findings


def rfc3339(when: dt.datetime) -> str:
    """The CLI's time format, computed independently."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_findings_json_shape(bed: Bed) -> None:
    """findings --json: every finding newest first, documented fields, UTC times ending in Z."""
    doc = cli_json("findings", "-c", str(bed.config), "--json")
    assert set(doc) == {"findings", "next"}
    assert doc["next"] is None
    found = doc["findings"]
    assert [f["id"] for f in found] == sorted(bed.ids.values(), reverse=True)
    for f in found:
        assert set(f) == FINDING_KEYS
        assert f["protocol"] == "tcp"
        assert f["severity"] in {"info", "warning", "critical"}
        for key in ("opened_at", "resolved_at", "previous_resolved_at", "ack_until"):
            assert f[key] is None or RFC3339_UTC.match(f[key]), (key, f[key])
        assert RFC3339_UTC.match(f["opened_at"])
    by_id = {f["id"]: f for f in found}

    open80 = by_id[bed.ids["office80"]]
    assert (open80["target"], open80["address"], open80["port"]) == ("office", OFFICE_ADDR, 80)
    assert open80["state"] == "open"
    assert open80["opened_at"] == rfc3339(bed.scans["office1"])
    assert open80["resolved_at"] is None
    assert open80["reopen_count"] == 0
    assert open80["fingerprint"] == {"http_server": "bintec httpd"}

    old = by_id[bed.ids["office3389_resolved"]]
    assert old["state"] == "resolved"
    assert old["resolved_at"] == rfc3339(bed.scans["office3"])
    again = by_id[bed.ids["office3389"]]
    assert again["state"] == "open"
    assert again["reopen_count"] == 1
    assert again["previous_resolved_at"] == old["resolved_at"]
    assert again["opened_at"] == rfc3339(bed.scans["office4"])

    acked = by_id[bed.ids["office8080"]]
    assert acked["state"] == "acked"
    assert acked["ack_until"] == "2099-06-01T00:00:00Z"
    assert acked["ack_reason"] == "vendor remote support"
    assert by_id[bed.ids["branch22"]]["address"] == BRANCH_ADDR


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--state", "open"], {"office80", "office3389", "branch22"}),
        (["--state", "resolved", "--target", "office"], {"office3389_resolved"}),
        (["--target", "branch"], {"branch22"}),
    ],
)
def test_findings_filters(bed: Bed, args: list[str], expected: set[str]) -> None:
    """--state and --target select exactly the matching findings."""
    doc = cli_json("findings", "-c", str(bed.config), "--json", *args)
    assert {f["id"] for f in doc["findings"]} == {bed.ids[label] for label in expected}


def test_findings_limit_paginates(bed: Bed) -> None:
    """--limit cuts a page and prints a `next` cursor; --cursor continues to the last page."""
    first = cli_json("findings", "-c", str(bed.config), "--json", "--limit", "3")
    assert len(first["findings"]) == 3
    assert first["next"] is not None
    rest = cli_json(
        "findings", "-c", str(bed.config), "--json", "--limit", "3", "--cursor", str(first["next"])
    )
    assert rest["next"] is None
    ids = [f["id"] for f in first["findings"] + rest["findings"]]
    assert ids == sorted(bed.ids.values(), reverse=True)  # every finding once, newest first


def test_findings_limit_beyond_a_page_is_a_usage_error(bed: Bed) -> None:
    """A --limit above the store's page size is refused on one line, not a traceback."""
    line = one_error_line(run_cli("findings", "-c", str(bed.config), "--limit", "5000"))
    assert "--limit" in line


def test_unusable_state_dir_is_one_line(tmp_path: Path) -> None:
    """A state_dir that cannot be created fails with one line naming it, not a traceback."""
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    config = tmp_path / "elsewhere.toml"
    config.write_text(CONFIG.replace('"state"', f'"{blocker / "state"}"'), encoding="utf-8")
    proc = run_cli("status", "-c", str(config))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(blocker) in lines[0]


# ------------------------------------------------------------------------------------- ack


def test_ack_with_a_duration(bed: Bed) -> None:
    """ack --until 7d: listed as acked with expiry and reason, and stored for the daemon."""
    finding_id = bed.ids["office80"]
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    proc = run_cli(
        "ack", str(finding_id), "-c", str(bed.config), "--until", "7d", "--reason", "maintenance"
    )
    after = dt.datetime.now(dt.UTC)
    assert proc.returncode == 0, proc.stderr
    assert f"finding {finding_id} (office 80/tcp) acked until" in proc.stdout

    doc = cli_json("findings", "-c", str(bed.config), "--state", "acked", "--json")
    by_id = {f["id"]: f for f in doc["findings"]}
    assert set(by_id) == {finding_id, bed.ids["office8080"]}
    mine = by_id[finding_id]
    assert mine["ack_reason"] == "maintenance"
    until = dt.datetime.fromisoformat(mine["ack_until"])
    assert before + dt.timedelta(days=7) <= until <= after + dt.timedelta(days=7)
    assert mine["ack_until"] in proc.stdout

    finding, state = stored_finding(bed.state_dir, finding_id)
    assert finding is not None
    assert finding.state is FindingState.ACKED
    assert finding.ack_reason == "maintenance"
    assert state.findings[80].state is FindingState.ACKED  # what the next scan starts from
    assert state.findings[80].ack_until == finding.ack_until


def test_ack_with_an_iso_date(bed: Bed) -> None:
    """ack --until YYYY-MM-DD: a date without a time or zone means midnight UTC."""
    finding_id = bed.ids["branch22"]
    # 100 days ahead: within the one-year cap on acks whenever the test runs.
    day = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=100)
    proc = run_cli(
        "ack", str(finding_id), "-c", str(bed.config), "--until", day.isoformat(), "--reason", "lab"
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{day.isoformat()}T00:00:00Z" in proc.stdout
    finding, _ = stored_finding(bed.state_dir, finding_id)
    assert finding is not None
    assert finding.state is FindingState.ACKED
    assert finding.ack_until == dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    assert finding.ack_reason == "lab"


@pytest.mark.parametrize(
    ("label", "until", "reason", "needle"),
    [
        (None, "7d", "maintenance", "no finding with id 999999"),
        ("office3389_resolved", "7d", "maintenance", "is resolved"),
        ("office80", "2001-01-01", "maintenance", "'2001-01-01' is not in the future"),
        ("office80", "0s", "maintenance", "'0s' is not in the future"),
        ("office80", "7d", "   ", "--reason"),
        ("office80", "7d", "\x1b[2Jgone\x07", "--reason"),
        ("office80", "7d", "x" * 5000, "longer than 1000 characters"),
        ("office80", "7d", "ok \u202eevil", "U+202E"),
        ("office80", "9999-12-31", "maintenance", "at most 365 days"),
        ("office80", "366d", "maintenance", "at most 365 days"),
    ],
    ids=[
        "unknown-id",
        "resolved",
        "past-date",
        "zero-duration",
        "empty-reason",
        "escape-and-bel",
        "5000-characters",
        "bidi-override",
        "year-9999",
        "366-days",
    ],
)
def test_ack_refusals(bed: Bed, label: str | None, until: str, reason: str, needle: str) -> None:
    """A refused ack exits 2 with one line saying why, and changes nothing in the store."""
    finding_id = 999999 if label is None else bed.ids[label]
    rows_before = findings_rows(bed.state_dir)
    proc = run_cli(
        "ack", str(finding_id), "-c", str(bed.config), "--until", until, "--reason", reason
    )
    assert needle in one_error_line(proc)
    assert findings_rows(bed.state_dir) == rows_before


def test_read_commands_never_create_the_database(tmp_path: Path) -> None:
    """status/findings before the daemon's first run: one line, exit 1, and no database made
    (under DynamicUser= a root-run command would otherwise leave a root-owned one)."""
    config = tmp_path / "config.toml"
    config.write_text(CONFIG, encoding="utf-8")
    for command in ("status", "findings"):
        proc = run_cli(command, "-c", str(config))
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines() == [
            f"exposuremon: error: no database at {db_path(tmp_path / 'state')}: the daemon "
            "has not run with this state_dir"
        ]
    assert not (tmp_path / "state").exists()


# ------------------------------------------------------------------------------------ run


def test_run_with_the_listen_port_taken_is_one_line(tmp_path: Path) -> None:
    """`run` whose listen port is in use: exit 2, one line naming http.listen, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, [{"name": "lo", "address": "127.0.0.1"}], sentinel="1h")
        config.write_text(config.read_text().replace("127.0.0.1:0", f"127.0.0.1:{port}"))
        line = one_error_line(run_cli("run", "-c", str(config)))
    assert f"http.listen 127.0.0.1:{port}" in line
    assert "in use" in line


def test_run_with_an_uncreatable_state_dir_is_one_line(tmp_path: Path) -> None:
    """`run` whose state_dir cannot be made (a file is in the way): exit 2, one line, no trace."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory\n")
    config = write_config(tmp_path, [{"name": "lo", "address": "127.0.0.1"}], sentinel="1h")
    state = tmp_path / "state"
    config.write_text(config.read_text().replace(str(state), str(blocker / "state")))
    line = one_error_line(run_cli("run", "-c", str(config)))
    assert f"daemon.state_dir {blocker / 'state'}" in line
