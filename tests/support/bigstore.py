"""A store with thousands of targets, written in one transaction (for the page bench and tests).

Going through detection and `Store.apply` costs a transaction per target (minutes at 10,000),
so the rows are built from model objects with the store's own row codecs (`schema.*_row`) and
inserted in bulk after `Store.open` created the schema. The mix: 5% of targets down, 5% with a
critical finding on 8080 (every tenth of those reopened), the rest up with their expected 443
open. Addresses come from 198.18.0.0/15 (reserved for benchmarks); nothing ever scans them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import sqlalchemy as sa

from exposuremon.config import Config, parse_config
from exposuremon.model import (
    Event,
    EventType,
    Finding,
    FindingState,
    Observed,
    PortRecord,
    ScanKind,
    Severity,
    TargetState,
    TargetStatus,
)
from exposuremon.store import schema
from exposuremon.store.database import Store, db_path, sqlite_engine

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
EVENTS = 200  # timeline rows: the page shows the newest 50


@dataclasses.dataclass(frozen=True)
class BigStore:
    """What `build` made: the config and which targets are down or have a finding."""

    config: Config
    down: tuple[str, ...]
    with_findings: tuple[str, ...]
    reopened: tuple[str, ...]


def name_of(i: int) -> str:
    """The i-th target's name (zero-padded: name order is index order)."""
    return f"router-{i:05d}"


def address_of(i: int) -> str:
    """The i-th target's address in 198.18.0.0/15."""
    return f"198.18.{i // 250}.{i % 250 + 1}"


def kind_of(i: int) -> str:
    """`down`, `finding` or `healthy`: 1 in 20 each for the first two."""
    return {0: "down", 1: "finding"}.get(i % 20, "healthy")


def config_text(count: int, state_dir: Path, first: int = 0) -> str:
    """The config of targets `first` to `count - 1`, each expecting 443."""
    lines = [f'[daemon]\nstate_dir = "{state_dir}"\n[http]\nlisten = "127.0.0.1:0"']
    for i in range(first, count):
        lines.append(
            f'[[targets]]\nname = "{name_of(i)}"\naddress = "{address_of(i)}"\n'
            'expected_open = "443"'
        )
    return "\n".join(lines) + "\n"


def _state(i: int) -> tuple[TargetState, list[Finding]]:
    name, kind = name_of(i), kind_of(i)
    hour_ago = NOW - dt.timedelta(hours=1)
    ports = {443: PortRecord(443, Observed.OPEN, hour_ago, NOW, hour_ago, times_opened=1)}
    findings = []
    if kind == "finding":
        ports[8080] = PortRecord(8080, Observed.OPEN, hour_ago, NOW, hour_ago, times_opened=1)
        reopened = i % 200 == 1
        findings.append(
            Finding(
                id=None,
                target=name,
                port=8080,
                severity=Severity.CRITICAL,
                state=FindingState.OPEN,
                opened_at=hour_ago + dt.timedelta(seconds=i % 3600),
                reopen_count=1 if reopened else 0,
                previous_resolved_at=NOW - dt.timedelta(days=1) if reopened else None,
            )
        )
    state = TargetState(
        name=name,
        address=address_of(i),
        status=TargetStatus.DOWN if kind == "down" else TargetStatus.UP,
        status_since=hour_ago,
        ports=ports,
        last_scan={ScanKind.SENTINEL: NOW - dt.timedelta(seconds=i % 30)},
        last_observed=NOW,
    )
    return state, findings


def fill(state_dir: Path, count: int) -> None:
    """Write `count` targets' rows (and a timeline) into the store under `state_dir`."""
    targets, ports, findings, events = [], [], [], []
    for i in range(count):
        state, found = _state(i)
        targets.append(schema.target_row(state))
        ports += [schema.port_row(state.name, rec) for rec in state.ports.values()]
        findings += [schema.finding_row(f) for f in found]
    for n, i in enumerate(range(1, count, 20)):
        if n == EVENTS:
            break
        event = Event(
            EventType.FINDING_OPENED,
            Severity.CRITICAL,
            name_of(i),
            NOW - dt.timedelta(minutes=n),
            "port 8080/tcp open (unexpected)",
            port=8080,
        )
        events.append(schema.event_row(event, None, None))
    engine = sqlite_engine(db_path(state_dir))
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(schema.targets), targets)
            conn.execute(sa.insert(schema.port_state), ports)
            if findings:
                conn.execute(sa.insert(schema.findings), findings)
            if events:
                conn.execute(sa.insert(schema.events), events)
    finally:
        engine.dispose()


async def build(directory: Path, count: int) -> BigStore:
    """A state dir under `directory` with `count` targets; the config that names them."""
    state_dir = directory / "state"
    store = await Store.open(state_dir)  # creates the schema
    await store.close()
    fill(state_dir, count)
    config = parse_config(config_text(count, state_dir), directory)
    kinds = [(name_of(i), kind_of(i), i % 200 == 1) for i in range(count)]
    return BigStore(
        config=config,
        down=tuple(n for n, k, _ in kinds if k == "down"),
        with_findings=tuple(n for n, k, _ in kinds if k == "finding"),
        reopened=tuple(n for n, k, r in kinds if k == "finding" and r),
    )
