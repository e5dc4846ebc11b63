"""`[daemon] targets_file`: targets from a CSV file, with errors that give the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from exposuremon.config.fields import ConfigError
from exposuremon.config.models import load_config
from exposuremon.config.targets_file import parse_targets_csv

HEADER = "name,address,expected_open,ignore\n"


def write(tmp_path: Path, csv_text: str, toml: str = "") -> Path:
    """A config naming `targets.csv` (relative) with `csv_text` in it; the config's path."""
    (tmp_path / "targets.csv").write_text(csv_text, encoding="utf-8")
    config = tmp_path / "config.toml"
    config.write_text('[daemon]\ntargets_file = "targets.csv"\n' + toml, encoding="utf-8")
    return config


def errors(config: Path) -> list[str]:
    """The problems load_config reports for the config."""
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    return caught.value.errors


def test_targets_from_the_file_follow_those_of_the_config(tmp_path: Path) -> None:
    """The file's lines add targets after the TOML's, with port lists in the config's syntax."""
    text = (
        HEADER
        + "# one router a line\n"
        + 'office,198.51.100.7,"443,8080-8081",22\n'
        + "\n"
        + "branch,router.example.net,,\n"
    )
    toml = '[[targets]]\nname = "gw"\naddress = "192.0.2.1"\n'
    config = load_config(write(tmp_path, text, toml))
    assert [(t.name, t.address) for t in config.targets] == [
        ("gw", "192.0.2.1"),
        ("office", "198.51.100.7"),
        ("branch", "router.example.net"),
    ]
    office = config.targets[1]
    assert office.expected_open == frozenset({443, 8080, 8081})
    assert office.ignore == frozenset({22})
    assert office.origin == "targets.csv:3"
    assert config.daemon.targets_file == tmp_path / "targets.csv"


def test_the_file_alone_is_enough(tmp_path: Path) -> None:
    """A config without [[targets]] is valid when its targets file has some."""
    config = load_config(write(tmp_path, "name,address\nr1,192.0.2.1\n"))
    assert [t.name for t in config.targets] == ["r1"]


def test_a_range_in_the_file_expands(tmp_path: Path) -> None:
    """A CIDR address in the file becomes one target per address too."""
    config = load_config(write(tmp_path, HEADER + "shop,203.0.113.8/30,443,\n"))
    assert [t.name for t in config.targets] == [f"shop-203.0.113.{i}" for i in range(8, 12)]
    assert all(t.expected_open == frozenset({443}) for t in config.targets)


def test_columns_in_any_order_and_a_byte_order_mark(tmp_path: Path) -> None:
    """The header names the columns in any order; a spreadsheet's BOM is ignored."""
    config = load_config(write(tmp_path, "\ufeffaddress,ignore,name\n192.0.2.9,23,r9\n"))
    (target,) = config.targets
    assert (target.name, target.address, target.ignore) == ("r9", "192.0.2.9", frozenset({23}))


def test_line_errors_name_the_file_and_line(tmp_path: Path) -> None:
    """Each bad line is reported with the file as written in the config and its line number."""
    text = (
        HEADER
        + "ok,192.0.2.1,,\n"  # 2
        + "r2,192.0.2.2,443,8080,22\n"  # 3: a port list with commas, unquoted
        + "r3,999.1.1.1,70000,\n"  # 4
        + "r4,10.0.0.0/8,,\n"  # 5
        + "ok,192.0.2.5,,\n"  # 6: the name of line 2
        + ",192.0.2.6,,\n"  # 7: no name
        + 'r7,"192.0.2.7,,\n'  # 8: an open quote
        + "r8,192.0.2.8,443,443\n"  # 9
    )
    assert errors(write(tmp_path, text)) == [
        "targets.csv:3: expected 4 fields (name,address,expected_open,ignore), got 5 "
        '(quote a port list that has commas: "443,8080-8090")',
        "targets.csv:8: not a CSV line: unexpected end of data",
        "targets.csv:4: address: not an IP address or hostname: '999.1.1.1' "
        "(write it without scheme, port or path)",
        "targets.csv:4: expected_open: bad port spec token '70000': port 70000 out of range "
        "(1-65535)",
        "targets.csv:5: address: range 10.0.0.0/8 has 16777216 addresses; at most 4096 "
        "(IPv4 /20, IPv6 /116)",
        "targets.csv:7: name: required key is missing",
        "targets.csv:9: ignore: ports 443 are also in expected_open",
        "targets.csv:6: name: duplicate target name 'ok' (also targets.csv:2)",
    ]


def test_a_name_in_both_files_is_an_error(tmp_path: Path) -> None:
    """A target name in the config and in the targets file is refused, naming both."""
    toml = '[[targets]]\nname = "gw"\naddress = "192.0.2.1"\n'
    assert errors(write(tmp_path, HEADER + "gw,192.0.2.2,,\n", toml)) == [
        "targets.csv:2: name: target name 'gw' is also targets[0] of the config file"
    ]


def test_a_range_in_the_file_clashing_with_the_config(tmp_path: Path) -> None:
    """A file range making a name of the config's is an error naming the line and the entry."""
    toml = '[[targets]]\nname = "b-192.0.2.1"\naddress = "198.51.100.1"\n'
    assert errors(write(tmp_path, HEADER + "b,192.0.2.0/31,,\n", toml)) == [
        "targets.csv:2: address: range 192.0.2.0/31 makes target 'b-192.0.2.1', a name "
        "targets[0] has already"
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "targets.csv: no header line (name,address,expected_open,ignore)"),
        ("# only a comment\n", "targets.csv: no header line (name,address,expected_open,ignore)"),
        (
            "name,adress\n",
            "targets.csv:1: unknown column 'adress' in the header "
            "(columns: name,address,expected_open,ignore)",
        ),
        (
            "name,ignore\n",
            "targets.csv:1: the header has no 'address' column "
            "(columns: name,address,expected_open,ignore)",
        ),
        ("name,address,name\n", "targets.csv:1: column 'name' appears twice in the header"),
    ],
)
def test_header_errors(tmp_path: Path, text: str, problem: str) -> None:
    """A missing or wrong header is one error at its line (and no targets is another)."""
    assert errors(write(tmp_path, text)) == [
        problem,
        "targets: at least one [[targets]] table is required",
    ]


def test_an_unreadable_file(tmp_path: Path) -> None:
    """A targets file that cannot be read is an error of the key, with the path and reason."""
    config = tmp_path / "config.toml"
    config.write_text(
        '[daemon]\ntargets_file = "missing.csv"\n[[targets]]\nname = "a"\naddress = "192.0.2.1"\n'
    )
    assert errors(config) == [
        f"daemon.targets_file: cannot read {tmp_path / 'missing.csv'}: No such file or directory"
    ]
    (tmp_path / "missing.csv").write_bytes(b"name,address\nr\xff,192.0.2.1\n")
    (line,) = errors(config)
    assert line.startswith(f"daemon.targets_file: cannot read {tmp_path / 'missing.csv'}: ")
    assert "utf-8" in line


def test_a_wrong_key_type_is_reported_by_its_path(tmp_path: Path) -> None:
    """`targets_file = 5` is the model's error, not a read."""
    config = tmp_path / "config.toml"
    config.write_text(
        '[daemon]\ntargets_file = 5\n[[targets]]\nname = "a"\naddress = "192.0.2.1"\n'
    )
    assert errors(config) == ["daemon.targets_file: expected a non-empty path string"]


def test_a_quoted_field_may_not_run_past_its_line() -> None:
    """A quote left open is an error of its line, not a merge with the next lines."""
    rows, problems = parse_targets_csv('name,address\n"a\n,192.0.2.1\nb,192.0.2.2\n', "t.csv")
    assert problems == ["t.csv:2: not a CSV line: unexpected end of data"]
    assert [(r.line, r.fields) for r in rows] == [
        (3, {"address": "192.0.2.1"}),
        (4, {"name": "b", "address": "192.0.2.2"}),
    ]
