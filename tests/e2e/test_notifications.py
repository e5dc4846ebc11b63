"""Notifications end to end: kill -9 with undelivered messages, and the incident on the test bed.

Receivers are the real aiohttp servers of tests/support/receivers.py; the daemon is either the real
`exposuremon run` subprocess (killed with SIGKILL) or the in-process Service.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from exposuremon.model import EventType, FindingState, Observed
from tests.support.daemon import Daemon, running_service, wait_until, write_config
from tests.support.loopback import Listeners
from tests.support.receivers import KINDS, SECRET, Answer, Receiver
from tests.support.testbed import Router

pytestmark = pytest.mark.slow

BUG_PORTS = [*range(80, 90), *range(440, 450)]
BUG_PORTS.remove(443)
SENTINEL = 1.0  # seconds: the test configs' sentinel interval


def outbox(state_dir: Path) -> list[dict[str, Any]]:
    """The outbox rows joined with their events' type and port (read-only, beside the daemon)."""
    uri = f"file:{state_dir / 'exposuremon.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT o.*, e.type AS event_type, e.port AS event_port FROM outbox o"
            " JOIN events e ON e.id = o.event_id ORDER BY o.id"
        ).fetchall()
    return [dict(r) for r in rows]


def notify_toml(entries: list[dict[str, Any]]) -> str:
    """[[notify]] tables for write_config's `extra`."""
    lines = []
    for entry in entries:
        lines.append("[[notify]]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in entry.items())
    return "\n".join(lines) + "\n"


def loopback_net() -> str:
    """A 127.x.y prefix of our own, so that parallel runs and other tests do not collide."""
    pid = os.getpid()
    return f"127.{100 + pid % 100}.{pid // 100 % 250 + 1}"


async def test_kill_9_with_undelivered_messages_loses_none_and_repeats_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL with failed and in-flight deliveries; after a restart every message arrives,
    each once after dedup on the delivery id, and one delivered before the kill is not resent.
    """
    net = loopback_net()
    targets = {"alpha": (f"{net}.1", (8081, 8443)), "beta": (f"{net}.2", (8082, 8084))}
    listeners = Listeners()
    # Whatever is not scripted is held: the daemon dies with that request in flight.
    hook = Receiver("webhook", default=Answer(hold=True))
    chat = Receiver("slack", default=Answer(hold=True))
    hook.script(Answer(500))  # message 1 fails, its retry is held
    chat.script(Answer(), Answer(500))  # message 1 delivered, message 2 fails, retry held
    state_dir = tmp_path / "state"
    try:
        for address, ports in targets.values():
            for port in ports:
                listeners.open(address, port)
        await hook.start()
        await chat.start()
        monkeypatch.setenv("E2E_HOOK_URL", hook.url)  # one secret from env, one from a file
        (tmp_path / "chat-url").write_text(chat.url + "\n")
        extra = notify_toml(
            [
                {"name": "hook", "type": "webhook", "url_env": "E2E_HOOK_URL"},
                {"name": "chat", "type": "slack", "url_file": str(tmp_path / "chat-url")},
            ]
        )
        config = write_config(
            tmp_path,
            [{"name": name, "address": address} for name, (address, _) in targets.items()],
            extra=extra,
        )
        log = tmp_path / "daemon.log"
        first = Daemon(config, log)
        first.start()
        try:
            await hook.wait_for(lambda r: len(r.requests) == 2, 30, "a failure, then in flight")
            await chat.wait_for(lambda r: len(r.requests) == 3, 30, "sent, failed, in flight")
            first.signal(signal.SIGKILL)
            assert first.wait(10) == -signal.SIGKILL
        finally:
            first.kill()
        killed_at = time.monotonic()
        before = outbox(state_dir)
        assert any(r["status"] == "pending" for r in before)
        delivered_first = chat.requests[0].key
        in_flight = {hook.requests[1].key, chat.requests[2].key}
        # The receivers recover; the held requests are answered (to a dead socket), and count
        # as posted, like a chat service that got the whole request before the sender died.
        for receiver in (hook, chat):
            receiver.default = Answer()
            receiver.release()
            await receiver.wait_for(
                lambda r: all(q.status for q in r.requests), 10, "held requests answered"
            )

        second = Daemon(config, log)
        second.start()
        try:

            async def all_sent() -> bool:
                rows = outbox(state_dir)
                return all(r["status"] == "sent" for r in rows)

            await wait_until(all_sent, 40, "every outbox row sent after the restart")
        finally:
            second.signal(signal.SIGTERM)
            await asyncio.to_thread(second.wait, 15)
    finally:
        listeners.close()
        await hook.close()
        await chat.close()

    rows = outbox(state_dir)
    for name, receiver in (("hook", hook), ("chat", chat)):
        mine = [r for r in rows if r["channel"] == name]
        groups = {f"{name}/{r['group_key']}" for r in mine}
        assert set(receiver.delivered()) == groups  # every message arrived
        accepted = collections.Counter(q.key for q in receiver.accepted())
        for key, n in accepted.items():
            # Raw duplicates only for a message in flight at the kill, and then exactly two.
            assert n == 1 or (key in in_flight and n == 2), (name, key, n)
        assert all(r["attempts"] >= 1 for r in mine)
    # The messages in flight at the kill arrived twice (at least once), deduplicated to one.
    for key in in_flight:
        receiver = hook if key and key.startswith("hook/") else chat
        assert sum(q.key == key for q in receiver.accepted()) == 2
    after_kill = [q for q in chat.requests if q.at > killed_at]
    assert delivered_first not in {q.key for q in after_kill}  # sent before: never again
    # Each event is in exactly one delivered webhook message.
    seen: list[int] = []
    for req in hook.delivered().values():
        seen.extend(e["id"] for e in req.json()["events"])
    assert sorted(seen) == sorted(r["event_id"] for r in rows if r["channel"] == "hook")
    assert SECRET not in log.read_text()


@pytest.mark.netns
async def test_reopen_after_reboot_is_grouped_per_channel(router: Router, tmp_path: Path) -> None:
    """The incident: each channel gets the reopened ports grouped (not one message per port),
    plus resolved notices."""
    receivers = {kind: Receiver(kind) for kind in KINDS}
    router.listen(443, "tls")
    router.set_policy("reject", {443: "accept"})
    try:
        for receiver in receivers.values():
            await receiver.start()
        extra = notify_toml(
            [{"name": kind, "type": kind, "url": r.url} for kind, r in receivers.items()]
        )
        config = write_config(
            tmp_path,
            [{"name": "surgery", "address": router.addr, "expected_open": "443"}],
            sentinel=f"{SENTINEL:g}s",
            extra=extra,
        )
        async with running_service(config) as service:
            store = service.store

            async def known_443() -> bool:
                state = await store.load_state("surgery")
                rec = state.ports.get(443)
                return rec is not None and rec.state is Observed.OPEN

            await wait_until(known_443, 20, "443 seen open")
            for port in BUG_PORTS:
                router.listen(port, "http", server_header="bintec", title="Login")
            router.set_policy("reject", {(80, 89): "accept", (440, 449): "accept"})
            router.save_boot_state()

            async def findings(state: FindingState) -> bool:
                rows, _ = await store.findings(target="surgery", state=state, limit=100)
                return len(rows) == len(BUG_PORTS)

            await wait_until(lambda: findings(FindingState.OPEN), 30, "19 findings open")
            router.set_policy("reject", {443: "accept"})  # the admin closes them
            await wait_until(lambda: findings(FindingState.RESOLVED), 30, "19 resolved")
            await asyncio.to_thread(router.reboot, 4.0, True)

            def reopen_groups(kind: str) -> set[str]:
                return {
                    f"{kind}/{r['group_key']}"
                    for r in outbox(tmp_path / "state")
                    if r["channel"] == kind and r["event_type"] == EventType.FINDING_REOPENED
                }

            async def reopened_everywhere() -> bool:
                rows = outbox(tmp_path / "state")
                ports = {r["event_port"] for r in rows if r["event_type"] == "finding_reopened"}
                if ports != set(BUG_PORTS):
                    return False
                return all(
                    reopen_groups(kind) <= set(r.delivered()) for kind, r in receivers.items()
                )

            # Generous here, so that a failure below says what went wrong (split, or late).
            await wait_until(reopened_everywhere, 60, "the reopen message in every channel")
        rows = outbox(tmp_path / "state")
    finally:
        for receiver in receivers.values():
            await receiver.close()

    # Detection reports every reopened port in one scan, unless that scan straddled the
    # power-on (some probes before it, some after); the notifier's part is one message per
    # channel for each such scan, never one per port.
    scans = sorted({r["group_key"] for r in rows if r["event_type"] == "finding_reopened"}, key=int)
    assert 1 <= len(scans) <= 2, scans
    ports: list[int] = []
    for kind, receiver in receivers.items():
        keys = [f"{kind}/{scan}" for scan in scans]
        assert reopen_groups(kind) == set(keys)
        assert sum(q.key in keys for q in receiver.requests) == len(keys)  # each once
        # How soon the first message goes out is a figure for the benchmarks
        # (bench/daemon_bench.py), not a timed assertion: a loaded machine may be slower.
        # Resolved notices went out too, though finding_resolved events are only "info".
        assert any(r["event_type"] == "finding_resolved" for r in rows if r["channel"] == kind)
    bodies = [receivers["webhook"].delivered()[f"webhook/{scan}"].json() for scan in scans]
    for body in bodies:
        reopened = [e for e in body["events"] if e["type"] == "finding_reopened"]
        assert all(e["severity"] == "critical" for e in reopened)
        ports.extend(e["port"] for e in reopened)
    assert sorted(ports) == BUG_PORTS  # every reopened port, each in one message
    # With its context: the reboot is in the same message, or (when a scan saw the router
    # answer before its services were back, so the reboot was suspected one scan earlier)
    # named in every reopen's summary.
    first = bodies[0]["events"]
    assert "reboot_suspected" in {e["type"] for e in first} or all(
        "reboot" in e["summary"] for e in first if e["type"] == "finding_reopened"
    )
