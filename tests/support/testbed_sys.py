"""System plumbing of the test bed: subprocess helpers, cross-process lock, root-ns state.

Kept apart from tests/support/testbed.py so the Router class reads as router behaviour. Everything
here
is for root on Linux; nothing touches addresses outside 198.18.0.0/15.

Root-namespace changes are shared by all test processes and recorded in /run/emtb/root.json,
so the last process to need them, or cleanup_stale() after a crash, restores them:
  - net.ipv4.ip_local_port_range widened to "1024 65535" (a full 65535-port scan needs them),
    restored when no process has a live Router;
  - an `unreachable 198.18.0.0/15` route, so a probe of a router that is already gone fails
    at once instead of leaving through the default route; removed when the last process that
    made Routers exits (it must outlive the routers to be of any use).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STATE_DIR = Path("/run/emtb")
SAFETY_ROUTE = "198.18.0.0/15"
WIDE_PORT_RANGE = "1024 65535"
PORT_RANGE_SYSCTL = Path("/proc/sys/net/ipv4/ip_local_port_range")
CHILD_TIMEOUT = 10.0
NAME_RE = re.compile(r"^emtb-(\d+)-(\d+)$")
WORKDIR_RE = re.compile(r"^emtb-(\d+)-[a-z0-9_]+$")
LINK_RE = re.compile(r"^emtb(\d+)[vtu](\d+)$")


def missing_requirements() -> str | None:
    """Why a Router cannot be built here (for pytest.skip), or None when it can."""
    if os.geteuid() != 0:
        return "not running as root"
    for tool in ("ip", "nft", "openssl"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found on PATH"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun missing"
    return None


def run(argv: list[str], *, stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (killed, not yet reaped) counts as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may contain spaces.
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here, not in the forked child
PR_SET_PDEATHSIG = 1


def _pdeathsig() -> None:
    # Children must not outlive a test run that crashed or was SIGKILLed.
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


_PROC_LOCK = threading.RLock()
_lock_depth = 0


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """Serialise subnet allocation and root-namespace state across threads and processes.

    Re-entrant within the process (flock is per open file, so nesting would self-deadlock).
    """
    global _lock_depth
    with _PROC_LOCK:
        if _lock_depth:
            _lock_depth += 1
            try:
                yield
            finally:
                _lock_depth -= 1
            return
        STATE_DIR.mkdir(mode=0o700, exist_ok=True)
        with open(STATE_DIR / "lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            _lock_depth = 1
            try:
                yield
            finally:
                _lock_depth = 0
                fcntl.flock(fh, fcntl.LOCK_UN)


# -- root namespace state (shared by all processes; call only under locked) -------------------


def _load_root_state() -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((STATE_DIR / "root.json").read_text())
    except (OSError, ValueError):
        state = {}
    state = {"users": [], "active": [], "saved_port_range": None, "route_added": False, **state}
    # Dead processes no longer count, whatever they meant to do.
    state["users"] = [p for p in state["users"] if alive(p)]
    state["active"] = [p for p in state["active"] if alive(p)]
    return state


def _reconcile_and_save(state: dict[str, Any]) -> None:
    """Undo root changes nobody needs any more, then persist the state."""
    saved = state["saved_port_range"]
    if saved and not state["active"]:
        # Only undo our own change: leave the value alone if someone changed it since.
        if " ".join(PORT_RANGE_SYSCTL.read_text().split()) == WIDE_PORT_RANGE:
            PORT_RANGE_SYSCTL.write_text(saved)
        state["saved_port_range"] = None
    if state["route_added"] and not state["users"]:
        run(["ip", "route", "del", "unreachable", SAFETY_ROUTE], check=False)
        state["route_added"] = False
    (STATE_DIR / "root.json").write_text(json.dumps(state))


def root_acquire() -> None:
    """This process now has live routers: widen the port range, install the safety route.

    The process stays a "user" until it exits (root_exit), so the safety route outlives its
    routers: a late probe of a closed router's address must still fail locally.
    """
    state = _load_root_state()
    pid = os.getpid()
    for key in ("users", "active"):
        if pid not in state[key]:
            state[key].append(pid)
    current = " ".join(PORT_RANGE_SYSCTL.read_text().split())
    low, high = (int(x) for x in current.split())
    if state["saved_port_range"] is None and (low > 1024 or high < 65535):
        PORT_RANGE_SYSCTL.write_text(WIDE_PORT_RANGE)
        state["saved_port_range"] = current
    if not state["route_added"] and not run(["ip", "route", "show", "exact", SAFETY_ROUTE]).strip():
        run(["ip", "route", "add", "unreachable", SAFETY_ROUTE])
        state["route_added"] = True
    _reconcile_and_save(state)


def root_release() -> None:
    """This process closed its last router: the port range goes back when nobody has routers."""
    state = _load_root_state()
    state["active"] = [p for p in state["active"] if p != os.getpid()]
    _reconcile_and_save(state)


def root_exit() -> None:
    """This process is leaving the test bed for good (atexit)."""
    state = _load_root_state()
    pid = os.getpid()
    if pid in state["users"] or pid in state["active"]:
        state["users"] = [p for p in state["users"] if p != pid]
        state["active"] = [p for p in state["active"] if p != pid]
        _reconcile_and_save(state)


def cleanup_stale() -> list[str]:
    """Remove namespaces, links and root changes left by test runs whose process is dead."""
    removed: list[str] = []
    with locked():
        for line in run(["ip", "netns", "list"]).splitlines():
            name = line.split()[0] if line.split() else ""
            match = NAME_RE.match(name)
            if match and not alive(int(match.group(1))):
                for pid in run(["ip", "netns", "pids", name], check=False).split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
                run(["ip", "netns", "del", name], check=False)
                removed.append(name)
        for link in json.loads(run(["ip", "-j", "link", "show"]) or "[]"):
            match = LINK_RE.match(link.get("ifname", ""))
            if match and not alive(int(match.group(1))):
                run(["ip", "link", "del", link["ifname"]], check=False)
                removed.append(link["ifname"])
        for workdir in Path(tempfile.gettempdir()).glob("emtb-*-*"):
            match = WORKDIR_RE.match(workdir.name)
            if match and workdir.is_dir() and not alive(int(match.group(1))):
                shutil.rmtree(workdir, ignore_errors=True)
                removed.append(str(workdir))
        _reconcile_and_save(_load_root_state())
    return removed


# -- child processes with a line protocol ------------------------------------------------------


class Child:
    """A helper process we talk to by lines; reads always have a deadline."""

    def __init__(self, argv: list[str], what: str, log: Path) -> None:
        self.what = what
        self.log = log
        in_main = threading.current_thread() is threading.main_thread()
        with open(log, "ab") as err:
            # PDEATHSIG fires when the *thread* that forked dies, so only use it from the main
            # thread; EOF on stdin is the fallback that always works.
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,  # Ctrl-C reaches us; we tear children down in order
                preexec_fn=_pdeathsig if in_main else None,
            )
        self._buf = b""

    def readline(self, timeout: float = CHILD_TIMEOUT) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        # poll, not select: a scanning test may hold thousands of fds, beyond FD_SETSIZE.
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.what}: no answer within {timeout}s{self._tail()}")
            if poller.poll(max(1, int(remaining * 1000))):
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"{self.what} exited ({self.proc.poll()}){self._tail()}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def request(self, obj: Any, timeout: float = CHILD_TIMEOUT) -> dict[str, Any]:
        assert self.proc.stdin is not None
        payload = obj if isinstance(obj, str) else json.dumps(obj)
        self.proc.stdin.write(payload.encode() + b"\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.readline(timeout))
        return answer

    def stop(self, timeout: float = 3.0) -> list[str]:
        """Close stdin (the child's cue to exit), collect its last lines, kill if it lingers."""
        lines: list[str] = []
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        with contextlib.suppress(TimeoutError, RuntimeError):
            for _ in range(100):
                lines.append(self.readline(timeout))
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return lines

    def _tail(self) -> str:
        with contextlib.suppress(OSError):
            text = self.log.read_text(errors="replace").strip()
            if text:
                return "; stderr: " + text[-800:]
        return ""
