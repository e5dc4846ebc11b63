"""`[daemon] targets_file`: targets from a CSV file, for operators with thousands of routers.

The file has a header line naming its columns, `name,address,expected_open,ignore` (name and
address required, the port columns optional and empty for none), then one target a line.
Port lists use the config's port-spec syntax; a list with commas is quoted as CSV quotes any
field: `shop,203.0.113.8/29,"443,8080-8090",`. Blank lines and lines starting with `#` are
skipped; a byte order mark (a spreadsheet's export) is ignored. Every problem names the file
and line. Parsing is pure; `read_targets_file` is the one read.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

COLUMNS = ("name", "address", "expected_open", "ignore")
REQUIRED = ("name", "address")
MAX_BYTES = 64 * 1024 * 1024  # ~1M lines: far past any fleet, short of exhausting memory


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    """One target line: its line number and its non-empty fields by column."""

    line: int
    fields: dict[str, str]


def parse_targets_csv(text: str, source: str) -> tuple[list[Row], list[str]]:
    """The rows of a targets file and the problems found, each `SOURCE:LINE: problem`."""
    text = text.removeprefix("\ufeff")
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1)]
    kept = [(n, line) for n, line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not kept:
        return [], [f"{source}: no header line ({','.join(COLUMNS)})"]
    header_line, header_text = kept[0]
    header = [c.strip().lower() for c in next(csv.reader([header_text]))]
    problems = _header_problems(header, f"{source}:{header_line}")
    if problems:
        return [], problems
    rows: list[Row] = []
    # Line by line: a quoted field that runs past its line is an error, not a silent merge.
    for number, line in kept[1:]:
        try:
            values = next(csv.reader([line], strict=True))
        except csv.Error as exc:
            problems.append(f"{source}:{number}: not a CSV line: {exc}")
            continue
        if len(values) != len(header):
            problems.append(
                f"{source}:{number}: expected {len(header)} fields ({','.join(header)}), got "
                f'{len(values)} (quote a port list that has commas: "443,8080-8090")'
            )
            continue
        fields = {k: v.strip() for k, v in zip(header, values, strict=True) if v.strip()}
        rows.append(Row(number, fields))
    return rows, problems


def _header_problems(header: list[str], where: str) -> list[str]:
    unknown = [c for c in header if c not in COLUMNS]
    if unknown:
        return [
            f"{where}: unknown column {unknown[0]!r} in the header (columns: {','.join(COLUMNS)})"
        ]
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        return [f"{where}: column {twice[0]!r} appears twice in the header"]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        return [f"{where}: the header has no {missing[0]!r} column (columns: {','.join(COLUMNS)})"]
    return []


def read_targets_file(path: Path) -> str:
    """The file's text; OSError or UnicodeError when it cannot be read, ValueError if huge."""
    with path.open("rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ValueError(f"larger than {MAX_BYTES // (1024 * 1024)} MiB")
    return data.decode("utf-8")
