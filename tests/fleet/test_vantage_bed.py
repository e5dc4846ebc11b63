"""The vantage test bed (tests/support/vantages.py): two vantage namespaces, fra and nyc, reach the
test-bed routers by paths of their own, each running one node of one fleet on a real PostgreSQL.

The first tests check the bed itself: the nodes join and split nothing (each holds every shard
of its vantage), both see what a router shows, and the path controls (a cut, a port filtered on
one path) change what one vantage sees and not the other. Observations are read from the
`scans` table, where every row carries its vantage; a scan asked for through the API is
recorded even when it changed nothing, so each check asks for one rather than wait for a
write.

The scenario tests at the end are issue 17's: how the fleet must behave with vantage health
and merged observations.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.receivers import Receiver
from tests.support.testbed import tcp_state
from tests.support.vantages import ScanRow, VantageBed, leftovers, micros

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("testbed_available")]

HOT = 8081  # a hot port: in every sentinel scan, unexpected
SENTINEL = 2.0  # seconds between sentinel scans on the bed


@pytest.fixture
def bed(tmp_path: Path, pg_url: str) -> Iterator[VantageBed]:
    """Vantages fra and nyc, one router (every port accepted: closed ones answer RST)."""
    with VantageBed(tmp_path, pg_url, routers=1) as made:
        made.routers[0].set_policy("accept")
        yield made


async def started(bed: VantageBed, **config: Any) -> None:
    """Start the nodes and wait until each holds every shard of its vantage."""
    bed.start(sentinel=f"{SENTINEL:g}s", **config)
    await asyncio.to_thread(bed.wait_ready)


def answered(row: ScanRow) -> bool:
    """The scan got answers (SYN-ACK or RST) from the router."""
    return not row.silent


# -- the bed -----------------------------------------------------------------------------------


async def test_each_vantage_node_joins_and_holds_every_shard_of_its_vantage(
    bed: VantageBed,
) -> None:
    """GET /api/v1/fleet, asked of either node, shows vantages fra and nyc with one node each,
    each node holding all the shards."""
    await started(bed)
    for asked in ("fra", "nyc"):
        fleet = bed.fleet(asked)
        total = fleet["shards"]["total"]
        vantages = {v["name"]: (v["nodes"], v["shards_held"]) for v in fleet["vantages"]}
        assert vantages == {"fra": (1, total), "nyc": (1, total)}
        nodes = {n["node"]: (n["vantage"], n["shards"]) for n in fleet["nodes"]}
        assert nodes == {"fra-1": ("fra", total), "nyc-1": ("nyc", total)}


async def test_a_port_opened_on_a_router_is_seen_open_from_both_vantages(
    bed: VantageBed,
) -> None:
    """A listener opened on the router shows up as an open port in scans of fra and of nyc."""
    router = bed.routers[0]
    target = bed.target(router)
    await started(bed)
    since = micros()
    router.listen(HOT)
    for vantage in ("fra", "nyc"):
        await bed.wait_scan(vantage, target, since, lambda r: r.open >= 1, f"sees {HOT} open")


async def test_a_cut_path_silences_one_vantage_while_the_other_still_gets_answers(
    bed: VantageBed,
) -> None:
    """With fra's path cut, fra's scans of the router get no answer at all while nyc's (and
    the root namespace's own probes) do; restored, fra gets answers again."""
    router = bed.routers[0]
    target = bed.target(router)
    router.listen(HOT)
    await started(bed)
    await bed.wait_scan("fra", target, 0, answered, "answered before the cut")
    cut = micros()
    bed.cut("fra")
    row = await bed.wait_scan("fra", target, cut, lambda r: r.silent, "silent after the cut")
    assert row.filtered > 0
    await bed.wait_scan("nyc", target, cut, lambda r: r.open >= 1, "answered during the cut")
    assert tcp_state(router.addr, HOT) == "open"  # the router itself is fine
    restored = micros()
    bed.restore("fra")
    await bed.wait_scan("fra", target, restored, lambda r: r.open >= 1, "answered again")


async def test_a_port_filtered_on_one_path_is_filtered_from_there_and_open_from_the_other(
    bed: VantageBed,
) -> None:
    """With HOT filtered on fra's path only, fra's scans see it filtered (other ports still
    answer) and nyc's see it open."""
    router = bed.routers[0]
    target = bed.target(router)
    router.listen(HOT)
    bed.filter_port("fra", router, HOT)
    await started(bed)
    since = micros()

    def filtered_only(row: ScanRow) -> bool:
        return row.open == 0 and row.closed > 0 and row.filtered >= 1

    await bed.wait_scan("fra", target, since, filtered_only, f"sees {HOT} filtered")
    await bed.wait_scan("nyc", target, since, lambda r: r.open >= 1, f"sees {HOT} open")
    bed.unfilter_port("fra", router, HOT)
    again = micros()
    await bed.wait_scan("fra", target, again, lambda r: r.open >= 1, f"sees {HOT} open")


async def test_the_bed_leaves_no_namespace_process_or_cluster_behind(tmp_path: Path) -> None:
    """After the bed's context exits (here by a failure inside it), none of its namespaces,
    node processes or its own PostgreSQL cluster remains."""
    made: dict[str, Any] = {}

    async def failing_test() -> None:
        with VantageBed(tmp_path, routers=1) as bed:  # with a cluster of its own
            await started(bed)
            bed.cut("fra")
            bed.filter_port("nyc", bed.routers[0], HOT)
            made.update(bed.resources())
            assert len(leftovers(made)) == 3 + 2 + 1  # all there while the bed runs
            raise RuntimeError("a test failing")

    with pytest.raises(RuntimeError, match="a test failing"):
        await failing_test()
    assert len(made["namespaces"]) == 3
    assert len(made["pids"]) == 2
    assert leftovers(made) == []


# -- issue 17's scenarios ----------------------------------------------------------------------

TARGET_EVENTS = {
    "target_down",
    "target_up",
    "reboot_suspected",
    "port_opened",
    "port_closed",
    "expected_port_closed",
    "finding_opened",
    "finding_reopened",
    "finding_resolved",
    "fingerprint_changed",
}


async def metric_total(bed: VantageBed, vantage: str, name: str, labels: str) -> float:
    """The sum of a metric's samples whose labels contain `labels`, on one node."""
    status, text = await asyncio.to_thread(bed.nodes[vantage].get, "/metrics")
    assert status == 200, text[:300]
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and labels in line
    )


async def sentinel_rounds(bed: VantageBed, vantage: str, rounds: int) -> None:
    """Block until the vantage's node has finished `rounds` more sentinel scans of every
    router (the outage lasts that long: its scans keep running, silent)."""
    sentinel = 'kind="sentinel"'
    before = await metric_total(bed, vantage, "exposuremon_scans_total", sentinel)
    want = before + rounds * len(bed.routers)
    end = time.monotonic() + 10 * rounds * SENTINEL + 30
    while await metric_total(bed, vantage, "exposuremon_scans_total", sentinel) < want:
        assert time.monotonic() < end, f"{vantage}'s sentinel scans stopped"
        await asyncio.sleep(0.2)


async def wait_events(
    bed: VantageBed, since: int, kind: str, count: int, deadline: float
) -> list[dict[str, Any]]:
    """Block until at least `count` events of type `kind` were observed after `since`."""
    end = time.monotonic() + deadline
    while True:
        found = [e for e in await bed.events(since) if e["type"] == kind]
        if len(found) >= count:
            return found
        if time.monotonic() > end:
            got = [(e["type"], e["target"], e["port"]) for e in await bed.events(since)]
            raise AssertionError(f"not within {deadline:g}s: {count} {kind}; events: {got}")
        await asyncio.sleep(0.2)


async def test_a_cut_vantage_raises_one_degraded_then_one_recovered_and_no_target_event(
    tmp_path: Path, pg_url: str
) -> None:
    """fra's path cut for three sentinel rounds: one vantage_degraded, no event of any target;
    restored: one vantage_recovered."""
    # Three routers: vantage health is judged from `vantage_min_targets` (3) answering ones.
    with VantageBed(tmp_path, pg_url, routers=3) as bed:
        for router in bed.routers:
            router.listen(443)
            router.set_policy("reject", {443: "accept"})
        await started(bed, expected_open="443", resolve_after=2)
        for router in bed.routers:
            for vantage in ("fra", "nyc"):
                await bed.wait_scan(vantage, bed.target(router), 0, answered, "answers")
        cut = micros()
        bed.cut("fra")
        await wait_events(bed, cut, "vantage_degraded", 1, deadline=40)
        await sentinel_rounds(bed, "fra", 3)
        restored = micros()
        bed.restore("fra")
        await wait_events(bed, restored, "vantage_recovered", 1, deadline=40)
        # Once more the time of a round, so that a late event would be seen.
        for router in bed.routers:
            await bed.wait_scan("fra", bed.target(router), micros(), answered, "answers again")
        events = await bed.events(cut)
    kinds = [e["type"] for e in events]
    assert kinds.count("vantage_degraded") == 1, events
    assert kinds.count("vantage_recovered") == 1, events
    assert [e for e in events if e["type"] in TARGET_EVENTS] == []


def open_from(seen_from: Any) -> set[str]:
    """The vantages a finding's `seen_from` says the port is open from (a list of names, one
    name, {vantage: state} or {state: [vantages]})."""
    if isinstance(seen_from, str):
        return {seen_from}
    if isinstance(seen_from, list | tuple):
        return {str(v) for v in seen_from}
    if isinstance(seen_from, dict):
        if "open" in seen_from:
            return open_from(seen_from["open"])
        return {str(k) for k, v in seen_from.items() if v == "open"}
    return set()


async def test_a_port_filtered_on_one_path_is_a_finding_seen_from_the_other(
    bed: VantageBed,
) -> None:
    """HOT opened on the router while filtered on fra's path: one finding, which pages, with
    `seen_from` naming nyc only in its event, the API and the message."""
    router = bed.routers[0]
    target = bed.target(router)
    bed.filter_port("fra", router, HOT)
    async with Receiver("webhook", hosts=bed.gateways) as hook:
        await started(bed, channels={"ops": hook})
        for vantage in ("fra", "nyc"):
            await bed.wait_scan(vantage, target, 0, answered, "answers")
        since = micros()
        router.listen(HOT)
        (opened,) = await wait_events(bed, since, "finding_opened", 1, deadline=30)
        assert opened["port"] == HOT
        # fra was asked at once and answered "filtered": the finding records both.
        assert open_from(opened["details"].get("seen_from")) == {"nyc"}, opened
        findings = bed.get_json("fra", f"/api/v1/findings?target={target}")["findings"]
        (finding,) = [f for f in findings if f["port"] == HOT]
        assert open_from(finding.get("seen_from")) == {"nyc"}, finding
        await hook.wait_for(lambda r: bool(r.delivered()), 30, "the finding's message")
        (message,) = hook.delivered().values()
        (event,) = [e for e in message.json()["events"] if e["type"] == "finding_opened"]
        assert open_from(event.get("seen_from")) == {"nyc"}, event
        # Still one finding after more rounds from both vantages.
        for vantage in ("fra", "nyc"):
            await bed.wait_scan(vantage, target, micros(), answered, "answers again")
        rows = await bed.sql("SELECT count(*) FROM findings WHERE target = ?", target)
        assert rows == [(1,)]


BUG_PORTS = [*range(80, 90), *range(440, 450)]
BUG_PORTS.remove(443)


async def outbox_reopens(bed: VantageBed) -> list[tuple[str, str, int]]:
    """(channel, group key, port) of every outbox row of a finding_reopened event."""
    rows = await bed.sql(
        "SELECT o.channel, o.group_key, e.port FROM outbox o JOIN events e ON e.id = o.event_id"
        " WHERE e.type = 'finding_reopened' ORDER BY o.id"
    )
    return [(str(c), str(g), int(p)) for c, g, p in rows]


async def test_the_incident_with_two_vantages_reopens_each_port_once_in_one_message(
    tmp_path: Path, pg_url: str
) -> None:
    """The incident seen from fra and nyc: the bug opens 80-89/440-449, the admin closes them,
    a reboot reopens them: one finding_reopened per port (not per vantage), and each channel
    gets the reopened ports grouped, each port in one message, once.

    Two more routers keep answering throughout: one router of three going silent for its
    reboot is a target down, not a vantage losing its uplink (vantage_silence_share 0.5)."""
    async with contextlib.AsyncExitStack() as stack:
        bed = stack.enter_context(VantageBed(tmp_path, pg_url, routers=3))
        router, *others = bed.routers
        target = bed.target(router)
        router.listen(443, "tls")
        router.set_policy("reject", {443: "accept"})
        for other in others:
            other.listen(443, "tls")
            other.set_policy("reject", {443: "accept"})
        hooks = {name: Receiver("webhook", hosts=bed.gateways) for name in ("ops", "noc")}
        for hook in hooks.values():
            await stack.enter_async_context(hook)
        await started(bed, channels=hooks, expected_open="443", resolve_after=2)
        for vantage in ("fra", "nyc"):
            await bed.wait_scan(vantage, target, 0, lambda r: r.open >= 1, "443 open")
        for port in BUG_PORTS:
            router.listen(port, "http", server_header="bintec", title="Login")
        router.set_policy("reject", {(80, 89): "accept", (440, 449): "accept"})
        router.save_boot_state()

        async def findings(state: str) -> bool:
            rows = await bed.sql(
                "SELECT count(*) FROM findings WHERE target = ? AND state = ?", target, state
            )
            return int(rows[0][0]) == len(BUG_PORTS)

        await wait_true(lambda: findings("open"), 40, "19 findings open")
        router.set_policy("reject", {443: "accept"})  # the admin closes them
        await wait_true(lambda: findings("resolved"), 40, "19 findings resolved")
        rebooted = micros()
        await asyncio.to_thread(router.reboot, 4.0, True)

        async def reopened_everywhere() -> bool:
            rows = await outbox_reopens(bed)
            if {port for _, _, port in rows} != set(BUG_PORTS):
                return False
            return all(
                {f"{c}/{g}" for c, g, _ in rows if c == name} <= set(hook.delivered())
                for name, hook in hooks.items()
            )

        await wait_true(reopened_everywhere, 60, "the reopen message in every channel")
        # Both vantages scanned the rebooted router since: a late duplicate would show.
        for vantage in ("fra", "nyc"):
            await bed.wait_scan(vantage, target, micros(), lambda r: r.open >= 1, "open")
        events = await bed.events(rebooted, target)
        rows = await outbox_reopens(bed)
    reopens = sorted(e["port"] for e in events if e["type"] == "finding_reopened")
    assert reopens == BUG_PORTS  # once per port, not once per vantage
    reboots = [e for e in events if e["type"] == "reboot_suspected"]
    assert len(reboots) == 1, " | ".join(
        f"{e['type']}:{e['port']}:{e['summary']}" for e in events if e["port"] in (None, 443, 80)
    )
    # One message per channel for the scan that saw the reopen (two only if that scan
    # straddled the power-on, as on a single node); every port in one of them, once.
    groups = sorted({g for _, g, _ in rows})
    assert 1 <= len(groups) <= 2, groups
    for name, hook in hooks.items():
        keys = {f"{name}/{g}" for g in groups}
        assert sum(q.key in keys for q in hook.requests) == len(keys)  # each message once
        ports = [
            e["port"]
            for key in keys
            for e in hook.delivered()[key].json()["events"]
            if e["type"] == "finding_reopened"
        ]
        assert sorted(ports) == BUG_PORTS


async def wait_true(check: Any, deadline: float, what: str) -> None:
    """Poll an async condition until true; AssertionError after `deadline` seconds."""
    end = time.monotonic() + deadline
    while not await check():
        if time.monotonic() > end:
            raise AssertionError(f"not within {deadline:g}s: {what}")
        await asyncio.sleep(0.2)
