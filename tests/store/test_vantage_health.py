"""A vantage's shared health: compare-and-set, one event per episode, events with no target."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest

from exposuremon.model import EventType, Severity, VantageStatus
from exposuremon.store import Store
from exposuremon.vantage import health_event
from tests.support.databases import Backend

T0 = dt.datetime(2026, 12, 3, 8, 0, tzinfo=dt.UTC)


def status(degraded: bool, node: str = "scan-1", at: dt.datetime = T0) -> VantageStatus:
    return VantageStatus("fra", degraded, at, node, 150 if degraded else 3, 200)


def both(_e: object) -> list[str]:
    return ["chat", "pager"]


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    """A fresh store on each dialect."""
    opened = await Store.open(backend.where, clock=lambda: T0)
    yield opened
    await opened.close()


async def test_one_event_per_change_and_none_for_a_repeat(store: Store, backend: Backend) -> None:
    """Degraded twice, recovered twice: one event each, outbox rows per channel, status kept."""
    degraded = status(True)
    saved = await store.set_vantage_health(degraded, health_event(degraded), both)
    assert saved is not None
    assert (saved.type, saved.severity, saved.target, saved.vantage) == (
        EventType.VANTAGE_DEGRADED,
        Severity.WARNING,
        None,
        "fra",
    )
    assert await store.set_vantage_health(degraded, health_event(degraded), both) is None
    assert (await store.vantage_health())["fra"].degraded
    up = status(False, at=T0 + dt.timedelta(minutes=2))
    recovered = await store.set_vantage_health(up, health_event(up, T0), both)
    assert recovered is not None
    assert recovered.type is EventType.VANTAGE_RECOVERED
    assert "degraded since 2026-12-03T08:00:00Z" in recovered.summary
    assert await store.set_vantage_health(up, health_event(up), both) is None
    health = await store.vantage_health()
    assert (health["fra"].degraded, health["fra"].since) == (False, up.since)
    events, _ = await store.events()
    assert [(e.type, e.target, e.vantage) for e in events] == [
        (EventType.VANTAGE_RECOVERED, None, "fra"),
        (EventType.VANTAGE_DEGRADED, None, "fra"),
    ]
    assert (await backend.counts(("outbox",)))["outbox"] == 4


async def test_a_recovery_without_a_degradation_raises_nothing(store: Store) -> None:
    """A vantage never degraded in the store is up: recovering it is no change."""
    up = status(False)
    assert await store.set_vantage_health(up, health_event(up), both) is None
    assert not (await store.vantage_health())["fra"].degraded


async def test_two_nodes_of_a_vantage_raise_one_degraded_event(backend: Backend) -> None:
    """Two nodes judging their own results degraded at once: exactly one event is saved."""
    stores = [await Store.open(backend.where, clock=lambda: T0) for _ in range(2)]
    try:
        changes = [status(True, node=f"scan-{i}") for i in range(2)]
        saved = await asyncio.gather(
            *(
                s.set_vantage_health(c, health_event(c), both)
                for s, c in zip(stores, changes, strict=True)
            )
        )
        assert sum(e is not None for e in saved) == 1
        events, _ = await stores[0].events(type=EventType.VANTAGE_DEGRADED)
        assert len(events) == 1
    finally:
        for s in stores:
            await s.close()
