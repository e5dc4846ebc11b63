"""Helpers for daemon tests: config files, a running Service, a daemon subprocess, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from exposuremon.config.models import load_config
from exposuremon.model import Event, EventType, ScanKind
from exposuremon.service import Service
from exposuremon.store.database import Store


def write_config(
    directory: Path,
    targets: list[dict[str, Any]],
    *,
    sentinel: str = "1s",
    quick: str = "30s",
    full: str = "1h",
    extra: str = "",
) -> Path:
    """A config with short intervals, no jitter, and the HTTP server on a free port."""
    lines = [
        "[daemon]",
        f'state_dir = "{directory / "state"}"',
        'log_format = "json"',
        'log_level = "debug"',
        "[http]",
        'listen = "127.0.0.1:0"',
        "[scan]",
        'timeout_initial = "300ms"',
        'fingerprint_timeout = "2s"',
        "[schedule]",
        f'sentinel = "{sentinel}"',
        f'quick = "{quick}"',
        f'full = "{full}"',
        "jitter = 0",
    ]
    for target in targets:
        lines.append("[[targets]]")
        for key, value in target.items():
            rendered = f'"{value}"' if isinstance(value, str) else repr(value).lower()
            lines.append(f"{key} = {rendered}")
    path = directory / "config.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


@contextlib.asynccontextmanager
async def running_service(config_path: Path) -> AsyncIterator[Service]:
    """A started Service for the config, stopped afterwards."""
    service = Service(load_config(config_path), config_path)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def wait_until(check: Callable[[], Awaitable[Any]], deadline: float, what: str) -> Any:
    """Poll an async condition until it returns something truthy, or fail after `deadline` s."""
    try:
        async with asyncio.timeout(deadline):
            while True:
                value = await check()
                if value:
                    return value
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"not within {deadline}s: {what}") from None


async def stored_last_scan(service: Service, target: str, kind: ScanKind) -> dt.datetime | None:
    """When the target's last complete scan of `kind` ended, as the store has it once the
    quiet scans the service holds (any kind that changed nothing) are flushed."""
    await service.flush_quiet()
    return (await service.store.load_state(target)).last_scan.get(kind)


async def all_events(store: Store, target: str) -> list[Event]:
    """Every event of a target, oldest first."""
    events: list[Event] = []
    cursor = None
    for _ in range(1000):  # bounded pagination
        page, cursor = await store.events(target=target, limit=500, cursor=cursor)
        events.extend(page)
        if cursor is None:
            break
    return sorted(events, key=lambda e: e.id or 0)


def of_type(events: list[Event], kind: EventType) -> list[Event]:
    """The events of one type."""
    return [e for e in events if e.type is kind]


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """Stop a child: SIGTERM, SIGKILL after 10 s; nothing when it has exited already."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class Daemon:
    """`exposuremon run -c CONFIG` as a subprocess, as systemd would run it."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Launch the daemon (its log goes to a file the test can read)."""
        exe = str(Path(sys.executable).with_name("exposuremon"))
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [exe, "run", "-c", str(self.config_path)],
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def log(self) -> str:
        """What the daemon logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: signal.Signals) -> None:
        """Send a signal to the daemon."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the daemon to exit; its exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def wait_log(self, needle: str, deadline: float, after: int = 0) -> None:
        """Block until the log contains `needle` after offset `after`."""
        end = time.monotonic() + deadline
        while needle not in self.log()[after:]:
            if time.monotonic() > end:
                raise AssertionError(f"daemon never logged {needle!r}:\n{self.log()[-3000:]}")
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """Stop it for good (SIGKILL if it does not exit on SIGTERM)."""
        if self.proc is not None:
            stop_process(self.proc)


@contextlib.contextmanager
def daemon_process(config_path: Path, log_path: Path) -> Iterator[Daemon]:
    """A daemon subprocess, always stopped afterwards."""
    daemon = Daemon(config_path, log_path)
    try:
        yield daemon
    finally:
        daemon.kill()
