"""`check-config` with address ranges and a targets file, as a user runs it."""

from __future__ import annotations

from pathlib import Path

from tests.cli.test_daemon_commands import run_cli

RANGE_CONFIG = """
[daemon]
targets_file = "targets.csv"

[[targets]]
name = "shop"
address = "203.0.113.0/24"
expected_open = "443"

[[targets]]
name = "gw"
address = "198.51.100.1"
"""


def test_check_config_prints_the_expanded_count(tmp_path: Path) -> None:
    """The ok line counts the targets after expansion and says where they came from; the
    range's private-address warning comes once."""
    config = tmp_path / "config.toml"
    config.write_text(RANGE_CONFIG.replace("203.0.113.0/24", "10.20.0.0/20"))
    (tmp_path / "targets.csv").write_text(
        "name,address,expected_open,ignore\nbranch,192.0.2.0/30,,\nlab,192.0.2.44,22,\n"
    )
    proc = run_cli("check-config", "-c", str(config))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        f"{config}: ok, 4102 targets (2 address ranges expanded to 4100; 5 from "
        f"{tmp_path / 'targets.csv'}), 0 channels\n"
    )
    warnings = proc.stderr.splitlines()
    assert [w for w in warnings if "10.20." in w] == [
        f"{config}: warning: targets[0].address: range 10.20.0.0/20: 10.20.0.0 is a private "
        "address; scanning your own WAN from inside the LAN goes through hairpin NAT and shows "
        "the wrong side; run exposuremon from a vantage point outside the monitored network"
    ]


def test_check_config_reports_every_bad_line_of_the_file(tmp_path: Path) -> None:
    """Bad lines of the targets file and a range over the limit: exit 2, one line each, with
    the file and line number, no traceback."""
    config = tmp_path / "config.toml"
    config.write_text(RANGE_CONFIG.replace("203.0.113.0/24", "203.0.96.0/19"))
    (tmp_path / "targets.csv").write_text(
        "name,address,expected_open,ignore\nok,192.0.2.1,,\ngw,192.0.2.2,,\nbad,192.0.2.3,80-70,\n"
    )
    proc = run_cli("check-config", "-c", str(config))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"{config}: targets[0].address: range 203.0.96.0/19 has 8192 addresses; at most 4096 "
        "(IPv4 /20, IPv6 /116)",
        f"{config}: targets.csv:4: expected_open: bad port spec token '80-70': "
        "range end 70 is below start 80",
        f"{config}: targets.csv:3: name: target name 'gw' is also targets[1] of the config file",
    ]
