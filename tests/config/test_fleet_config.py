"""`[fleet]`: node name, vantage, lease time and silence share, with errors naming the key."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from exposuremon.config import ConfigError, parse_config

BASE = Path("/srv/exposuremon")
TARGET = '[[targets]]\nname = "r1"\naddress = "192.0.2.1"\n'


def errors_of(lines: str) -> list[str]:
    """The error lines a `[fleet]` table of `lines` gets."""
    with pytest.raises(ConfigError) as info:
        parse_config(TARGET + "[fleet]\n" + lines, BASE)
    return info.value.errors


def test_defaults_are_the_host_name_and_the_default_vantage() -> None:
    """Without [fleet]: the node is named after the host, vantage "default", 15 s, 0.5."""
    fleet = parse_config(TARGET, BASE).fleet
    assert fleet.node is None
    assert fleet.node_name == re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:64]
    assert (fleet.vantage, fleet.lease_ttl, fleet.vantage_silence_share) == ("default", 15.0, 0.5)
    assert fleet.vantage_min_targets == 3


def test_every_key_is_read() -> None:
    """Each key as written in the design's example."""
    text = 'node = "scan-fra-1"\nvantage = "fra"\nlease_ttl = "30s"\nvantage_silence_share = 1\n'
    fleet = parse_config(TARGET + "[fleet]\n" + text, BASE).fleet
    assert (fleet.node_name, fleet.vantage, fleet.lease_ttl) == ("scan-fra-1", "fra", 30.0)
    assert fleet.vantage_silence_share == 1.0
    more = parse_config(TARGET + "[fleet]\nvantage_min_targets = 10\n", BASE).fleet
    assert more.vantage_min_targets == 10


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        ('lease_ttl = "1s"', "fleet.lease_ttl: must be at least 3s (a database hiccup"),
        ('lease_ttl = "1h"', "fleet.lease_ttl: must be at most 10m"),
        ("lease_ttl = true", "fleet.lease_ttl: expected a duration"),
        (
            "vantage_min_targets = 1",
            "fleet.vantage_min_targets: must be greater than or equal to 2",
        ),
        ("vantage_min_targets = true", "fleet.vantage_min_targets: expected an integer"),
        ("vantage_silence_share = 0", "fleet.vantage_silence_share: must be a share in (0, 1]"),
        ("vantage_silence_share = 1.5", "fleet.vantage_silence_share: must be a share in (0, 1]"),
        ("vantage_silence_share = nan", "fleet.vantage_silence_share: must be a share in (0, 1]"),
        ('vantage_silence_share = "half"', "fleet.vantage_silence_share: expected a number"),
        ('node = "scan fra"', "fleet.node: must be 1-64 characters of A-Z a-z 0-9 . _ -"),
        ('vantage = ""', "fleet.vantage: must be 1-64 characters"),
        ("nodes = 3", "fleet.nodes:"),
    ],
)
def test_bad_values_get_one_line_naming_the_key(lines: str, error: str) -> None:
    """A bad value is one error line that starts with the key path."""
    errors = errors_of(lines + "\n")
    assert len(errors) == 1, errors
    assert errors[0].startswith(error), errors
