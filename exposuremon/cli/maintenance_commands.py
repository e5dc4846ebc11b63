"""`exposuremon maintenance list|add|end`: maintenance windows from the command line.

Windows added here are kept in the store, like those of `POST /api/v1/maintenance`; the
running daemon picks them up within a second (it looks at the windows every second). The
config's `[[maintenance]]` windows are listed too, and end when the config says.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from exposuremon import acks
from exposuremon.cli.daemon_commands import _load, _with_store, config_option
from exposuremon.config import Config
from exposuremon.schedule import MaintenanceWindow, ad_hoc_times, showing
from exposuremon.store import AdHocWindow, Store
from exposuremon.units import utcnow
from exposuremon.web import maintenance_json

MAX_ID = 2**63 - 1


@click.group("maintenance")
def maintenance() -> None:
    """Maintenance windows: notifications held, events recorded, one summary at the end."""


def _window(stored: AdHocWindow) -> MaintenanceWindow:
    return MaintenanceWindow.ad_hoc(
        stored.id, stored.targets, stored.starts_at, stored.ends_at, stored.reason
    )


@maintenance.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON body instead.")
def list_windows(config_path: Path, as_json: bool) -> None:
    """The windows in force or to come: the config's and those added by the API or CLI."""
    config = _load(config_path)
    now = utcnow()

    async def work(store: Store) -> list[MaintenanceWindow]:
        return [_window(w) for w in await store.maintenance_windows(ending_after=now)]

    windows = config.maintenance_windows() + tuple(_with_store(config, work))
    shown = [showing(w, now) for w in windows]
    docs = [maintenance_json(s) for s in shown if s.end is None or s.end > now]
    if as_json:
        click.echo(json.dumps({"windows": docs}, indent=2))
        return
    if not docs:
        click.echo("no maintenance windows")
        return
    for doc in docs:
        click.echo(_line(doc))


def _line(doc: dict[str, Any]) -> str:
    """One window as a line: id, active or next, when, targets, schedule, reason."""
    state = "ACTIVE" if doc["active"] else "next"
    targets = doc["targets"]
    who = "every target" if targets is None else ", ".join(targets)
    when = f"{doc['start'] or '-'} .. {doc['end'] or '-'}"
    extra = (
        f" cron {doc['cron']!r} for {doc['duration_s']:g}s ({doc['timezone']})"
        if doc["cron"]
        else ""
    )
    reason = f" — {doc['reason']}" if doc["reason"] else ""
    return f"{doc['id']:<10} {state:<6} {when}  {who}{extra}{reason}"


def _targets(config: Config, names: tuple[str, ...]) -> tuple[str, ...] | None:
    known = {t.name for t in config.targets}
    for name in names:
        if name not in known:
            raise click.BadParameter(f"no target named {name!r}", param_hint="'--target'")
    return tuple(dict.fromkeys(names)) or None


@maintenance.command("add")
@config_option
@click.option(
    "--target",
    "targets",
    multiple=True,
    metavar="NAME",
    help="A target in the window (repeatable); default: every target.",
)
@click.option("--start", help="RFC 3339 time, e.g. 2026-12-05T22:00:00+01:00; default: now.")
@click.option("--end", help="RFC 3339 time the window ends (or --duration).")
@click.option("--duration", help="How long the window lasts, e.g. 2h (or --end).")
@click.option("--reason", required=True, help="Why: plain text, at most 1000 characters.")
def add(
    config_path: Path,
    targets: tuple[str, ...],
    start: str | None,
    end: str | None,
    duration: str | None,
    reason: str,
) -> None:
    """Add a maintenance window (kept in the store; at most 30 days long)."""
    config = _load(config_path)
    now = utcnow()
    names = _targets(config, targets)
    try:
        reason = acks.check_reason(reason)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--reason'") from None
    try:
        begin, finish = ad_hoc_times(start, end, duration, now)
    except ValueError as exc:
        field, _, problem = str(exc).partition(": ")
        raise click.BadParameter(problem, param_hint=f"'--{field}'") from None

    async def work(store: Store) -> AdHocWindow:
        return await store.add_maintenance(names, begin, finish, reason)

    stored = _with_store(config, work)
    click.echo(_line(maintenance_json(showing(_window(stored), now))))


@maintenance.command("end")
@click.argument("window_id", metavar="ID")
@config_option
def end(window_id: str, config_path: Path) -> None:
    """End a window added by the API or the CLI now (ID: N or api/N, as `list` shows)."""
    config = _load(config_path)
    number = window_id.removeprefix("api/")
    if not number.isdigit() or not 1 <= int(number) <= MAX_ID:
        raise click.BadParameter(
            f"{window_id!r} is not the id of a window added by the API or the CLI (api/N); "
            "[[maintenance]] windows of the config end when the config says",
            param_hint="'ID'",
        )
    now = utcnow()

    async def work(store: Store) -> AdHocWindow:
        try:
            return await store.end_maintenance(int(number), now)
        except (LookupError, ValueError) as exc:
            raise click.UsageError(str(exc)) from None

    stored = _with_store(config, work)
    click.echo(f"ended: {_line(maintenance_json(showing(_window(stored), now)))}")
