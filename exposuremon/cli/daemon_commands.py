"""The daemon's commands: `run`, `check-config`, `status`, `findings`, `ack`, `notify-test`,
`export`, `fleet status`.

`status`, `findings`, `ack`, `export` and `fleet status` read and write the daemon's store directly
(SQLite in WAL mode and PostgreSQL allow that while the daemon runs), through the same views
the HTTP API uses.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from exposuremon import acks
from exposuremon.cli.main import write_output
from exposuremon.config import Config, ConfigError, check_warnings, load_config
from exposuremon.model import FindingState
from exposuremon.store import MAX_PAGE, Store, StoreError, db_path
from exposuremon.units import utcnow
from exposuremon.web import (
    EXPORT_FORMATS,
    export_document,
    findings_page,
    fleet_json,
    json_time,
    status_json,
)

T = TypeVar("T")
EXIT_CONFIG = 2
MAX_ID = 2**63 - 1  # SQLite's largest integer id: a bigger one is a typo, not a lookup
NOTIFY_TEST_TIMEOUT = 15.0  # seconds per channel for `notify-test`

config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("/etc/exposuremon/config.toml"),
    show_default=True,
    help="The TOML config file.",
)


def _load(config_path: Path) -> Config:
    """Load the config or exit 2 with one line per problem."""
    try:
        return load_config(config_path)
    except ConfigError as exc:
        for line in exc.errors:
            prefix = "" if line.startswith(str(config_path)) else f"{config_path}: "
            click.echo(f"{prefix}{line}", err=True)
        sys.exit(EXIT_CONFIG)


def _with_store(config: Config, work: Callable[[Store], Awaitable[T]]) -> T:
    """Run `work` on the daemon's store; a missing or unusable store is one line and exit 1."""

    try:
        url = config.store.resolve_url()
    except ConfigError as exc:
        raise click.ClickException("; ".join(exc.errors)) from None

    async def run() -> T:
        if url is None:
            path = db_path(config.daemon.state_dir)
            # Only the daemon creates the database: under systemd's DynamicUser= a database
            # made by a root-run `status` would belong to root.
            if not path.exists():
                raise StoreError(
                    f"no database at {path}: the daemon has not run with this state_dir"
                )
        store = await Store.open(config.daemon.state_dir if url is None else url)
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except (StoreError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # e.g. state_dir not creatable: mkdir runs before SQLite does
        raise click.ClickException(f"state_dir {config.daemon.state_dir}: {exc}") from None


@click.command("check-config")
@config_option
def check_config(config_path: Path) -> None:
    """Validate CONFIG: exit 0 when valid (warnings on stderr), 2 with every problem."""
    config = _load(config_path)
    for warning in check_warnings(config, source=config_path):
        click.echo(f"{config_path}: warning: {warning}", err=True)
    click.echo(
        f"{config_path}: ok, {len(config.targets)} targets{_expansion(config)}, "
        f"{len(config.notify)} channels"
    )


def _expansion(config: Config) -> str:
    """How the targets came about, when not one entry each: ` (3 ranges expanded ...)`."""
    ranges = {t.origin: t.from_range for t in config.targets if t.from_range is not None}
    from_file = sum(1 for t in config.targets if not t.origin.startswith("targets["))
    parts = []
    if ranges:
        expanded = sum(1 for t in config.targets if t.from_range is not None)
        count = f"{len(ranges)} address range" + ("s" if len(ranges) > 1 else "")
        parts.append(f"{count} expanded to {expanded}")
    if from_file:
        parts.append(f"{from_file} from {config.daemon.targets_file}")
    return f" ({'; '.join(parts)})" if parts else ""


@click.command("run")
@config_option
def run(config_path: Path) -> None:
    """Run the daemon until SIGTERM/SIGINT; SIGHUP reloads the config."""
    from exposuremon.logs import configure_logging
    from exposuremon.service import Service, StartError

    config = _load(config_path)
    configure_logging(config.daemon.log_format, config.daemon.log_level)

    async def main() -> None:
        service = Service(config, config_path)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, service.request_stop)
        loop.add_signal_handler(signal.SIGHUP, service.request_reload)
        try:
            await service.start()
            await service.run()
        finally:
            await service.stop()

    try:
        asyncio.run(main())
    except StartError as exc:  # port taken, state_dir not creatable: the key to fix, one line
        click.echo(f"{config_path}: {exc}", err=True)
        sys.exit(EXIT_CONFIG)


@click.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(config_path: Path, as_json: bool) -> None:
    """Each target: up/down, open ports (expected or not), findings, last scans."""
    config = _load(config_path)
    states = _with_store(config, lambda store: store.load_states())
    # The same document as GET /api/v1/targets.
    doc = status_json(config.targets, states)
    docs = doc["targets"]
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("target", "address", "status", "open ports", "findings", "last sentinel")
    for doc in docs:
        ports = ", ".join(
            f"{p['port']}" + ("" if p["expected"] else "!") for p in doc.get("open_ports", [])
        )
        findings = doc.get("findings", {})
        table.add_row(
            doc["name"],
            doc.get("address") or "",
            doc["status"],
            ports or "-",
            f"{findings.get('open', 0)} open, {findings.get('acked', 0)} acked",
            (doc.get("last_scan") or {}).get("sentinel") or "-",
        )
    Console().print(table)
    click.echo("! = unexpected open port")


@click.command("export")
@config_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(EXPORT_FORMATS),
    default="nmap-xml",
    show_default=True,
    help="nmap's XML (for ndiff and importers), JSON, or CSV (one line per port).",
)
@click.option(
    "--target",
    "names",
    multiple=True,
    metavar="NAME",
    help="Only this target, or the targets of a range entry (repeatable).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default=Path("-"),
    help="Write to this file instead of standard output.",
)
def export(config_path: Path, fmt: str, names: tuple[str, ...], output: Path) -> None:
    """The known state of every target (open ports, fingerprints, verdicts) as one document."""
    from importlib.metadata import version

    config = _load(config_path)
    targets = list(config.targets)
    if names:
        # A range entry's name stands for all of its targets, as in [[notify]] targets.
        known = {t.name for t in targets} | {t.range_name for t in targets if t.range_name}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise click.UsageError(f"--target: no target named {', '.join(map(repr, unknown))}")
        wanted = set(names)
        targets = [t for t in targets if t.name in wanted or t.range_name in wanted]
    states = _with_store(config, lambda store: store.states_of([t.name for t in targets]))
    text = export_document(fmt, targets, states, utcnow(), version("exposuremon"))
    write_output(output, text, "--output")


@click.group("fleet")
def fleet() -> None:
    """The fleet: nodes, vantages and shard leases (docs/fleet.md)."""


@fleet.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def fleet_status(config_path: Path, as_json: bool) -> None:
    """Every node (alive, shards held, config differs), vantage and unheld shard."""
    from exposuremon.fleet import fleet_view

    config = _load(config_path)
    snapshot = _with_store(config, lambda store: store.fleet_snapshot())
    # The same document as GET /api/v1/fleet.
    doc = fleet_json(fleet_view(snapshot, config.fleet.lease_ttl))
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not doc["nodes"]:
        click.echo(
            "no node has joined the fleet in this database "
            "(nodes join when the daemon runs; see docs/fleet.md)"
        )
        return
    nodes = Table("node", "vantage", "alive", "last seen", "shards", "version", "config", "started")
    for n in doc["nodes"]:
        nodes.add_row(
            n["node"],
            n["vantage"],
            "yes" if n["alive"] else f"NO ({n['seen_ago']:g}s)",
            n["last_seen"],
            str(n["shards"]),
            n["version"],
            "DIFFERS" if n["config_differs"] else "same",
            n["started_at"],
        )
    console.print(nodes)
    vantages = Table("vantage", "status", "live nodes", "shards held", "unheld shards")
    shards = doc["shards"]
    for v in doc["vantages"]:
        unheld = shards["vantages"].get(v["name"], {}).get("unheld", [])
        status = v["status"]
        if status == "degraded":
            why = "scans silent" if v.get("health") == "degraded" else "no live node"
            status = f"degraded ({why})"
        vantages.add_row(
            v["name"],
            status,
            f"{v['nodes']} of {v['nodes_total']}",
            f"{v['shards_held']} of {shards['total']}",
            _ranges(unheld) or "-",
        )
    console.print(vantages)


def _ranges(numbers: list[int]) -> str:
    """`[0, 1, 2, 5, 7, 8]` as `0-2, 5, 7-8`."""
    parts: list[tuple[int, int]] = []
    for n in sorted(numbers):
        if parts and parts[-1][1] == n - 1:
            parts[-1] = (parts[-1][0], n)
        else:
            parts.append((n, n))
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in parts)


@click.command("findings")
@config_option
@click.option(
    "--state",
    type=click.Choice(["open", "acked", "resolved", "all"]),
    default="all",
    show_default=True,
)
@click.option("--target", default=None, help="Only this target.")
@click.option("--limit", type=click.IntRange(1, MAX_PAGE), default=100, show_default=True)
@click.option(
    "--cursor",
    type=click.IntRange(min=1),
    default=None,
    help="Continue after a page: the `next` value that page printed.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def findings(
    config_path: Path,
    state: str,
    target: str | None,
    limit: int,
    cursor: int | None,
    as_json: bool,
) -> None:
    """List findings (unexpected open ports), newest first."""
    config = _load(config_path)
    wanted = None if state == "all" else FindingState(state)

    async def work(store: Store) -> dict[str, Any]:
        rows, next_cursor = await store.findings(
            target=target, state=wanted, limit=limit, cursor=cursor
        )
        # The same document as GET /api/v1/findings.
        return findings_page(rows, await store.load_states(), next_cursor)

    page = _with_store(config, work)
    docs, next_cursor = page["findings"], page["next"]
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "target", "port", "state", "severity", "opened", "resolved", "reopened")
    for doc in docs:
        table.add_row(
            str(doc["id"]),
            doc["target"],
            f"{doc['port']}/tcp",
            doc["state"],
            doc["severity"],
            doc["opened_at"] or "",
            doc["resolved_at"] or "",
            str(doc["reopen_count"]),
        )
    Console().print(table)
    if next_cursor is not None:
        click.echo(f"more: --cursor {next_cursor}")


def parse_until(text: str, now: dt.datetime) -> dt.datetime:
    """An ack's expiry (see `acks.parse_until`), refused as a bad `--until`."""
    try:
        return acks.parse_until(text, now)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--until'") from None


@click.command("ack")
@click.argument("finding_id", type=click.IntRange(1, MAX_ID))
@config_option
@click.option(
    "--until",
    "until_text",
    required=True,
    help="Expiry: a date/time or a duration, at most 365 days ahead.",
)
@click.option(
    "--reason",
    required=True,
    help="Why this exposure is accepted (kept with it): plain text, at most 1000 characters.",
)
def ack(finding_id: int, config_path: Path, until_text: str, reason: str) -> None:
    """Acknowledge an open finding until a date (at most a year ahead): silent while open,
    reopens loudly."""
    config = _load(config_path)
    now = utcnow()
    until = parse_until(until_text, now)
    try:
        reason = acks.check_reason(reason)  # the API's rule too
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--reason'") from None

    async def work(store: Store) -> str:
        try:
            finding = await acks.ack_finding(store, finding_id, until, reason, now)
        except (LookupError, ValueError) as exc:
            raise click.UsageError(str(exc)) from None
        what = f"{finding.target} {finding.port}/tcp"
        return f"finding {finding_id} ({what}) acked until {json_time(until)}"

    click.echo(_with_store(config, work))


@click.command("notify-test")
@config_option
@click.option(
    "--channel",
    "names",
    multiple=True,
    metavar="NAME",
    help="Only this [[notify]] channel (repeatable); default: every channel.",
)
def notify_test(config_path: Path, names: tuple[str, ...]) -> None:
    """Send a test message to each channel; exit 1 if any delivery failed."""
    import aiohttp

    from exposuremon.notify import send_test

    config = _load(config_path)
    channels = {c.name: c for c in config.notify}
    if not channels:
        raise click.ClickException(f"{config_path}: no [[notify]] channel configured")
    unknown = [n for n in names if n not in channels]
    if unknown:
        known = ", ".join(sorted(channels))
        raise click.UsageError(
            f"--channel: no channel named {', '.join(map(repr, unknown))} (configured: {known})"
        )
    chosen = [channels[n] for n in dict.fromkeys(names)] if names else list(channels.values())

    async def send_all() -> list[str | None]:
        timeout = aiohttp.ClientTimeout(total=NOTIFY_TEST_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            return list(
                await asyncio.gather(
                    *(send_test(c, session, public_url=config.http.public_url) for c in chosen)
                )
            )

    errors = asyncio.run(send_all())
    for channel, error in zip(chosen, errors, strict=True):
        if error is None:
            click.echo(f"{channel.name} ({channel.type}): ok")
        else:
            click.echo(f"{channel.name} ({channel.type}): FAILED: {error}")
    if any(e is not None for e in errors):
        sys.exit(1)
