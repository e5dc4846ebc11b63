"""systemd/exposuremon.service: what systemd-analyze says about it, and what it promises."""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from exposuremon.config.models import ScanConfig
from exposuremon.scan.engine import socket_budget

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "exposuremon.service"
MAX_EXPOSURE = 1.5  # systemd-analyze calls up to 1.9 "OK"; we keep headroom below that

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (apt-get install systemd)",
)


def directives(text: str) -> dict[str, list[str]]:
    """`Key` → its values in order (`Section.Key` is not needed: keys are unique here)."""
    found: dict[str, list[str]] = collections.defaultdict(list)
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found[key.strip()].append(value.strip())
    return found


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    """Run systemd-analyze (PID 1 need not be systemd for these)."""
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=60, check=False
    )


def rendered_unit(tmp_path: Path) -> Path:
    """The unit as install.sh writes it for a PREFIX under tmp_path, with ExecStart present."""
    prefix = tmp_path / "opt" / "exposuremon"
    (prefix / "bin").mkdir(parents=True)
    exe = prefix / "bin" / "exposuremon"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    env = {**os.environ, "PREFIX": str(prefix), "CONF_DIR": str(tmp_path / "etc")}
    done = subprocess.run(
        ["sh", str(ROOT / "deploy" / "install.sh"), "unit"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env=env,
    )
    path = tmp_path / "exposuremon.service"
    path.write_text(done.stdout)
    return path


def test_the_service_contract() -> None:
    """Type=notify with the watchdog, SIGHUP reload, restart on failure, its own directories."""
    unit = directives(UNIT.read_text())
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert unit["WatchdogSec"] == ["30s"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["ExecStart"] == [
        "/opt/exposuremon/bin/exposuremon run -c /etc/exposuremon/config.toml"
    ]
    assert unit["DynamicUser"] == ["yes"]
    assert unit["StateDirectory"] == ["exposuremon"]
    assert unit["ConfigurationDirectory"] == ["exposuremon"]
    assert unit["WantedBy"] == ["multi-user.target"]


def test_sandbox_settings() -> None:
    """No capabilities, read-only system, only IP and local sockets, a syscall allow list."""
    unit = directives(UNIT.read_text())
    assert unit["CapabilityBoundingSet"] == [""]
    assert unit["AmbientCapabilities"] == [""]
    assert unit["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert unit["SystemCallFilter"][0] == "@system-service"
    for key in (
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "MemoryDenyWriteExecute",
        "NoNewPrivileges",
    ):
        assert unit[key] == ["yes"], key
    assert unit["ProtectSystem"] == ["strict"]


def test_file_limit_covers_the_default_scan_pool() -> None:
    """LimitNOFILE= leaves the scan engine room for every scan's pool at the defaults."""
    limit = int(directives(UNIT.read_text())["LimitNOFILE"][0])
    defaults = ScanConfig()
    assert socket_budget(limit) >= defaults.concurrency * defaults.max_concurrent_scans


@needs_analyze
def test_security_exposure_is_ok() -> None:
    """`systemd-analyze security --offline=yes` rates the unit at most 1.5 ("OK")."""
    done = analyze("security", "--offline=yes", "--no-pager", str(UNIT))
    assert done.returncode == 0, done.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?) (\w+)", done.stdout)
    assert match is not None, done.stdout
    assert float(match[1]) <= MAX_EXPOSURE, done.stdout
    assert match[2] == "OK"


@needs_analyze
def test_verify_is_clean(tmp_path: Path) -> None:
    """`systemd-analyze verify` on the installed form of the unit prints nothing at all."""
    done = analyze("verify", "--man=no", str(rendered_unit(tmp_path)))
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@needs_analyze
def test_verify_would_notice_a_mistake(tmp_path: Path) -> None:
    """The check above has teeth: a mistyped value or key is reported."""
    good = rendered_unit(tmp_path)
    bad = tmp_path / "bad.service"
    bad.write_text(
        good.read_text()
        .replace("Type=notify\n", "Type=notfy\n")
        .replace("ProtectHome=yes", "ProtectHomes=yes")
    )
    done = analyze("verify", "--man=no", str(bad))
    output = done.stdout + done.stderr
    assert "notfy" in output
    assert "ProtectHomes" in output
