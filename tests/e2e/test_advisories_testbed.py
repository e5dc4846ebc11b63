"""Firmware advisories on the test bed: a router whose HTTP Server header matches the shipped
rule, a restart that remembers the match, and a "firmware update" that clears it."""

from __future__ import annotations

from pathlib import Path

import pytest

from exposuremon.model import Event, EventType, Severity
from tests.support.daemon import all_events, running_service, wait_until, write_config
from tests.support.testbed import Router

pytestmark = [pytest.mark.slow, pytest.mark.netns]

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "advisories.example.toml"
RULE = "bintec-elmeg-portforward"
OLD_FIRMWARE = "bintec elmeg httpd"
NEW_FIRMWARE = "be.IP-httpd/10.2.7"


async def test_a_matching_server_header_raises_the_advisory_and_an_update_clears_it(
    router: Router, tmp_path: Path
) -> None:
    """Server header of the old firmware: one advisory_matched (critical, with the fingerprint),
    not raised again after a restart; the listener restarted with the new firmware's header:
    one advisory_cleared."""
    router.listen(80, "http", server_header=OLD_FIRMWARE, title="Digitalisierungsbox Premium")
    router.set_policy("reject", {80: "accept"})
    config = write_config(
        tmp_path,
        [{"name": "box", "address": router.addr, "expected_open": "80"}],
        sentinel="1s",
        quick="2s",  # quick scans fingerprint every open port: the update shows within seconds
    )
    text = config.read_text().replace("[daemon]\n", f'[daemon]\nadvisories_file = "{EXAMPLE}"\n')
    config.write_text(text)

    def of(events: list[Event], kind: EventType) -> list[Event]:
        return [e for e in events if e.type is kind]

    async with running_service(config) as service:
        assert RULE in {r.name for r in service.config.advisories}

        async def matched() -> list[Event]:
            return of(await all_events(service.store, "box"), EventType.ADVISORY_MATCHED)

        (event,) = await wait_until(matched, 30, "advisory_matched")
        assert event.severity is Severity.CRITICAL
        assert event.details["rule"] == RULE
        assert event.details["port"] == 80
        assert event.details["fingerprint"]["http_server"] == OLD_FIRMWARE
        assert event.details["fingerprint"]["http_title"] == "Digitalisierungsbox Premium"
        state = await service.store.load_state("box")
        assert set(state.advisories) == {RULE}
        seen = state.last_observed

    async with running_service(config) as service:  # a restart: the match is remembered

        async def scanned_again() -> bool:
            await service.flush_quiet()
            return (await service.store.load_state("box")).last_observed != seen

        await wait_until(scanned_again, 30, "a scan after the restart")
        assert len(of(await all_events(service.store, "box"), EventType.ADVISORY_MATCHED)) == 1

        router.unlisten(80)  # the firmware update: the web server comes back another
        router.listen(80, "http", server_header=NEW_FIRMWARE, title="be.IP")

        async def cleared() -> list[Event]:
            return of(await all_events(service.store, "box"), EventType.ADVISORY_CLEARED)

        (done,) = await wait_until(cleared, 40, "advisory_cleared after the update")
        assert done.details["rule"] == RULE
        assert done.details["fingerprint"]["http_server"] == NEW_FIRMWARE
        assert done.details["matched_fingerprint"]["http_server"] == OLD_FIRMWARE
        assert (await service.store.load_state("box")).advisories == {}
        assert len(of(await all_events(service.store, "box"), EventType.ADVISORY_MATCHED)) == 1
