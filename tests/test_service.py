"""The service's lifecycle and HTTP endpoints, shutdown with scans running, and accuracy."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from exposuremon import acks
from exposuremon.config.models import load_config
from exposuremon.model import EventType, FindingState, ScanKind, TargetStatus
from exposuremon.service import Service
from exposuremon.store import Store
from tests.support.daemon import (
    all_events,
    daemon_process,
    running_service,
    stored_last_scan,
    wait_until,
    write_config,
)
from tests.support.loopback import Listeners
from tests.support.testbed import Router


async def test_health_ready_and_metrics(tmp_path: Path) -> None:
    """/healthz answers, /readyz says ready once started, /metrics counts the scans."""
    listeners = Listeners()
    port = listeners.open("127.0.0.3")
    config = write_config(
        tmp_path, [{"name": "lo", "address": "127.0.0.3", "expected_open": str(port)}]
    )
    service = Service(load_config(config), config)
    assert service.not_ready() == "starting"
    try:
        await service.start()
        assert service.http_address is not None
        host, http_port = service.http_address
        base = f"http://{host}:{http_port}"

        async def scanned() -> bool:
            return service.scans_recorded >= 2

        await wait_until(scanned, 20, "two scans recorded")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 200
                assert (await resp.json())["status"] == "ready"
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
        assert 'exposuremon_build_info{version="' in text
        assert 'exposuremon_scan_duration_seconds_count{kind="sentinel"}' in text
        assert 'exposuremon_probes_total{result="open"}' in text
        assert 'exposuremon_scans_late_total{kind="quick"} 0.0' in text  # there from the start
        lag_count = 'exposuremon_scan_lag_seconds_count{kind="sentinel"} '
        assert float(text.split(lag_count)[1].split()[0]) >= 1  # each start's lag observed
        state = await service.store.load_state("lo")
        assert state.status is TargetStatus.UP
        assert port in state.ports
    finally:
        await service.stop()
        listeners.close()
    assert service.not_ready() == "stopping"


async def test_quiet_scans_are_written_in_batches(tmp_path: Path) -> None:
    """Sentinel scans that change nothing are not written one by one, but flushed in batches."""
    listeners = Listeners()
    port = listeners.open("127.0.0.4")
    config = write_config(
        tmp_path, [{"name": "lo", "address": "127.0.0.4", "expected_open": str(port)}], quick="1h"
    )
    try:
        async with running_service(config) as service:

            async def held_newer_than_stored() -> dt.datetime | None:
                # Read the store first: a written scan drops what is held, so a held scan seen
                # after the read is newer than what was read (two equal times are no proof).
                stored = (await service.store.load_state("lo")).last_scan.get(ScanKind.SENTINEL)
                held = service.pipeline.quiet.get("lo")
                if stored is None or held is None or service.scans_recorded < 5:
                    return None  # not scanned yet, or nothing held now
                return stored if held.last_scan[ScanKind.SENTINEL] > stored else None

            # Generous: the start-up full scan of 127.0.0.4 shares the loop (slow under coverage).
            before = await wait_until(held_newer_than_stored, 90, "five scans, one held")
            db = sqlite3.connect(tmp_path / "state" / "exposuremon.db")
            try:
                (rows,) = db.execute("SELECT count(*) FROM scans").fetchone()
            finally:
                db.close()
            assert rows < service.scans_recorded  # the quiet sentinel scans were held
            held = service.pipeline.quiet.get("lo")
            await service.flush_quiet()
            after = (await service.store.load_state("lo")).last_scan[ScanKind.SENTINEL]
            assert after > before
            # The batch written stays in what /metrics reads as held until the next flush, so
            # a scrape that read the store before the write cannot show the times go back.
            if held is not None:
                assert (
                    service.pipeline.held()["lo"].last_scan[ScanKind.SENTINEL]
                    >= (held.last_scan[ScanKind.SENTINEL])
                )
    finally:
        listeners.close()


def stored_scans(state_dir: Path) -> int:
    """Rows in the scans table, read by a connection of our own."""
    db = sqlite3.connect(state_dir / "exposuremon.db")
    try:
        (rows,) = db.execute("SELECT count(*) FROM scans").fetchone()
    finally:
        db.close()
    return int(rows)


async def test_an_expected_port_that_stays_closed_costs_no_write_per_scan(tmp_path: Path) -> None:
    """Once a closed expected port is recorded (streak at resolve_after), sentinel scans of it
    are quiet: the scans table stops growing while scans go on."""
    listeners = Listeners()
    port = listeners.open("127.0.0.6")
    listeners.close()  # nothing listens: the expected port refuses
    # Quick and full scans only of that port: a listener another process has on the
    # wildcard address would otherwise be a finding here, and its scans writes.
    only = str(port)
    target = {"name": "lo", "address": "127.0.0.6", "expected_open": only}
    config = write_config(tmp_path, [target | {"ports_quick": only, "ports_full": only}])
    async with running_service(config) as service:

        def recorded(count: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return service.scans_recorded >= count

            return check

        await wait_until(recorded(6), 60, "six scans")
        rows = stored_scans(tmp_path / "state")
        state = await service.store.load_state("lo")
        assert state.ports[port].closed_streak == 2  # resolve_after: capped there
        await wait_until(recorded(12), 60, "six more scans")
        assert stored_scans(tmp_path / "state") == rows  # held as quiet, not written


def stored_quick_scans(state_dir: Path) -> int:
    """Rows of quick scans in the scans table, read by a connection of our own."""
    db = sqlite3.connect(state_dir / "exposuremon.db")
    try:
        (rows,) = db.execute("SELECT count(*) FROM scans WHERE kind = 'quick'").fetchone()
    finally:
        db.close()
    return int(rows)


async def test_a_scan_asked_for_while_the_same_scan_runs_runs_after_it(tmp_path: Path) -> None:
    """An on-demand quick scan asked for while a quick scan of the target is in progress is
    not dropped: it runs once that one ends, and is written."""
    listeners = Listeners()
    port = listeners.open("127.0.0.8")
    only = str(port)
    target = {"name": "lo", "address": "127.0.0.8", "expected_open": only}
    config = write_config(
        tmp_path, [target | {"ports_quick": only, "ports_full": only}], quick="1h"
    )
    state_dir = tmp_path / "state"
    try:
        async with running_service(config) as service:
            await service.scan_target("lo", ScanKind.QUICK, on_demand=True)
            rows = stored_quick_scans(state_dir)
            assert rows >= 1
            # The scan in progress waits for the target's lock to record its result.
            async with service.pipeline.target_lock("lo"):
                running = asyncio.create_task(service.scan_target("lo", ScanKind.QUICK))
                # One turn of the loop (not a wait for time): the new task runs up to its
                # first await, by which point it has claimed the target's quick scan.
                await asyncio.sleep(0)
                await service.scan_target("lo", ScanKind.QUICK, on_demand=True)
                assert stored_quick_scans(state_dir) == rows  # nothing ran yet
            await running  # quiet: held, not written

            async def written() -> bool:
                return stored_quick_scans(state_dir) > rows

            await wait_until(written, 30, "the on-demand scan run after the other")
            assert stored_quick_scans(state_dir) == rows + 1
    finally:
        listeners.close()


async def test_the_services_own_writes_do_not_make_it_forget_what_it_holds(
    tmp_path: Path,
) -> None:
    """A target the service wrote itself stays held across the change refresh (no store read
    at its next scan); only somebody else's write makes the service forget it."""
    listeners = Listeners()
    port = listeners.open("127.0.0.9")
    config = write_config(tmp_path, [{"name": "lo", "address": "127.0.0.9"}], quick="1h")
    try:
        async with running_service(config) as service:

            async def finding_held() -> bool:
                found = service.pipeline.seen.get("lo")
                return bool(found and port in found.findings)

            await wait_until(finding_held, 60, "a finding on the open port")
            # The apply that opened the finding stamped the target; our refresh sees that
            # stamp as the newest and keeps the held state.
            assert await service.pipeline.refresh_changed() == frozenset()
            assert "lo" in service.pipeline.seen
            other = await Store.open(tmp_path / "state")
            try:
                held = service.pipeline.seen["lo"]
                fid = held.findings[port].id
                assert fid is not None
                now = dt.datetime.now(dt.UTC)
                await acks.ack_finding(other, fid, now + dt.timedelta(days=1), "known", now)
            finally:
                await other.close()

            async def forgotten_or_reloaded() -> bool:
                held = service.pipeline.seen.get("lo")
                return held is None or held.findings[port].state is FindingState.ACKED

            await wait_until(forgotten_or_reloaded, 30, "the ack makes the service forget")
    finally:
        listeners.close()


async def test_an_ack_by_another_process_reaches_the_next_scan(tmp_path: Path) -> None:
    """`exposuremon ack` writes with its own connection: the service notices within its
    refresh, holds the acked finding, and its scans leave the ack standing."""
    listeners = Listeners()
    port = listeners.open("127.0.0.7")
    config = write_config(tmp_path, [{"name": "lo", "address": "127.0.0.7"}], quick="1h")
    try:
        async with running_service(config) as service:

            async def finding_id() -> int | None:
                found = service.pipeline.seen.get("lo")
                active = found.findings.get(port) if found else None
                return None if active is None else active.id

            fid = await wait_until(finding_id, 60, "a finding on the open port")
            other = await Store.open(tmp_path / "state")
            try:
                now = dt.datetime.now(dt.UTC)
                await acks.ack_finding(other, fid, now + dt.timedelta(days=1), "known", now)
            finally:
                await other.close()

            async def held_acked() -> bool:
                held = service.pipeline.seen.get("lo")
                return bool(held and held.findings[port].state is FindingState.ACKED)

            await wait_until(held_acked, 30, "the service holds the ack")
            scans = service.scans_recorded

            async def three_more() -> bool:
                return service.scans_recorded >= scans + 3

            await wait_until(three_more, 60, "three more scans")
            finding = await service.store.finding(fid)
            assert finding is not None
            assert finding.state is FindingState.ACKED
    finally:
        listeners.close()


@pytest.mark.netns
def test_sigterm_records_the_running_scan_as_incomplete(router: Router, tmp_path: Path) -> None:
    """SIGTERM mid-scan: exit 0 within 10 s, and the cut-short scan is stored incomplete."""
    router.listen(443)
    router.set_policy("drop", {443: "accept"})  # a full scan of a dropping host takes a while
    config = write_config(
        tmp_path, [{"name": "r", "address": router.addr, "expected_open": "443"}], full="1h"
    )
    with daemon_process(config, tmp_path / "daemon.log") as daemon:
        daemon.start()
        daemon.wait_log('"kind": "full", "ports"', 20)
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
        assert time.monotonic() - started < 10
        assert '"stopped"' in daemon.log()
    db = sqlite3.connect(tmp_path / "state" / "exposuremon.db")
    try:
        rows = db.execute("SELECT complete FROM scans WHERE kind = 'full'").fetchall()
    finally:
        db.close()
    assert rows == [(0,)]


@pytest.mark.netns
@pytest.mark.slow
async def test_no_false_findings_with_loss_and_latency(
    router_factory: Callable[..., Router], tmp_path: Path
) -> None:
    """2% loss each way and 40 ms RTT: many scans, yet no finding and no outage is invented."""
    router = router_factory(rtt=0.040)
    router.listen(443)
    router.set_policy("reject", {443: "accept"}, loss=0.02)
    assert router.delayed_addr is not None
    config = write_config(
        tmp_path,
        [{"name": "r", "address": router.delayed_addr, "expected_open": "443"}],
        quick="3s",
    )
    async with running_service(config) as service:

        async def enough() -> bool:
            last = await stored_last_scan(service, "r", ScanKind.QUICK)
            return service.scans_recorded >= 20 and last is not None

        await wait_until(enough, 60, "20 scans, quick ones among them")
        events = await all_events(service.store, "r")
    kinds = {e.type for e in events}
    assert EventType.FINDING_OPENED not in kinds
    assert EventType.TARGET_DOWN not in kinds
    assert EventType.EXPECTED_PORT_CLOSED not in kinds


async def test_the_daemon_runs_on_postgresql_named_by_url_env(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With [store] url_env the daemon keeps its state in PostgreSQL (no SQLite file), and
    its log names the database without the URL's password."""
    listeners = Listeners()
    port = listeners.open("127.0.0.5")
    # Trust authentication ignores the password: it is there to be kept out of the log.
    url = pg_url.replace("postgres@/", "postgres:hunter2@/", 1)
    monkeypatch.setenv("EM_TEST_STORE_URL", url)
    config = write_config(
        tmp_path,
        [{"name": "lo", "address": "127.0.0.5", "expected_open": str(port)}],
        extra='[store]\nurl_env = "EM_TEST_STORE_URL"\n',
    )
    try:
        with daemon_process(config, tmp_path / "daemon.log") as daemon:
            daemon.start()
            daemon.wait_log('"started"', 30)
            async with await Store.open(pg_url) as store:

                async def up() -> bool:
                    return (await store.load_state("lo")).status is TargetStatus.UP

                await wait_until(up, 30, "a scan of lo stored in PostgreSQL")
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(10) == 0
            log = daemon.log()
    finally:
        listeners.close()
    assert '"store": "postgresql+asyncpg://postgres:***@/test_' in log
    assert "hunter2" not in log
    assert not (tmp_path / "state" / "exposuremon.db").exists()
    # The CLI reads the same database through the same [store].
    exe = Path(sys.executable).with_name("exposuremon")
    status = await asyncio.to_thread(
        subprocess.run,
        [str(exe), "status", "-c", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert [t["name"] for t in json.loads(status.stdout)["targets"]] == ["lo"]
    assert not (tmp_path / "state" / "exposuremon.db").exists()
