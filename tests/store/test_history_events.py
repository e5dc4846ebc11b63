"""`Store.history_events`: a few targets' events of some types since a time, on both dialects."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from exposuremon import detect
from exposuremon.model import EventType
from exposuremon.store import Store
from tests.metrics.test_port_alerting import T0, config_of, observation
from tests.support.databases import Backend
from tests.support.records import scan_record_of


async def test_history_events_per_target_oldest_first(backend: Backend, tmp_path: Path) -> None:
    """Only the types asked, from `since`, oldest first, the newest `limit` of each target."""
    config = config_of(tmp_path)
    policy = config.targets[0].policy(config.scan)
    async with await Store.open(backend.where) as store:
        minute = 0

        async def scan(name: str, open_ports: set[int]) -> None:
            nonlocal minute
            minute += 1
            when = T0 + dt.timedelta(minutes=minute)
            prev = await store.load_state(name)
            obs = observation(name, open_ports, when)
            out = detect.evaluate(prev, obs, policy, when)
            await store.apply(scan_record_of(obs), out.state, out.events, out.findings, ())

        for ports in ({80, 443}, {443}, {443}, {80, 443}):  # open, closed (resolved), reopened
            await scan("gw-a", ports)
        await scan("gw-b", {22, 443})
        kinds = [EventType.PORT_OPENED, EventType.PORT_CLOSED, EventType.FINDING_REOPENED]
        found = await store.history_events(["gw-a", "gw-b", "gw-c"], kinds, T0)
        assert set(found) == {"gw-a", "gw-b"}  # gw-c has no events (never scanned)
        a = [(e.type, e.port) for e in found["gw-a"]]
        assert a == [
            (EventType.PORT_OPENED, 80),
            (EventType.PORT_OPENED, 443),
            (EventType.PORT_CLOSED, 80),
            (EventType.PORT_OPENED, 80),
            (EventType.FINDING_REOPENED, 80),
        ]
        times = [e.observed_at for e in found["gw-a"]]
        assert times == sorted(times)
        assert all(e.target == "gw-b" for e in found["gw-b"])
        # From a time on: the scans before it are left out; the limit keeps the newest.
        later = await store.history_events(["gw-a"], kinds, T0 + dt.timedelta(minutes=2))
        assert [(e.type, e.port) for e in later["gw-a"]] == a[2:]
        newest = await store.history_events(["gw-a"], kinds, T0, limit=2)
        assert [(e.type, e.port) for e in newest["gw-a"]] == a[-2:]


async def test_history_events_link_resolutions_to_their_findings(
    backend: Backend, tmp_path: Path
) -> None:
    """A finding_resolved event carries the id of the finding the state keeps as resolved."""
    config = config_of(tmp_path)
    policy = config.targets[0].policy(config.scan)
    async with await Store.open(backend.where) as store:
        for minute, ports in enumerate(({80, 443}, {443}, {443}), start=1):
            when = T0 + dt.timedelta(minutes=minute)
            obs = observation("gw-a", ports, when)
            out = detect.evaluate(await store.load_state("gw-a"), obs, policy, when)
            await store.apply(scan_record_of(obs), out.state, out.events, out.findings, ())
        found = await store.history_events(["gw-a"], [EventType.FINDING_RESOLVED], T0)
        (resolution,) = found["gw-a"]
        resolved = (await store.load_state("gw-a")).resolved[80]
        assert resolved.id is not None
        assert resolution.finding_id == resolved.id
