"""Vantage health on the test bed: the scanner's own outage is no router rebooting (issue 17)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from exposuremon.model import Event, EventType, TargetStatus
from exposuremon.service import Service
from tests.support.daemon import all_events, of_type, running_service, wait_until, write_config
from tests.support.testbed import Router
from tests.support.uplink import cut_uplink

pytestmark = [pytest.mark.netns, pytest.mark.slow]

ROUTERS = 5
SENTINEL = 2.0  # seconds; the cut lasts 3 sentinel rounds
TARGET_KINDS = (
    EventType.TARGET_DOWN,
    EventType.TARGET_UP,
    EventType.REBOOT_SUSPECTED,
    EventType.FINDING_RESOLVED,
    EventType.PORT_CLOSED,
    EventType.EXPECTED_PORT_CLOSED,
)


def names() -> list[str]:
    """The targets' names."""
    return [f"r{i}" for i in range(ROUTERS)]


async def vantage_events(service: Service) -> list[Event]:
    """The vantage's events, oldest first."""
    found: list[Event] = []
    for kind in (EventType.VANTAGE_DEGRADED, EventType.VANTAGE_RECOVERED):
        page, _ = await service.store.events(type=kind, limit=100)
        found += page
    return sorted(found, key=lambda e: e.id or 0)


async def target_events(service: Service) -> list[Event]:
    """Every target's events that an outage would raise (down, up, reboot, closes)."""
    found: list[Event] = []
    for name in names():
        found += [e for e in await all_events(service.store, name) if e.type in TARGET_KINDS]
    return found


async def all_up(service: Service) -> bool:
    """Every router's stored status is up."""
    states = await service.store.states_of(names())
    up = [s for s in states.values() if s.status is TargetStatus.UP]
    return len(up) == len(names())


@pytest.fixture
def routers(router_factory: Callable[..., Router]) -> list[Router]:
    """Five routers, each forwarding 443 (expected) and refusing the rest."""
    made = []
    for _ in range(ROUTERS):
        router = router_factory()
        router.listen(443)
        router.set_policy("reject", {443: "accept"})
        router.save_boot_state()
        made.append(router)
    return made


def config_for(routers: Sequence[Router], tmp_path: Path) -> Path:
    """A config scanning the routers' 443 every sentinel round (quick scans out of the way)."""
    targets = [
        {"name": name, "address": r.addr, "expected_open": "443"}
        for name, r in zip(names(), routers, strict=True)
    ]
    return write_config(tmp_path, targets, sentinel=f"{SENTINEL:g}s", quick="1h")


async def test_an_uplink_cut_is_one_vantage_event_not_five_reboots(
    routers: list[Router], tmp_path: Path
) -> None:
    """All routers unreachable for 3 sentinel rounds: no target event, one vantage_degraded,
    then one vantage_recovered; the metric and /readyz detail follow it."""
    async with running_service(config_for(routers, tmp_path)) as service:
        await wait_until(lambda: all_up(service), 30, "every router up")
        with cut_uplink([r.addr for r in routers], "vantage"):

            async def degraded() -> list[Event]:
                return await vantage_events(service)

            await wait_until(degraded, 30, "vantage_degraded")
            assert service.vantage_health() == ("default", True)
            assert service.not_ready() is None  # degraded, still ready
            # The rest of three sentinel rounds: silence goes on, nothing changes.
            await asyncio.sleep(3 * SENTINEL)  # the outage's length is what is under test

        async def recovered() -> list[Event]:
            events = await vantage_events(service)
            return events if len(events) >= 2 else []

        await wait_until(recovered, 30, "vantage_recovered")
        assert service.vantage_health() == ("default", False)
        # A round more: answers after the outage raise nothing either.
        await wait_until(lambda: all_up(service), 30, "every router up")
        events = await vantage_events(service)
        assert [e.type for e in events] == [
            EventType.VANTAGE_DEGRADED,
            EventType.VANTAGE_RECOVERED,
        ]
        assert all(e.target is None and e.vantage == "default" for e in events)
        assert await target_events(service) == []
        health = await service.store.vantage_health()
        assert not health["default"].degraded
        value = service.metrics.registry.get_sample_value(
            "exposuremon_vantage_up", {"vantage": "default"}
        )
        assert value == 1.0


async def test_a_reboot_among_answering_routers_is_still_a_reboot(
    routers: list[Router], tmp_path: Path
) -> None:
    """One router of five reboots: target_down, target_up and reboot_suspected as ever, and
    the vantage stays up."""
    async with running_service(config_for(routers, tmp_path)) as service:
        await wait_until(lambda: all_up(service), 30, "every router up")
        await asyncio.to_thread(routers[0].reboot, 3 * SENTINEL)

        async def rebooted() -> list[Event]:
            events = await all_events(service.store, "r0")
            return events if of_type(events, EventType.REBOOT_SUSPECTED) else []

        events = await wait_until(rebooted, 45, "r0's reboot suspected")
        kinds = [e.type for e in events]
        assert EventType.TARGET_DOWN in kinds
        assert EventType.TARGET_UP in kinds
        assert kinds.index(EventType.TARGET_DOWN) < kinds.index(EventType.TARGET_UP)
        assert await vantage_events(service) == []
        others = [e for e in await target_events(service) if e.target != "r0"]
        assert others == []
