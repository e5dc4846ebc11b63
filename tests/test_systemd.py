"""sd_notify on a real AF_UNIX datagram socket: protocol, watchdog cadence, the service's order."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import re
import signal
import socket
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from exposuremon.model import Finding, FindingState, Severity, TargetState
from exposuremon.notify import Notifier
from exposuremon.systemd import (
    STATUS_MAX,
    SystemdNotifier,
    one_line,
    service_status,
    socket_address,
    status_line,
    watchdog_interval,
)
from tests.support.daemon import daemon_process, running_service, wait_until, write_config

T0 = dt.datetime(2026, 11, 26, 3, 14, 7, tzinfo=dt.UTC)
Make = Callable[[dict[str, str]], SystemdNotifier]


class Receiver:
    """The systemd side: a bound AF_UNIX datagram socket collecting what arrives."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        """Everything queued now (never waits)."""
        got = []
        for _ in range(10_000):
            try:
                got.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                break
        self.messages += got
        return got

    async def next(self, deadline: float = 10.0) -> str:
        """The next datagram, waiting on the event loop."""
        async with asyncio.timeout(deadline):
            data = await asyncio.get_running_loop().sock_recv(self.sock, 4096)
        self.messages.append(data.decode())
        return data.decode()

    def wait_for(self, needle: str, deadline: float) -> list[str]:
        """Blocking: datagrams until one contains `needle` (for subprocess tests)."""
        got = []
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            finally:
                self.sock.setblocking(False)
            self.messages.append(message)
            got.append(message)
            if needle in message:
                return got
        raise AssertionError(f"no {needle!r} within {deadline}s; got {got}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notifiers() -> Iterator[Make]:
    """Make notifiers from an environment; their sockets are closed at teardown."""
    made: list[SystemdNotifier] = []

    def make(env: dict[str, str]) -> SystemdNotifier:
        made.append(SystemdNotifier.from_env(env))
        return made[-1]

    yield make
    for notifier in made:
        notifier.close()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    """A notify socket at a file path."""
    rx = Receiver(str(tmp_path / "notify.sock"))
    yield rx
    rx.close()


def env_for(path: str, **extra: str) -> dict[str, str]:
    """An environment naming the notify socket, as systemd sets it."""
    return {"NOTIFY_SOCKET": path, **extra}


# -- pure parts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@sd-notify/42", "\0sd-notify/42"),
        ("@", None),
        ("", None),
        (None, None),
        ("relative/path", None),
        ("vsock:2:1234", None),
    ],
)
def test_socket_address(value: str | None, expected: str | None) -> None:
    """$NOTIFY_SOCKET: absolute paths as they are, `@name` abstract, anything else disabled."""
    assert socket_address(value) == expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "4242"}, 0.1),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    """Half of $WATCHDOG_USEC, and only for the process $WATCHDOG_PID names."""
    assert watchdog_interval(env, pid=4242) == expected


@given(st.text(max_size=600), st.integers(min_value=2, max_value=300))
def test_one_line_is_one_bounded_printable_line(text: str, limit: int) -> None:
    """STATUS= text never spans lines, holds no control characters and respects the limit."""
    line = one_line(text, limit)
    assert len(line) <= limit
    assert all(ch.isprintable() for ch in line)


def finding(port: int, state: FindingState) -> Finding:
    """A finding as the store keeps it."""
    return Finding(
        id=port, target="r", port=port, severity=Severity.CRITICAL, state=state, opened_at=T0
    )


def test_status_line_summarises_targets_findings_and_last_scan() -> None:
    """Targets, open and acked findings, the newest scan; a refused reload comes first."""
    assert status_line(3, 0, 0, 0, None) == "3 targets, waiting for the first scans"
    seen = {
        "a": TargetState(
            name="a",
            findings={
                80: finding(80, FindingState.OPEN),
                81: finding(81, FindingState.OPEN),
                82: finding(82, FindingState.ACKED),
            },
            last_observed=T0 - dt.timedelta(minutes=5),
        ),
        "b": TargetState(name="b", last_observed=T0),
        "gone": TargetState(name="gone", findings={1: finding(1, FindingState.OPEN)}),
    }
    text = service_status(["a", "b", "c"], seen)
    assert text == (
        "3 targets (2 scanned since start), 2 open findings (1 acked), "
        "last scan 2026-11-26T03:14:07Z"
    )
    broken = service_status(["a", "b"], seen, "targets[2].expected_open: port 70000 out of range")
    assert broken.startswith(
        "config reload failed, running on the previous config: "
        "targets[2].expected_open: port 70000 out of range; 2 targets, 2 open findings"
    )
    assert len(service_status(["a"], seen, "x" * 1000)) == STATUS_MAX


# -- the protocol on a real socket -------------------------------------------------------------


def test_messages_on_a_path_socket(receiver: Receiver, tmp_path: Path, notifiers: Make) -> None:
    """Each call is one datagram of KEY=value lines, as sd_notify(3) sends them."""
    notifier = notifiers(env_for(str(tmp_path / "notify.sock")))
    assert notifier.enabled
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.ready()
    notifier.status("2 targets\nnext line")
    notifier.reloading()
    notifier.watchdog()
    notifier.stopping()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    got = receiver.drain()
    assert got[0] == "READY=1"
    assert got[1] == "STATUS=2 targets next line"
    reloading, monotonic = got[2].split("\n")
    assert reloading == "RELOADING=1"
    assert monotonic.startswith("MONOTONIC_USEC=")
    assert before <= int(monotonic.split("=")[1]) <= after
    assert got[3:] == ["WATCHDOG=1", "STOPPING=1"]


def test_abstract_socket(notifiers: Make) -> None:
    """`@name` reaches a socket in the abstract namespace."""
    name = f"exposuremon-test-{uuid.uuid4().hex}"
    rx = Receiver("\0" + name)
    try:
        notifier = notifiers(env_for("@" + name))
        notifier.ready()
        assert rx.drain() == ["READY=1"]
    finally:
        rx.close()


async def test_without_notify_socket_nothing_happens() -> None:
    """No $NOTIFY_SOCKET: every call is a no-op, and no watchdog task starts."""
    notifier = SystemdNotifier.from_env({"WATCHDOG_USEC": "100000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert notifier.notify("READY=1") is False
    notifier.ready()
    notifier.status("x")
    notifier.start_watchdog()
    assert notifier._task is None
    await notifier.stop_watchdog()


def test_a_missing_socket_is_not_an_error(tmp_path: Path, notifiers: Make) -> None:
    """A socket that is gone (systemd restarted) makes sends fail quietly, never raise."""
    notifier = notifiers(env_for(str(tmp_path / "nobody-here.sock")))
    assert notifier.notify("READY=1") is False
    notifier.ready()
    notifier.stopping()


def test_a_full_receiver_never_blocks(receiver: Receiver, tmp_path: Path, notifiers: Make) -> None:
    """When systemd does not read, sends are dropped at once instead of stalling the loop."""
    notifier = notifiers(env_for(str(tmp_path / "notify.sock")))
    started = time.monotonic()
    sent = [notifier.notify("WATCHDOG=1") for _ in range(2000)]
    assert time.monotonic() - started < 5
    assert sent[0] is True
    assert False in sent  # the queue filled up and later ones were dropped
    assert receiver.drain()[0] == "WATCHDOG=1"


# -- the watchdog ------------------------------------------------------------------------------


async def test_watchdog_pings_at_half_the_timeout(receiver: Receiver, tmp_path: Path) -> None:
    """WATCHDOG_USEC=200ms: a WATCHDOG=1 every 100 ms from the event loop, none after stop."""
    notifier = SystemdNotifier.from_env(
        env_for(str(tmp_path / "notify.sock"), WATCHDOG_USEC="200000")
    )
    assert notifier.watchdog_interval == pytest.approx(0.1)
    notifier.start_watchdog()
    arrivals = []
    try:
        for _ in range(8):
            assert await receiver.next(5) == "WATCHDOG=1"
            arrivals.append(time.monotonic())
    finally:
        await notifier.stop_watchdog()
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert 0.08 <= statistics.median(gaps) <= 0.2, gaps
    receiver.drain()
    await asyncio.sleep(0.35)  # more than three intervals: a running task would have pinged
    assert receiver.drain() == []


async def test_a_blocked_loop_stops_the_pings(receiver: Receiver, tmp_path: Path) -> None:
    """While a callback blocks the event loop, no WATCHDOG=1 is sent; pings resume after."""
    notifier = SystemdNotifier.from_env(
        env_for(str(tmp_path / "notify.sock"), WATCHDOG_USEC="100000")
    )
    notifier.start_watchdog()
    try:
        assert await receiver.next(5) == "WATCHDOG=1"
        during: list[str] = []
        done = asyncio.Event()

        def block() -> None:
            receiver.drain()  # everything sent before the block
            time.sleep(0.5)  # ten ping intervals with the loop stuck
            during.extend(receiver.drain())  # only what was sent while blocked
            done.set()

        asyncio.get_running_loop().call_soon(block)
        await asyncio.wait_for(done.wait(), 5)
        assert during == []
        assert await receiver.next(5) == "WATCHDOG=1"  # alive again
    finally:
        await notifier.stop_watchdog()


# -- the service -------------------------------------------------------------------------------


def status_messages(messages: list[str]) -> list[str]:
    """The STATUS= texts among the datagrams."""
    return [m.removeprefix("STATUS=") for m in messages if m.startswith("STATUS=")]


async def test_service_lifecycle_order(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """READY → STATUS; reload: RELOADING → READY → STATUS; a broken config is kept out and
    STATUS= says why; a fixed one clears it; STOPPING at shutdown."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    config = write_config(tmp_path, [{"name": "lo", "address": "127.0.0.1"}], sentinel="1h")
    async with running_service(config) as service:
        assert await receiver.next() == "READY=1"
        assert (await receiver.next()).startswith("STATUS=1 target")

        async def scanned() -> bool:
            return service.scans_recorded >= 1

        await wait_until(scanned, 20, "a first scan")
        await service.refresh_status()
        # Whatever listens on loopback's hot ports right now: the count is there, and the time.
        text = (await receiver.next()).removeprefix("STATUS=")
        assert re.fullmatch(r"1 target, \d+ open findings?, last scan 20\S+Z", text), text

        good = config.read_text().replace('name = "lo"', 'name = "renamed"')
        config.write_text(good)
        assert await service.reload() is True
        got = receiver.drain()
        assert got[0].startswith("RELOADING=1\nMONOTONIC_USEC=")
        assert got[1] == "READY=1"
        assert status_messages(got[2:]) == ["1 target, waiting for the first scans"]

        config.write_text(good.replace('address = "127.0.0.1"', "address = 70000"))
        assert await service.reload() is False
        got = receiver.drain()
        assert got[0].startswith("RELOADING=1")
        assert got[1] == "READY=1"
        [text] = status_messages(got[2:])
        assert text.startswith("config reload failed, running on the previous config: ")
        assert "targets[0].address" in text
        assert [t.name for t in service.config.targets] == ["renamed"]  # the old one runs on
        await service.refresh_status()  # the periodic refresh keeps saying so
        assert "config reload failed" in await receiver.next()

        config.write_text(good)
        assert await service.reload() is True
        assert "reload failed" not in " ".join(status_messages(receiver.drain()))
    assert receiver.drain()[0] == "STOPPING=1"


async def test_service_pings_the_watchdog_until_stopped(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With WATCHDOG_USEC the running service pings; after stop() returns, it never does."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    config = write_config(tmp_path, [{"name": "lo", "address": "127.0.0.1"}], sentinel="1h")
    async with running_service(config):
        pings = 0
        for _ in range(100):  # bounded: READY and STATUS come in between
            pings += await receiver.next() == "WATCHDOG=1"
            if pings == 4:
                break
        assert pings == 4
    receiver.drain()
    await asyncio.sleep(0.35)
    assert receiver.drain() == []


def test_daemon_process_under_a_notify_socket(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`exposuremon run` as systemd runs it: READY, STATUS, watchdog pings, SIGHUP reload
    between RELOADING and READY, SIGTERM → STOPPING and exit 0."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    config = write_config(tmp_path, [{"name": "lo", "address": "127.0.0.1"}], sentinel="1h")
    with daemon_process(config, tmp_path / "daemon.log") as daemon:
        daemon.start()
        got = receiver.wait_for("READY=1", 30)
        assert "WATCHDOG=1" in got  # pings start before READY (migrations may be slow)
        assert receiver.wait_for("STATUS=", 5)[-1].startswith("STATUS=1 target")
        receiver.wait_for("WATCHDOG=1", 5)
        daemon.signal(signal.SIGHUP)
        got = receiver.wait_for("READY=1", 10)
        assert any(m.startswith("RELOADING=1") for m in got)
        daemon.wait_log('"reloaded"', 10)
        daemon.signal(signal.SIGTERM)
        receiver.wait_for("STOPPING=1", 10)
        assert daemon.wait(15) == 0


async def test_reload_is_atomic_and_reported(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload that fails to load (nan) or to build (a channel's URL file is missing) is
    rejected as a whole: a log line with the reason, STATUS=, the metrics, and the old config,
    jobs, channels and scan slots running on; a good one then clears it."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.setenv("HOOK_URL", "http://127.0.0.1:9/hook")
    channel = '[[notify]]\nname = "ops"\ntype = "webhook"\nurl_env = "HOOK_URL"\n'
    config = write_config(
        tmp_path, [{"name": "lo", "address": "127.0.0.1"}], sentinel="1h", extra=channel
    )
    good = config.read_text()
    async with running_service(config) as service:
        registry = service.metrics.registry

        def metric(name: str) -> float | None:
            return registry.get_sample_value(f"exposuremon_config_{name}")

        assert (metric("reload_failures_total"), metric("last_reload_successful")) == (0.0, 1.0)
        jobs = service._scheduler.next_runs()
        sweeps = {name: service._sweeper.plan.spec(name) for name in ("lo", "renamed")}
        slots = service._slots
        running = service.config
        missing = tmp_path / "missing-url"
        broken = {
            "nan": good.replace('sentinel = "1h"', "sentinel = nan"),
            # A valid file (new target name, new slot limit) whose channel cannot be built.
            "unbuildable": good.replace('"lo"', '"renamed"')
            .replace("[scan]\n", "[scan]\nmax_concurrent_scans = 3\n")
            .replace('url_env = "HOOK_URL"', f'url_file = "{missing}"'),
        }
        for n, (label, text) in enumerate(broken.items(), start=1):
            config.write_text(text)
            receiver.drain()
            with capture_logs() as logs:
                assert await service.reload() is False, label
            [rejected] = [e for e in logs if e["event"].startswith("reload rejected")]
            needle = "schedule.sentinel" if label == "nan" else str(missing)
            assert needle in rejected["reason"], (label, rejected)
            [text_line] = status_messages(receiver.drain())
            assert text_line.startswith("config reload failed, running on the previous config")
            assert needle in text_line, (label, text_line)
            assert metric("reload_failures_total") == n
            assert metric("last_reload_successful") == 0.0
            # Nothing of the new config was adopted.
            assert service.config is running
            assert service._scheduler.next_runs() == jobs
            assert {name: service._sweeper.plan.spec(name) for name in sweeps} == sweeps
            assert service._slots is slots
            assert isinstance(service.notifications, Notifier)
            assert service.notifications._channels == {"ops": running.notify[0]}

        config.write_text(good.replace('"lo"', '"renamed"'))
        assert await service.reload() is True
        assert "reload failed" not in " ".join(status_messages(receiver.drain()))
        assert (metric("reload_failures_total"), metric("last_reload_successful")) == (2.0, 1.0)
        assert [t.name for t in service.config.targets] == ["renamed"]
        assert any(job.startswith("renamed/") for job in service._scheduler.next_runs())
        assert service._sweeper.plan.names == {"renamed"}
