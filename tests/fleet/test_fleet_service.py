"""Fleet mode in the daemon: nodes on one PostgreSQL database split the targets by shard
leases, schedule only their own, and take over a leaving node's targets."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from exposuremon.model import ScanKind
from exposuremon.service import Service
from tests.support.daemon import running_service, wait_until, write_config

NAMES = [f"t{i:02d}" for i in range(24)]


def node_config(tmp_path: Path, node: str, quick: str = "30s") -> Path:
    """Node `node`'s config: the 24 shared targets (nothing listens: every port refuses)."""
    targets: list[dict[str, object]] = [
        {"name": name, "address": f"127.0.3.{i + 1}", "ports_quick": "1-5", "ports_full": "1-5"}
        for i, name in enumerate(NAMES)
    ]
    directory = tmp_path / node
    directory.mkdir()
    fleet = f'[store]\nurl_env = "EM_FLEET_URL"\n[fleet]\nnode = "{node}"\nlease_ttl = "3s"\n'
    return write_config(directory, targets, quick=quick, extra=fleet)


def owned(service: Service) -> set[str]:
    """The targets `service` holds the shard of now."""
    return {name for name in NAMES if service.owns(name)}


def sentinel_since(service: Service, names: set[str], since: dt.datetime) -> bool:
    """Every one of `names` has a sentinel scan by `service` that ended after `since`."""
    seen = service.pipeline.seen
    return all(
        name in seen and (seen[name].last_scan.get(ScanKind.SENTINEL) or since) > since
        for name in names
    )


async def test_two_nodes_split_the_targets_and_a_leaving_one_hands_them_over(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each target is scanned by exactly one of two nodes; when one stops, the other takes
    its targets and scans them."""
    monkeypatch.setenv("EM_FLEET_URL", pg_url)
    async with running_service(node_config(tmp_path, "a")) as a:
        assert owned(a) == set(NAMES)  # alone: every shard is its
        async with running_service(node_config(tmp_path, "b")) as b:

            async def split() -> bool:
                mine, theirs = owned(a), owned(b)
                return bool(mine and theirs) and not mine & theirs and mine | theirs == set(NAMES)

            await wait_until(split, 60, "the targets split between a and b")
            assert a.not_ready() is None
            assert b.not_ready() is None
            start = dt.datetime.now(dt.UTC)

            async def b_scans_its_own() -> bool:
                return sentinel_since(b, owned(b), start)

            await wait_until(b_scans_its_own, 30, "b scanning the targets of its shards")
            handed = owned(b)
        stopped = dt.datetime.now(dt.UTC)

        async def a_holds_all() -> bool:
            return owned(a) == set(NAMES)

        await wait_until(a_holds_all, 15, "a holding every shard after b left")

        async def a_scans_them() -> bool:
            return sentinel_since(a, handed, stopped)

        await wait_until(a_scans_them, 30, "a scanning the targets b handed over")


async def test_a_scan_asked_of_any_node_runs_on_the_node_holding_the_target(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`scan_now` (POST /api/v1/targets/{name}/scan) on a node that does not hold the target
    passes the request on through the store, and the holding node runs and writes it."""
    monkeypatch.setenv("EM_FLEET_URL", pg_url)
    async with (
        running_service(node_config(tmp_path, "a", quick="1h")) as a,
        running_service(node_config(tmp_path, "b", quick="1h")) as b,
    ):

        async def b_holds_some() -> set[str]:
            return owned(b) - owned(a)

        name = sorted(await wait_until(b_holds_some, 60, "b holding targets"))[0]
        key = (name, ScanKind.QUICK)
        before = (await a.store.last_scans()).get(key)
        assert await a.scan_now(name)
        assert await a.scan_now("no-such-target") is False

        async def written() -> bool:
            after = (await a.store.last_scans()).get(key)
            return after is not None and (before is None or after > before)

        await wait_until(written, 30, "the on-demand quick scan written by b")


async def test_a_target_added_by_a_reload_is_scanned_by_the_node_holding_it(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload that adds a target schedules it on the fleet node that holds its shard."""
    monkeypatch.setenv("EM_FLEET_URL", pg_url)
    path = node_config(tmp_path, "a")
    async with running_service(path) as a:
        text = path.read_text()
        path.write_text(text + '[[targets]]\nname = "added"\naddress = "127.0.3.99"\n')
        assert await a.reload()
        assert a.owns("added")  # alone in the fleet: every shard is its

        async def scanned() -> bool:
            return "added" in a.pipeline.seen

        await wait_until(scanned, 30, "the added target scanned")
