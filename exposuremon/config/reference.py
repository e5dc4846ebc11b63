"""The configuration reference (docs/config.md), generated so that it cannot drift.

Keys, types, defaults and sections come from the pydantic models in config.py; each key's
description is the comment above it in config.example.toml, which a test already keeps
complete (and which anyone adding a key edits anyway). `python -m exposuremon.config.reference`
prints the Markdown; `make docs` writes docs/config.md and tests/config/test_reference.py fails when
the committed file differs from what this prints.
"""

from __future__ import annotations

import enum
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from exposuremon.config.fields import DEFAULT_QUICK, TOKEN_ENV, duration_text
from exposuremon.config.models import Config
from exposuremon.scan import HOT_PORTS, format_ports

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"

# What a field's parser accepts, by the parser's name (config_fields.py).
_PARSER_TYPES = {
    "_port_set": "port spec or list",
    "_path": "path",
    "_name": "name",
    "_env_name": "environment variable name",
    "_positive_number": "number > 0",
    "parse_listen": '`"HOST:PORT"` (IPv6 as `"[::1]:PORT"`)',
    "parse_address": "IP address or hostname",
    "parse_target_address": "IP address, hostname or CIDR range",
    "parse_public_url": "http(s) URL",
    "parse_http_url": "http(s) URL",
    "parse_secret_url": "http(s) URL (a secret)",
    "parse_store_url": "`postgresql://` or `sqlite:////` URL (a secret)",
    "parse_share": "share 0.1-1",
    "parse_jitter": 'fraction (`0.1`) or percentage (`"10%"`), at most 0.5',
    "parse_severity": '`"info"`, `"warning"` or `"critical"`',
    "parse_rfc3339": "RFC 3339 time with offset (TOML date-time or string)",
    "_cron": 'crontab expression (`"0 2 * * SUN"`, weekdays as names)',
    "_zone_name": 'IANA time zone (`"Europe/Berlin"`)',
}
_KEY = re.compile(r"^[#\s]*([A-Za-z_][A-Za-z0-9_]*) = ")
_HEADER = re.compile(r"^[#\s]*\[\[?([A-Za-z_][A-Za-z0-9_.]*)\]\]?\s*$")
_DEFAULT_NOTE = re.compile(r"\s*\bDefaults?:.*$", re.DOTALL)


def example_descriptions(text: str) -> dict[str, str]:
    """`table.key` → the comment block above that key in config.example.toml.

    Keys written one after another share the block above the first (timeout_min/_max/...);
    a blank line or a table header ends a block. The block's "Default: ..." note is dropped:
    defaults come from the models.
    """
    found: dict[str, str] = {}
    table = ""
    block: list[str] = []
    after_key = False
    for raw in text.splitlines():
        line = raw.strip()
        header = _HEADER.match(line)
        key = _KEY.match(line)
        if not line or header:
            table = header[1] if header else table
            block, after_key = [], False
        elif key:
            description = _DEFAULT_NOTE.sub("", " ".join(block)).strip()
            found.setdefault(f"{table}.{key[1]}".lstrip("."), description)
            after_key = True
        else:
            if after_key:  # a new block after keys: theirs is done
                block, after_key = [], False
            block.append(line.lstrip("# ").strip())
    return found


def _unwrap(annotation: Any) -> tuple[Any, list[Any], bool]:
    """(base type, Annotated metadata, optional) of an annotation such as `X | None`."""
    metadata: list[Any] = []
    optional = False
    for _ in range(10):  # bounded: annotations nest a few levels at most
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation, *extra = typing.get_args(annotation)
            metadata += extra
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            optional = optional or len(args) < len(typing.get_args(annotation))
            annotation = args[0] if len(args) == 1 else annotation
            if len(args) != 1:
                break
        else:
            break
    return annotation, metadata, optional


def type_text(field: FieldInfo) -> str:
    """A short human description of what a key accepts."""
    base, metadata, _ = _unwrap(field.annotation)
    metadata = [*field.metadata, *metadata]
    # Constraints inside `Annotated[int, Field(ge=1)]` sit in a FieldInfo of their own.
    metadata += [m for item in metadata if isinstance(item, FieldInfo) for m in item.metadata]
    for item in metadata:
        func = getattr(item, "func", None)
        describe = getattr(func, "describe", None)
        if describe is not None:  # a bounded parser says what it accepts, bounds included
            return str(describe())
        name = getattr(func, "__name__", "")
        if name in _PARSER_TYPES:
            return _PARSER_TYPES[name]
    if typing.get_origin(base) is Literal:
        choices = [f'`"{v}"`' for v in typing.get_args(base)]
        return ", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else choices[0]
    bounds = {
        kind: getattr(item, kind)
        for item in metadata
        for kind in ("ge", "le")
        if getattr(item, kind, None) is not None
    }
    if base is bool:
        return "`true` or `false`"
    if base is int:
        if "ge" in bounds and "le" in bounds:
            return f"integer {bounds['ge']}-{bounds['le']}"
        return f"integer ≥ {bounds['ge']}" if "ge" in bounds else "integer"
    if typing.get_origin(base) is tuple:
        return "list of strings"
    if typing.get_origin(base) is dict:
        return "inline table of strings"
    if base is str:
        return "string"
    for item in metadata:  # a parser we have no words for: name it after itself
        name = getattr(getattr(item, "func", None), "__name__", "")
        if name:
            return name.removeprefix("parse_").strip("_").replace("_", " ")
    return getattr(base, "__name__", str(base))


def default_text(field: FieldInfo) -> str:
    """The default as it would be written in the file (or `required`, `not set`)."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is PydanticUndefined or value is None:
        return "not set"
    if type_text(field).startswith("duration"):
        return f'`"{duration_text(float(value))}"`'
    if isinstance(value, tuple) and not value:
        return "`[]`"
    if isinstance(value, frozenset):
        if value == DEFAULT_QUICK:
            return '`"top1000,hot"`'
        return f'`"{format_ports(value)}"`' if value else "`[]`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, enum.Enum):
        return f'`"{getattr(value, "label", value.name.lower())}"`'
    if isinstance(value, str | Path):
        return f'`"{value}"`'
    return f"`{value}`"


def _sections(
    model: type[BaseModel], table: str
) -> Iterator[tuple[str, type[BaseModel], list[tuple[str, FieldInfo]]]]:
    """(table, model, its scalar keys) for the model and every table nested in it."""
    scalars = []
    nested = []
    for name, field in model.model_fields.items():
        base, _, _ = _unwrap(field.annotation)
        inner = typing.get_args(base)[0] if typing.get_origin(base) is tuple else base
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            nested.append((f"{table}.{name}".lstrip("."), inner))
        else:
            scalars.append((name, field))
    if table:
        yield table, model, scalars
    for sub_table, sub_model in nested:
        yield from _sections(sub_model, sub_table)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(example_text: str | None = None) -> str:
    """docs/config.md."""
    text = EXAMPLE.read_text(encoding="utf-8") if example_text is None else example_text
    descriptions = example_descriptions(text)
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m exposuremon.config.reference` (`make docs`) from the models",
        "in exposuremon/config/models.py and the comments of config.example.toml.",
        "Do not edit by hand. -->",
        "",
        "One TOML file, by default `/etc/exposuremon/config.toml`; check it with",
        "`exposuremon check-config -c FILE` (exit 0 valid, 2 with one line per problem). Unknown",
        "keys are errors that name the key path, e.g.",
        "`targets[2].expected_open: bad port spec token '70000': port 70000 out of range`.",
        "`config.example.toml` shows every key with its default. A running daemon re-reads the",
        "file on `systemctl reload exposuremon` (SIGHUP); a file with errors is refused and the",
        "running configuration stays.",
        "",
        "",
        'Types: a *duration* is a number with a unit, `"250ms"`, `"30s"`, `"15m"`, `"24h"`,',
        '`"90d"`; a *port spec* is a string like `"443,8080-8090"`, `"top1000"` (nmap\'s 1000',
        f'most common TCP ports) or `"hot"` ({format_ports(HOT_PORTS).replace(",", ", ")}),',
        'or a list mixing numbers and specs, `[443, "8080-8090"]`; a *path* is relative to the',
        "config file's directory unless absolute; a *name* is 1-64 characters of",
        "`A-Z a-z 0-9 . _ -`.",
        "",
        "Address ranges: a `[[targets]]` `address` (or a targets file's) may be a CIDR block,",
        '`"203.0.113.8/29"`: it expands to one target per address, network and broadcast',
        "addresses included, named `NAME-ADDRESS` (IPv6 colons replaced by `-`:",
        "`lab-2001-db8--1`) with the entry's policy. At most 4096 addresses (IPv4 `/20`, IPv6",
        "`/116`); a larger block, a name made twice or a `NAME-ADDRESS` longer than 64",
        "characters is an error. `check-config` prints how many targets the ranges made.",
        "",
        "Targets file (`[daemon] targets_file`): CSV, UTF-8, a header line naming the columns",
        "`name,address,expected_open,ignore` in any order (name and address required), then one",
        "target a line; blank lines and lines starting with `#` are skipped. Port lists use the",
        'port-spec syntax, quoted when they have commas: `office,198.51.100.7,"443,8080-8090",22`.',
        "Errors give the file and line, e.g. `targets.csv:7: address: not an IP address ...`.",
        "",
        f"Environment: `{TOKEN_ENV}` holds the API token (it takes precedence over",
        "`[http] token_file`); `[[notify]]` channels name their own variables in `url_env` and",
        "`secret_env`, and `[store] url_env` names the one holding the database URL.",
    ]
    for table, model, keys in _sections(Config, ""):
        array = table in ("targets", "notify", "advisories", "maintenance")
        header = f"[[{table}]]" if array else f"[{table}]"
        intro = (model.__doc__ or "").strip().splitlines()[0]
        intro = re.sub(r"^`[^`]*`:\s*", "", intro)
        out += ["", f"## `{header}`", "", intro[:1].upper() + intro[1:], ""]
        out += ["| key | type | default | description |", "|---|---|---|---|"]
        for name, field in keys:
            description = descriptions.get(f"{table}.{name}", "")
            if table.startswith("targets.") and not description:
                base = table.split(".", 1)[1]
                description = f"This target's value of `[{base}] {name}`."
            row = [f"`{name}`", type_text(field), default_text(field), description]
            out.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(out) + "\n"


def undocumented(example_text: str | None = None) -> list[str]:
    """Keys whose description is missing: add a comment above them in config.example.toml."""
    text = EXAMPLE.read_text(encoding="utf-8") if example_text is None else example_text
    descriptions = example_descriptions(text)
    return [
        f"{table}.{name}"
        for table, _, keys in _sections(Config, "")
        for name, _ in keys
        if not table.startswith("targets.") and not descriptions.get(f"{table}.{name}")
    ]


def main() -> None:
    """Print docs/config.md."""
    print(render(), end="")


if __name__ == "__main__":
    main()
