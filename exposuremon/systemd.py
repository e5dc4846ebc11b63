"""sd_notify: tell systemd when the daemon is ready, reloading, stopping, and still alive.

The protocol is one datagram of newline-separated `KEY=value` lines sent to the AF_UNIX socket
named by $NOTIFY_SOCKET (a path, or `@name` for the abstract namespace). Without it, as when
run from a shell, every call here does nothing, so the service calls it unconditionally.

Sends never block and never raise: a datagram socket whose receiver is slow would otherwise
stall the event loop, and the daemon must not fail because its supervisor went away. The
watchdog pings come from a task on the daemon's own event loop, every half of $WATCHDOG_USEC,
so a loop that is blocked stops pinging and systemd restarts the service.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import time
from collections.abc import Iterable, Mapping

from exposuremon.logs import get_logger
from exposuremon.model import FindingState, TargetState
from exposuremon.units import rfc3339

# Longest STATUS= text sent; systemd shows one line in `systemctl status`.
STATUS_MAX = 240


def socket_address(value: str | None) -> str | None:
    """The address to send to for a $NOTIFY_SOCKET value, or None when it names none we use.

    `@name` is Linux's abstract namespace (a leading NUL byte); other values must be absolute
    paths. Anything else (unset, empty, `vsock:` addresses) disables notifications.
    """
    if not value:
        return None
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of $WATCHDOG_USEC, or None when not asked for.

    $WATCHDOG_PID, when set, names the process the watchdog is for: a child that inherited
    the environment must not ping on its parent's behalf.
    """
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner != str(pid):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2 / 1_000_000 if usec > 0 else None


def one_line(text: str, limit: int = STATUS_MAX) -> str:
    """Text fit for STATUS=: newlines and control characters become spaces, bounded length."""
    flat = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def status_line(
    targets: int,
    scanned: int,
    open_findings: int,
    acked_findings: int,
    last_scan: dt.datetime | None,
    reload_error: str | None = None,
    halted: str | None = None,
) -> str:
    """The one-line summary shown by `systemctl status`: targets, open findings, last scan.

    `halted`: why scanning stopped (a fleet node that lost its database), said first.
    """
    parts = [f"{targets} target{'s' if targets != 1 else ''}"]
    if last_scan is None:
        parts.append("waiting for the first scans")
    else:
        if scanned < targets:
            parts[0] += f" ({scanned} scanned since start)"
        findings = f"{open_findings} open finding{'s' if open_findings != 1 else ''}"
        if acked_findings:
            findings += f" ({acked_findings} acked)"
        parts.append(findings)
        parts.append(f"last scan {rfc3339(last_scan)}")
    text = ", ".join(parts)
    if reload_error:
        text = f"config reload failed, running on the previous config: {reload_error}; {text}"
    if halted:
        text = f"not scanning: {halted}; {text}"
    return one_line(text)


def service_status(
    targets: Iterable[str],
    seen: Mapping[str, TargetState],
    reload_error: str | None = None,
    halted: str | None = None,
) -> str:
    """The status line from the configured target names and the states applied since start."""
    names = list(targets)
    states = [seen[name] for name in names if name in seen]
    findings = [f for state in states for f in state.findings.values()]
    return status_line(
        targets=len(names),
        scanned=len(states),
        open_findings=sum(f.state is FindingState.OPEN for f in findings),
        acked_findings=sum(f.state is FindingState.ACKED for f in findings),
        last_scan=max((s.last_observed for s in states if s.last_observed), default=None),
        reload_error=reload_error,
        halted=halted,
    )


class SystemdNotifier:
    """An sd_notify client; a no-op when $NOTIFY_SOCKET is unset (see `from_env`)."""

    def __init__(self, address: str | None, watchdog: float | None = None) -> None:
        self.address = address
        self.watchdog_interval = watchdog if address is not None else None
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._warned = False
        self.log = get_logger()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SystemdNotifier:
        """A notifier for $NOTIFY_SOCKET and $WATCHDOG_USEC (a no-op one when unset)."""
        env = os.environ if environ is None else environ
        address = socket_address(env.get("NOTIFY_SOCKET"))
        return cls(address, watchdog_interval(env, os.getpid()))

    @property
    def enabled(self) -> bool:
        """True when messages go somewhere."""
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send `KEY=value` fields in one datagram; False when not sent (never raises)."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except BlockingIOError:
            return False  # systemd is busy: this one is dropped, the next one will do
        except OSError as exc:
            # Once: a missing socket would otherwise log every watchdog interval.
            if not self._warned:
                self._warned = True
                self.log.warning("cannot notify systemd", error=str(exc))
            return False
        return True

    def ready(self) -> None:
        """READY=1: started, or done reloading."""
        self.notify("READY=1")

    def reloading(self) -> None:
        """RELOADING=1 with the CLOCK_MONOTONIC time that systemd >= 253 asks for."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        """STOPPING=1: shutting down."""
        self.notify("STOPPING=1")

    def status(self, text: str) -> None:
        """STATUS=: a one-line summary for `systemctl status`."""
        self.notify(f"STATUS={one_line(text)}")

    def watchdog(self) -> None:
        """WATCHDOG=1: the event loop is alive."""
        self.notify("WATCHDOG=1")

    def start_watchdog(self) -> None:
        """Ping the watchdog from the running event loop until `stop_watchdog`."""
        if self.watchdog_interval is None or self._task is not None:
            return
        self._task = asyncio.get_running_loop().create_task(
            self._ping(self.watchdog_interval), name="systemd-watchdog"
        )

    async def stop_watchdog(self) -> None:
        """Stop the pings (at the very end of shutdown) and close the socket."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        self.close()

    def close(self) -> None:
        """Close the socket (a later message opens it again)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def _ping(self, interval: float) -> None:
        # A task on the loop, not a thread: a blocked loop must stop the pings.
        while True:
            self.watchdog()
            await asyncio.sleep(interval)
