"""Two vantages of one fleet on one PostgreSQL: one finding per port, seen from both, and a
port one vantage sees open first re-probed at once by the other."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from exposuremon.model import EventType, FindingState
from tests.support.daemon import all_events, of_type, running_service, wait_until, write_config

ADDRESS = "127.0.5.1"
PORT = 18080  # unexpected: in the quick set only, never seen open before the test opens it


def vantage_config(tmp_path: Path, vantage: str) -> Path:
    """A node alone in `vantage`, scanning the one target only when asked (long intervals)."""
    targets: list[dict[str, object]] = [
        {
            "name": "r",
            "address": ADDRESS,
            "ports_quick": f"{PORT}-{PORT + 1}",
            "ports_full": f"{PORT}-{PORT + 1}",
        },
    ]
    directory = tmp_path / vantage
    directory.mkdir()
    fleet = (
        '[store]\nurl_env = "EM_FLEET_URL"\n'
        f'[fleet]\nnode = "node-{vantage}"\nvantage = "{vantage}"\nlease_ttl = "10s"\n'
    )
    return write_config(directory, targets, sentinel="1h", quick="1h", extra=fleet)


async def _serve(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


@contextlib.asynccontextmanager
async def listening() -> AsyncIterator[None]:
    """A TCP listener on the target's unexpected port (loopback)."""
    server = await asyncio.start_server(_serve, ADDRESS, PORT)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


async def test_a_port_open_from_two_vantages_is_one_finding_seen_from_both(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fra sees a port open first: one finding, nyc re-probes it at once through the store
    (not by its schedule), and the finding's seen_from names both vantages."""
    monkeypatch.setenv("EM_FLEET_URL", pg_url)
    async with (
        running_service(vantage_config(tmp_path, "fra")) as fra,
        running_service(vantage_config(tmp_path, "nyc")) as nyc,
    ):
        asked: list[tuple[str, frozenset[int]]] = []
        reprobe = nyc.reprobe

        async def recording(name: str, ports: frozenset[int]) -> None:
            asked.append((name, ports))
            await reprobe(name, ports)

        monkeypatch.setattr(nyc, "reprobe", recording)

        async def both_scanned() -> bool:
            state = await fra.store.load_state("r")
            return set(state.vantages) == {"fra", "nyc"}

        for node in (fra, nyc):
            assert await node.scan_now("r")
        await wait_until(both_scanned, 60, "both vantages' first scans written")
        assert (await fra.store.load_state("r")).findings == {}

        async def seen_from_both() -> bool:
            findings, _ = await fra.store.findings(target="r")
            return any(f.seen_from == {"open": ("fra", "nyc")} for f in findings)

        async with listening():
            assert await fra.scan_now("r")
            await wait_until(seen_from_both, 60, "the finding seen open from fra and nyc")
        assert asked == [("r", frozenset({PORT}))]
        findings, _ = await fra.store.findings(target="r")
        assert [(f.port, f.state) for f in findings] == [(PORT, FindingState.OPEN)]
        events = await all_events(fra.store, "r")
        opened = of_type(events, EventType.FINDING_OPENED)
        assert len(opened) == 1
        assert opened[0].details["seen_from"] == {"open": ["fra"]}
        assert len(of_type(events, EventType.PORT_OPENED)) == 1
        state = await nyc.store.load_state("r")
        assert {v: w.ports[PORT].state.value for v, w in state.vantages.items()} == {
            "fra": "open",
            "nyc": "open",
        }
