"""Maintenance windows end to end: a real Service on loopback listeners, a real webhook receiver.

Inside a window a port opens (and stays), another opens and closes again: nothing is sent while
the window lasts, and nothing held is lost when the service restarts during it. A port opening
on another target pages at once. When the window ends (the API ends it early), exactly one
summary message goes out for the target, mentioning both ports, with the still-open finding in
it as the page.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from exposuremon.model import Event, EventType, FindingState
from exposuremon.service import Service
from tests.e2e.test_notifications import loopback_net, notify_toml
from tests.support.daemon import all_events, of_type, running_service, wait_until, write_config
from tests.support.loopback import Listeners
from tests.support.receivers import Receiver

pytestmark = pytest.mark.slow

TOKEN = "maintenance-token-for-tests"
EXPECTED = 9071  # open on both targets from the start: no finding, no message
# Hot ports (in every sentinel scan), rarely used ones: a listener on 0.0.0.0 of another
# process on this machine would answer on our loopback addresses too.
STAYS, COMES_AND_GOES, ELSEWHERE = 8087, 8089, 8085
# Quick and full scans look only here, for the same reason.
PORTS = f"{EXPECTED},8080-8090"


def messages_for(receiver: Receiver, target: str) -> list[dict[str, Any]]:
    """The webhook bodies the receiver accepted for `target`, in order."""
    bodies = [r.json() for r in receiver.requests if r.accepted]
    return [b for b in bodies if b["target"] == target]


async def api(service: Service, method: str, path: str, body: Any = None) -> Any:
    """Call the service's API with the token; the JSON answer (asserting a 2xx)."""
    assert service.http_address is not None
    host, port = service.http_address
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, f"http://{host}:{port}/api/v1{path}", json=body, headers=headers
        ) as answer,
    ):
        doc = await answer.json()
        assert 200 <= answer.status < 300, doc
        return doc


async def metrics_text(service: Service) -> str:
    """The service's /metrics page."""
    assert service.http_address is not None
    host, port = service.http_address
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{host}:{port}/metrics") as r,
    ):
        return await r.text()


async def finding_state(service: Service, target: str, port: int) -> FindingState | None:
    """The state of the target's finding of `port` (open or resolved), None without one."""
    state = await service.store.load_state(target)
    if port in state.findings:
        return state.findings[port].state
    if port in state.resolved:
        return FindingState.RESOLVED
    return None


async def test_a_window_holds_messages_then_sends_one_summary_per_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No message for the target in maintenance while it lasts (a restart included), an
    immediate page for the other target, then one summary naming both ports at the end."""
    net = loopback_net()
    inside, outside = f"{net}.1", f"{net}.2"
    listeners = Listeners()
    hook = Receiver("webhook")
    monkeypatch.setenv("EXPOSUREMON_API_TOKEN", TOKEN)
    try:
        listeners.open(inside, EXPECTED)
        listeners.open(outside, EXPECTED)
        await hook.start()
        config = write_config(
            tmp_path,
            [
                {
                    "name": name,
                    "address": address,
                    "expected_open": [EXPECTED],
                    "ports_quick": PORTS,
                    "ports_full": PORTS,
                }
                for name, address in (("inside", inside), ("outside", outside))
            ],
            extra=notify_toml([{"name": "hook", "type": "webhook", "url": hook.url}]),
        )
        async with running_service(config) as service:

            async def scanned() -> bool:
                states = await service.store.load_states()
                return all(states.get(n) and states[n].last_observed for n in ("inside", "outside"))

            await wait_until(scanned, 30, "both targets scanned")
            added = await api(
                service,
                "POST",
                "/maintenance",
                {"targets": ["inside"], "duration": "1h", "reason": "firmware update"},
            )
            window = added["window"]
            assert (window["active"], window["targets"]) == (True, ["inside"])

            async def started() -> bool:
                return "inside" in await service.store.maintenance_open()

            await wait_until(started, 20, "maintenance_started recorded")
            assert 'exposuremon_maintenance{target="inside"} 1.0' in await metrics_text(service)

            listeners.open(inside, STAYS)
            listeners.open(inside, COMES_AND_GOES)

            async def both_open() -> bool:
                found = [await finding_state(service, "inside", p) for p in (STAYS, COMES_AND_GOES)]
                return found == [FindingState.OPEN] * 2

            await wait_until(both_open, 30, "two findings opened inside the window")
            listeners.close_port(inside, COMES_AND_GOES)

            async def resolved() -> bool:
                found = await finding_state(service, "inside", COMES_AND_GOES)
                return found is FindingState.RESOLVED

            await wait_until(resolved, 30, f"{COMES_AND_GOES} closed again and resolved")

            # Another target, not in a window: its page goes out at once.
            listeners.open(outside, ELSEWHERE)
            await hook.wait_for(
                lambda r: bool(messages_for(r, "outside")), 30, "the other target's page"
            )
            paged = messages_for(hook, "outside")[0]
            assert ELSEWHERE in [e["port"] for e in paged["events"]]
            held = await service.store.held_notifications("inside")
            assert {h.event.type for h in held} >= {
                EventType.FINDING_OPENED,
                EventType.FINDING_RESOLVED,
            }
        assert messages_for(hook, "inside") == []

        # A restart during the window: what was held is still held.
        async with running_service(config) as service:
            assert len(await service.store.held_notifications("inside")) == len(held)
            assert messages_for(hook, "inside") == []
            ended = await api(service, "POST", f"/maintenance/{window['id']}/end")
            assert ended["window"]["active"] is False
            await hook.wait_for(
                lambda r: bool(messages_for(r, "inside")), 30, "the summary at the window's end"
            )

            async def settled() -> bool:
                rows, _ = await service.store.deliveries(status="pending")
                return not rows and not await service.store.held_notifications("inside")

            await wait_until(settled, 30, "nothing left pending or held")
            listed = await api(service, "GET", "/maintenance")
            assert listed["in_maintenance"] == []
            shown = await metrics_text(service)
            assert 'exposuremon_maintenance{target="inside"} 0.0' in shown
            assert 'exposuremon_maintenance{target="outside"} 0.0' in shown
    finally:
        listeners.close()
        await hook.close()

    summaries = messages_for(hook, "inside")
    assert len(summaries) == 1, json.dumps(summaries, indent=1)
    events = summaries[0]["events"]
    types = [(e["type"], e["port"], e["severity"]) for e in events]
    # The still-open finding pages now; the port that came and went is only mentioned.
    assert (EventType.FINDING_OPENED.value, STAYS, "critical") in types
    assert all(port != COMES_AND_GOES for _, port, _ in types)
    (end,) = [e for e in events if e["type"] == EventType.MAINTENANCE_ENDED.value]
    assert f"still open: {STAYS}/tcp" in end["summary"]
    assert f"opened and closed again: {COMES_AND_GOES}/tcp" in end["summary"]


async def test_a_config_window_starts_and_ends_by_the_clock(tmp_path: Path) -> None:
    """A [[maintenance]] window of the config: started and ended by time, each recorded as an
    event for its target only; with nothing held, no message goes out."""
    net = loopback_net()
    listeners = Listeners()
    hook = Receiver("webhook")
    now = dt.datetime.now(dt.UTC)
    end = now + dt.timedelta(seconds=8)
    window = (
        "[[maintenance]]\n"
        'targets = ["inside"]\n'
        f'start = "{now.isoformat()}"\n'
        f'end = "{end.isoformat()}"\n'
    )
    try:
        for n in (1, 2):
            listeners.open(f"{net}.{n}", EXPECTED)
        await hook.start()
        config = write_config(
            tmp_path,
            [
                {
                    "name": name,
                    "address": f"{net}.{n}",
                    "expected_open": [EXPECTED],
                    "ports_quick": PORTS,
                    "ports_full": PORTS,
                }
                for n, name in ((1, "inside"), (2, "outside"))
            ],
            extra=notify_toml([{"name": "hook", "type": "webhook", "url": hook.url}]) + window,
        )
        async with running_service(config) as service:
            assert service.holding("inside")
            assert not service.holding("outside")

            async def ended() -> list[Event]:
                return of_type(
                    await all_events(service.store, "inside"), EventType.MAINTENANCE_ENDED
                )

            (event,) = await wait_until(ended, 30, "the window's end recorded")
            assert event.observed_at >= end
            started = of_type(
                await all_events(service.store, "inside"), EventType.MAINTENANCE_STARTED
            )
            assert [e.details["window"] for e in started] == ["config/0"]
            assert event.details["window"] == "config/0"
            assert not service.holding("inside")
            outside = await all_events(service.store, "outside")
            assert of_type(outside, EventType.MAINTENANCE_STARTED) == []
    finally:
        listeners.close()
        await hook.close()
    assert hook.requests == []
