"""The `exposuremon` entry point and the one-shot `scan` (the daemon's are in `daemon_commands`)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from exposuremon.scan import (
    RATE_MAX,
    RATE_MIN,
    TIMEOUT_MAX,
    TIMEOUT_MIN,
    PortSpecError,
    ScanError,
    ScanOptions,
    ScanResult,
    format_ports,
    parse_ports,
    rate_limit_note,
    result_json,
    result_nmap_xml,
    scan_blocking,
    unexpected_open,
)
from exposuremon.units import format_duration, parse_duration

EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_SCAN_PORTS = "hot,top1000"
DEFAULTS = ScanOptions()


class PortSpec(click.ParamType):  # type: ignore[type-arg]
    """A click parameter holding a parsed port spec."""

    name = "SPEC"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        try:
            return parse_ports(str(value))
        except PortSpecError as exc:
            self.fail(str(exc), param, ctx)


class Duration(click.ParamType):  # type: ignore[type-arg]
    """A click parameter holding seconds parsed from `500ms`, `2s` …, within [low, high]."""

    name = "DURATION"

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        try:
            seconds = parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if not self.low <= seconds <= self.high:
            low, high = format_duration(self.low), format_duration(self.high)
            self.fail(f"must be between {low} and {high}, got {value!r}", param, ctx)
        return seconds


class Number(click.ParamType):  # type: ignore[type-arg]
    """A finite number within [low, high] (click's FloatRange lets `nan` through)."""

    name = "NUMBER"

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or not self.low <= number <= self.high:
            low, high = f"{self.low:.0f}", f"{self.high:.0f}"  # whole bounds: 1000000, not 1e+06
            self.fail(f"must be between {low} and {high}, got {value!r}", param, ctx)
        return number


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="exposuremon")
def cli() -> None:
    """Watch the internet-facing TCP ports of routers and firewalls."""


@cli.command()
@click.argument("host")
@click.option(
    "-p",
    "--ports",
    type=PortSpec(),
    default=DEFAULT_SCAN_PORTS,
    show_default=True,
    help="Port spec: 80,443  80-89  1-65535  top1000  hot, comma-separated.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "nmap-xml"]),
    default=None,
    help="Output: a table (default), one JSON object, or nmap's XML (for ndiff and importers).",
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option(
    "-oX",
    "xml_file",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default=None,
    help="Also write nmap's XML to this file ('-': standard output), as nmap -oX does.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 65535),
    default=DEFAULTS.concurrency,
    show_default=True,
    help="Most probes in flight to this host.",
)
@click.option(
    "--timeout-max",
    type=Duration(TIMEOUT_MIN, TIMEOUT_MAX),
    default=f"{DEFAULTS.timeout_max}s",
    show_default=True,
    help="Longest wait for one probe's answer (10ms-60s).",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 10),
    default=DEFAULTS.retries,
    show_default=True,
    help="Extra attempts for unanswered probes.",
)
@click.option(
    "--rate",
    type=Number(RATE_MIN, RATE_MAX),
    default=None,
    help="Most new connections per second (politeness), 1-1000000.",
)
@click.option(
    "--expect-open",
    type=PortSpec(),
    default=None,
    help="Ports that should be open; exit 1 if any other port is open.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 16),
    default=None,
    help="Processes to share a big scan across  [default: one per core for 8192+ ports]",
)
def scan(
    host: str,
    ports: tuple[int, ...],
    fmt: str | None,
    as_json: bool,
    xml_file: Path | None,
    concurrency: int,
    timeout_max: float,
    retries: int,
    rate: float | None,
    expect_open: tuple[int, ...] | None,
    workers: int | None,
) -> None:
    """Scan HOST once and print its open ports (exit 1: unexpected open port; 2: bad input)."""
    if as_json and fmt not in (None, "json"):
        raise click.UsageError(f"--json contradicts --format {fmt}")
    fmt = "json" if as_json else fmt or "table"
    try:
        options = ScanOptions(
            concurrency=concurrency,
            initial_cwnd=min(DEFAULTS.initial_cwnd, concurrency),
            timeout_max=timeout_max,
            timeout_min=min(DEFAULTS.timeout_min, timeout_max),
            timeout_initial=min(DEFAULTS.timeout_initial, timeout_max),
            retries=retries,
            rate=rate,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    expected = set(expect_open) if expect_open is not None else None
    try:
        if fmt == "table" and sys.stderr.isatty():
            result = _scan_with_progress(host, ports, options, expect_open or (), workers)
        else:
            result = scan_blocking(host, ports, options, hints=expect_open or (), workers=workers)
    except ScanError as exc:
        raise click.UsageError(str(exc)) from exc
    note = rate_limit_note(result)
    if note is not None:
        click.echo(note, err=True)  # for the person at the terminal; --json has the numbers
    if fmt == "nmap-xml" or xml_file is not None:
        args = f"exposuremon scan -p {format_ports(ports)} {host}"
        xml = result_nmap_xml(result, args, _version(), expected)
        if xml_file is not None:
            write_output(xml_file, xml, "-oX")
    if fmt == "json":
        click.echo(json.dumps(result_json(result, expected)))
    elif fmt == "nmap-xml":
        click.echo(xml, nl=False)
    else:
        from rich.console import Console  # rich costs ~40 ms of start-up: only when printing

        from exposuremon.scan import result_table

        Console(soft_wrap=True).print(result_table(result, expected))
    if not result.complete:
        sys.exit(EXIT_INTERRUPTED)
    if unexpected_open(result, expected):
        sys.exit(EXIT_UNEXPECTED)


def _version() -> str:
    from importlib.metadata import version

    return version("exposuremon")


def write_output(path: Path, text: str, option: str) -> None:
    """Write an output file (`-`: standard output); a failure is one line naming `option`,
    exit 1 (`scan -oX`, `export --output`)."""
    if str(path) == "-":
        click.echo(text, nl=False)
        return
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"{option} {path}: {exc.strerror or exc}") from None


def _scan_with_progress(
    host: str,
    ports: tuple[int, ...],
    options: ScanOptions,
    hints: tuple[int, ...],
    workers: int | None,
) -> ScanResult:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"scanning {host}", total=len(ports))
        return scan_blocking(
            host,
            ports,
            options,
            hints=hints,
            workers=workers,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )


def _add_daemon_commands() -> None:
    # Imported here so that `exposuremon scan` does not pay for the daemon's imports.
    from exposuremon.cli import daemon_commands, maintenance_commands, store_commands

    for command in (
        daemon_commands.run,
        daemon_commands.check_config,
        daemon_commands.status,
        daemon_commands.findings,
        daemon_commands.ack,
        daemon_commands.notify_test,
        daemon_commands.export,
        daemon_commands.fleet,
        maintenance_commands.maintenance,
        store_commands.migrate_store,
    ):
        cli.add_command(command)


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: bad input is one line on stderr and exit code 2, never a traceback."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "scan":
        _add_daemon_commands()
    try:
        cli.main(args=args, prog_name="exposuremon", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(EXIT_INTERRUPTED)
    except click.UsageError as exc:
        click.echo(f"exposuremon: error: {exc.format_message()}", err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        click.echo(f"exposuremon: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(EXIT_OK)
