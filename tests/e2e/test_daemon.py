"""The daemon end to end on the test bed: the incident, outages, crashes and reloads."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from exposuremon.model import EventType, FindingState, Observed, Severity, TargetStatus
from tests.support.daemon import (
    all_events,
    daemon_process,
    of_type,
    running_service,
    wait_until,
    write_config,
)
from tests.support.testbed import Router

pytestmark = [pytest.mark.netns, pytest.mark.slow]

BUG_PORTS = [*range(80, 90), *range(440, 450)]  # what the firmware opened, 443 aside
BUG_PORTS.remove(443)


async def test_the_incident(router: Router, tmp_path: Path) -> None:
    """Forward 443 → the firmware opens 80-89/440-449 → closed → reboot → every one reopens."""
    router.listen(443, "tls")
    router.set_policy("reject", {443: "accept"})
    config = write_config(
        tmp_path, [{"name": "surgery", "address": router.addr, "expected_open": "443"}]
    )
    async with running_service(config) as service:
        store = service.store

        async def known_443() -> bool:
            state = await store.load_state("surgery")
            rec = state.ports.get(443)
            return rec is not None and rec.state is Observed.OPEN and rec.fingerprint is not None

        await wait_until(known_443, 20, "443 seen open and fingerprinted")
        # The firmware bug: one port forward opens the HTTP and HTTPS ranges too.
        for port in BUG_PORTS:
            router.listen(port, "http", server_header="bintec", title="Login")
        router.set_policy("reject", {(80, 89): "accept", (440, 449): "accept"})
        router.save_boot_state()  # the firmware's config: what a reboot brings back

        async def findings_open() -> Sequence[object]:
            rows, _ = await store.findings(target="surgery", state=FindingState.OPEN, limit=100)
            return rows if len(rows) == len(BUG_PORTS) else []

        opened = await wait_until(findings_open, 30, "a finding for every bug port")
        assert {f.port for f in opened} == set(BUG_PORTS)
        assert all(f.severity is Severity.CRITICAL for f in opened)  # hot ports
        assert 443 not in {f.port for f in opened}  # expected

        # The admin closes them (a runtime change, not saved to the boot config).
        router.set_policy("reject", {443: "accept"})

        async def all_resolved() -> bool:
            rows, _ = await store.findings(target="surgery", state=FindingState.RESOLVED)
            return len(rows) == len(BUG_PORTS)

        await wait_until(all_resolved, 30, "every finding resolved")
        old_cert = router.cert_sha256(443)
        await asyncio.to_thread(router.reboot, 4.0, True)  # down > one sentinel scan, new cert
        assert router.cert_sha256(443) != old_cert

        async def reopened() -> Sequence[object]:
            events = await all_events(store, "surgery")
            found = of_type(events, EventType.FINDING_REOPENED)
            new_cert = of_type(events, EventType.FINGERPRINT_CHANGED)
            return events if len(found) == len(BUG_PORTS) and new_cert else []

        events = await wait_until(reopened, 45, "every bug port reopened, new certificate seen")
    kinds = [e.type for e in events]
    assert EventType.TARGET_DOWN in kinds
    assert EventType.REBOOT_SUSPECTED in kinds
    changed = of_type(events, EventType.FINGERPRINT_CHANGED)
    assert any(e.port == 443 for e in changed)
    for event in of_type(events, EventType.FINDING_REOPENED):
        assert event.severity is Severity.CRITICAL
        assert event.finding_id is not None
        assert event.details.get("previous_resolved_at")
        assert "reboot" in event.summary.lower()
    # While down, nothing was resolved or closed by the outage itself.
    down_at = kinds.index(EventType.TARGET_DOWN)
    up_at = kinds.index(EventType.TARGET_UP)
    between = kinds[down_at:up_at]
    assert EventType.PORT_CLOSED not in between
    assert EventType.FINDING_RESOLVED not in between


async def test_expected_port_closed(router: Router, tmp_path: Path) -> None:
    """An expected port that stops answering gives one expected_port_closed warning."""
    router.listen(443)
    router.set_policy("reject", {443: "accept"})
    config = write_config(tmp_path, [{"name": "r", "address": router.addr, "expected_open": "443"}])
    async with running_service(config) as service:

        async def up() -> bool:
            state = await service.store.load_state("r")
            return 443 in state.ports and state.ports[443].state is Observed.OPEN

        await wait_until(up, 20, "443 open")
        router.unlisten(443)

        async def closed_event() -> Sequence[object]:
            events = await all_events(service.store, "r")
            return of_type(events, EventType.EXPECTED_PORT_CLOSED)

        found = await wait_until(closed_event, 20, "expected_port_closed")
        assert found[0].severity is Severity.WARNING


async def test_long_outage_changes_no_port(router: Router, tmp_path: Path) -> None:
    """A target down for several scans: target_down once, no port closed, no finding resolved."""
    router.listen(443)
    router.listen(8080)
    router.set_policy("reject", {443: "accept", 8080: "accept"})
    config = write_config(tmp_path, [{"name": "r", "address": router.addr, "expected_open": "443"}])
    async with running_service(config) as service:
        store = service.store

        async def finding() -> Sequence[object]:
            rows, _ = await store.findings(target="r", state=FindingState.OPEN)
            return rows

        await wait_until(finding, 20, "a finding for 8080")
        router.power_off()
        try:

            async def down() -> bool:
                return (await store.load_state("r")).status is TargetStatus.DOWN

            await wait_until(down, 20, "target down")
            count = service.scans_recorded
            await wait_until(_after(service, count + 3), 30, "three scans while down")
        finally:
            router.power_on()
        events = await all_events(store, "r")
        state = await store.load_state("r")
    assert len(of_type(events, EventType.TARGET_DOWN)) == 1
    assert not of_type(events, EventType.PORT_CLOSED)
    assert not of_type(events, EventType.FINDING_RESOLVED)
    assert state.ports[8080].state is Observed.OPEN


def _after(service: object, count: int) -> Callable[[], asyncio.Future[bool]]:
    async def check() -> bool:
        return service.scans_recorded >= count  # type: ignore[attr-defined, no-any-return]

    return check  # type: ignore[return-value]


def test_kill_9_during_a_scan_then_restart(router: Router, tmp_path: Path) -> None:
    """SIGKILL mid-scan loses nothing committed: no duplicate findings, scanning resumes."""
    router.listen(8443)
    router.set_policy("drop", {8443: "accept"})  # slow scans: a kill lands mid-scan
    config = write_config(
        tmp_path, [{"name": "r", "address": router.addr}], sentinel="1s", quick="2s"
    )
    log = tmp_path / "daemon.log"
    with daemon_process(config, log) as daemon:
        daemon.start()
        daemon.wait_log('"finding_opened"', 30)
        daemon.wait_log('"kind": "quick", "ports"', 30)  # a quick scan has started
        daemon.signal(signal.SIGKILL)
        assert daemon.wait(10) == -signal.SIGKILL
        mark = len(daemon.log())
        daemon.start()
        daemon.wait_log('"started"', 20, after=mark)
        daemon.wait_log('"kind": "sentinel"', 20, after=mark)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(10) == 0

    async def check() -> None:
        from exposuremon.store.database import Store

        store = await Store.open(tmp_path / "state")
        try:
            rows, _ = await store.findings(target="r", limit=100)
            assert [f.port for f in rows] == [8443]  # one finding, not two
            events = await all_events(store, "r")
            assert len(of_type(events, EventType.FINDING_OPENED)) == 1
        finally:
            await store.close()

    asyncio.run(check())


def test_sighup_with_a_broken_config_keeps_running(router: Router, tmp_path: Path) -> None:
    """SIGHUP: a valid config is applied live; a broken one is logged and the old one stays."""
    router.set_policy("reject")
    config = write_config(tmp_path, [{"name": "r", "address": router.addr}])
    with daemon_process(config, tmp_path / "daemon.log") as daemon:
        daemon.start()
        daemon.wait_log('"started"', 20)
        good = config.read_text().replace('name = "r"', 'name = "renamed"')
        config.write_text(good)
        daemon.signal(signal.SIGHUP)
        daemon.wait_log('"reloaded"', 10)
        daemon.wait_log('"renamed"', 10)
        config.write_text(
            good + '\n[[targets]]\nname = "bad"\naddress = "x"\nexpected_open = 70000\n'
        )
        mark = len(daemon.log())
        daemon.signal(signal.SIGHUP)
        daemon.wait_log("reload rejected", 10, after=mark)
        assert "70000" in daemon.log()[mark:]
        mark = len(daemon.log())
        daemon.wait_log('"kind": "sentinel"', 10, after=mark)  # still scanning
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
