"""Network test bed: "routers" in network namespaces, reached over veth (and a delayed TUN path).

Every Router is a netns ``emtb-<pid>-<n>`` with ``eth0`` = 198.18.<n>.2/24, joined by a veth pair
to the root namespace (198.18.<n>.1). Its firewall is an nftables table inside the namespace,
its services run in one listener process inside it (tests/testbed_listeners.py), and with
``rtt > 0`` a relay process (tests/testbed_relay.py) adds a second path, 198.19.<n>.2, that holds
every packet for rtt/2 each way. Traffic only ever goes to 198.18.0.0/15 addresses of namespaces
made here; an ``unreachable 198.18.0.0/15`` route in the root namespace catches strays (e.g. a
test probing a router it already closed) so they can never leave through the default route.

A port is **open** only when a listener runs on it *and* the policy accepts it: like a router,
the firewall decides first. All calls block briefly (a few subprocesses at most) except
reboot(), which blocks for its downtime; from async code use ``asyncio.to_thread``.

Root-namespace changes, restored when the last Router of all processes is gone (state is kept
in /run/emtb/root.json so a crashed run is repaired by cleanup_stale()):
  - net.ipv4.ip_local_port_range widened to "1024 65535" (a full 65535-port scan needs them);
  - the ``unreachable 198.18.0.0/15`` safety route.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import errno
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

HERE = Path(__file__).resolve().parent
STATE_DIR = Path("/run/emtb")
SAFETY_ROUTE = "198.18.0.0/15"
WIDE_PORT_RANGE = "1024 65535"
PORT_RANGE_SYSCTL = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Inside each router: deep queues so a scan burst is answered, not silently dropped.
NETNS_SYSCTLS = {
    "net.core.somaxconn": "65535",
    "net.ipv4.tcp_max_syn_backlog": "65535",
    "net.ipv6.conf.all.disable_ipv6": "1",  # no RS/DAD chatter on the links we observe
    "net.ipv6.conf.default.disable_ipv6": "1",
}
# The tun ptr_ring is as long as txqueuelen; 500 would drop packets of a 30k/s burst.
TUN_TXQUEUELEN = "10000"
CHILD_TIMEOUT = 10.0
NAME_RE = re.compile(r"^emtb-(\d+)-(\d+)$")
LINK_RE = re.compile(r"^emtb(\d+)[vtu](\d+)$")
Action = Literal["accept", "reject", "drop"]
NFT_ACTION = {"accept": "accept", "reject": "reject with tcp reset", "drop": "drop"}


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


def _run(argv: list[str], *, stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pdeathsig() -> None:
    # Children must not outlive a test run that crashed or was SIGKILLed.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Serialise subnet allocation and root-namespace state across test processes."""
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)
    with open(STATE_DIR / "lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# -- root namespace state (shared by all processes; call only under _locked) -------------------


def _load_root_state() -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((STATE_DIR / "root.json").read_text())
    except (OSError, ValueError):
        state = {}
    return {"owners": [], "saved_port_range": None, "route_added": False, **state}


def _save_root_state(state: dict[str, Any]) -> None:
    (STATE_DIR / "root.json").write_text(json.dumps(state))


def _restore_root(state: dict[str, Any]) -> None:
    saved = state.get("saved_port_range")
    # Only undo our own change: leave the value alone if someone changed it since.
    if saved and " ".join(PORT_RANGE_SYSCTL.read_text().split()) == WIDE_PORT_RANGE:
        PORT_RANGE_SYSCTL.write_text(saved)
    if state.get("route_added"):
        _run(["ip", "route", "del", "unreachable", SAFETY_ROUTE], check=False)
    state.update(owners=[], saved_port_range=None, route_added=False)


def _root_acquire() -> None:
    state = _load_root_state()
    state["owners"] = [p for p in state["owners"] if _alive(p)]
    if not state["owners"]:
        _restore_root(state)  # repair what a crashed run left behind before taking over
        current = " ".join(PORT_RANGE_SYSCTL.read_text().split())
        low, high = (int(x) for x in current.split())
        if low > 1024 or high < 65535:
            PORT_RANGE_SYSCTL.write_text(WIDE_PORT_RANGE)
            state["saved_port_range"] = current
        if not _run(["ip", "route", "show", "exact", SAFETY_ROUTE]).strip():
            _run(["ip", "route", "add", "unreachable", SAFETY_ROUTE])
            state["route_added"] = True
    state["owners"].append(os.getpid())
    _save_root_state(state)


def _root_release() -> None:
    state = _load_root_state()
    state["owners"] = [p for p in state["owners"] if p != os.getpid() and _alive(p)]
    if not state["owners"]:
        _restore_root(state)
    _save_root_state(state)


def cleanup_stale() -> list[str]:
    """Remove namespaces, links and root changes left by test runs whose process is dead."""
    removed: list[str] = []
    with _locked():
        for line in _run(["ip", "netns", "list"]).splitlines():
            name = line.split()[0] if line.split() else ""
            match = NAME_RE.match(name)
            if match and not _alive(int(match.group(1))):
                for pid in _run(["ip", "netns", "pids", name], check=False).split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
                _run(["ip", "netns", "del", name], check=False)
                removed.append(name)
        for link in json.loads(_run(["ip", "-j", "link", "show"]) or "[]"):
            match = LINK_RE.match(link.get("ifname", ""))
            if match and not _alive(int(match.group(1))):
                _run(["ip", "link", "del", link["ifname"]], check=False)
                removed.append(link["ifname"])
        state = _load_root_state()
        state["owners"] = [p for p in state["owners"] if _alive(p)]
        if not state["owners"]:
            _restore_root(state)
        _save_root_state(state)
    return removed


# -- child processes with a line protocol ------------------------------------------------------


class _Child:
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
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.what}: no answer within {timeout}s{self._tail()}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
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


# -- routers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Policy:
    default: Action
    rules: tuple[tuple[int, int, Action], ...]
    loss: float
    ping: bool


@dataclass(frozen=True)
class _Service:
    port: int
    kind: str
    banner: bytes | None
    server_header: str | None
    title: str | None


_LIVE: dict[int, Router] = {}
_LIVE_LOCK = threading.Lock()
_CLOSED_LOG: list[dict[str, Any]] = []  # final relay stats of closed routers, for benchmarks


class Router:
    """A 'router' network namespace reached over a veth pair (and optionally a delayed TUN path)."""

    def __init__(self, rtt: float = 0.0) -> None:
        reason = missing_requirements()
        if reason:
            raise RuntimeError(f"cannot build a test-bed router: {reason}")
        if not 0.0 <= rtt <= 10.0:
            raise ValueError("rtt must be within [0, 10] seconds")
        self.rtt = rtt
        self._lock = threading.RLock()
        self._closed = False
        self._powered = True
        self._relay: _Child | None = None
        self._listeners: _Child | None = None
        self._services: dict[int, _Service] = {}
        self._port_cert: dict[int, str] = {}
        self._cert: tuple[str, str, str] | None = None  # cert path, key path, sha256
        self._cert_gen = 0
        self._policy = _Policy("reject", (), 0.0, True)
        self._boot: tuple[_Policy, dict[int, _Service]] = (self._policy, {})
        self.relay_final_stats: dict[str, Any] | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix="emtb-"))
        pid = os.getpid()
        with _locked():
            self.index = self._allocate_index()
            self.name = f"emtb-{pid}-{self.index}"
            self._veth = f"emtb{pid}v{self.index}"
            self._tun_a = f"emtb{pid}t{self.index}"
            self._tun_b = f"emtb{pid}u{self.index}"
            self.host_addr = f"198.18.{self.index}.1"
            self.addr = f"198.18.{self.index}.2"
            self.delayed_addr: str | None = f"198.19.{self.index}.2" if rtt > 0 else None
            self.delayed_host_addr = f"198.19.{self.index}.1"
            with _LIVE_LOCK:
                first = not _LIVE
                _LIVE[id(self)] = self
            try:
                if first:
                    _root_acquire()
                self._build_links()
            except BaseException:
                self.close(_locked_already=True)
                raise
        try:
            self._apply_policy(self._policy)
            if rtt > 0:
                self._start_relay()
        except BaseException:
            self.close()
            raise

    # -- construction --------------------------------------------------------------------------

    @staticmethod
    def _allocate_index() -> int:
        used = {r.index for r in list(_LIVE.values()) if hasattr(r, "index")}
        for iface in json.loads(_run(["ip", "-j", "-4", "addr", "show"]) or "[]"):
            for info in iface.get("addr_info", []):
                ip = ipaddress.ip_address(info.get("local", "0.0.0.0"))
                if ip in ipaddress.ip_network(SAFETY_ROUTE):
                    used.add(ip.packed[2])
        for index in range(1, 255):
            if index not in used:
                return index
        raise RuntimeError("no free 198.18.<n>.0/24 subnet left for a test-bed router")

    def _build_links(self) -> None:
        _run(["ip", "netns", "add", self.name])
        _run(["ip", "link", "add", self._veth, "type", "veth", "peer", "eth0", "netns", self.name])
        Path(f"/proc/sys/net/ipv6/conf/{self._veth}/disable_ipv6").write_text("1")
        _run(["ip", "addr", "add", f"{self.host_addr}/24", "dev", self._veth])
        _run(["ip", "link", "set", self._veth, "up"])
        sysctls = [f"{key}={value}" for key, value in NETNS_SYSCTLS.items()]
        self._ns(["sysctl", "-q", "-w", *sysctls])
        batch = f"link set lo up\naddr add {self.addr}/24 dev eth0\nlink set eth0 up\n"
        _run(["ip", "-n", self.name, "-batch", "-"], stdin=batch)

    def _ns(self, argv: list[str], stdin: str | None = None) -> str:
        return _run(["ip", "netns", "exec", self.name, *argv], stdin=stdin)

    def _python_child(self, script: str, args: list[str], what: str) -> _Child:
        argv = ["ip", "netns", "exec", self.name, sys.executable, str(HERE / script), *args]
        return _Child(argv, f"{what} of {self.name}", self.workdir / f"{what}.log")

    def _start_relay(self) -> None:
        argv = [sys.executable, str(HERE / "testbed_relay.py"), "--tun-a", self._tun_a]
        argv += ["--tun-b", self._tun_b, "--delay", repr(self.rtt / 2)]
        self._relay = _Child(argv, f"relay of {self.name}", self.workdir / "relay.log")
        if self._relay.readline() != "ready":
            raise RuntimeError(f"relay of {self.name} did not start")
        # Moving an open TUN device into the namespace keeps the relay's fd working.
        _run(["ip", "link", "set", self._tun_b, "netns", self.name])
        Path(f"/proc/sys/net/ipv6/conf/{self._tun_a}/disable_ipv6").write_text("1")
        batch_a = f"addr add {self.delayed_host_addr}/24 dev {self._tun_a}\n"
        batch_a += f"link set {self._tun_a} txqueuelen {TUN_TXQUEUELEN} up\n"
        _run(["ip", "-batch", "-"], stdin=batch_a)
        batch_b = f"addr add {self.delayed_addr}/24 dev {self._tun_b}\n"
        batch_b += f"link set {self._tun_b} txqueuelen {TUN_TXQUEUELEN} up\n"
        _run(["ip", "-n", self.name, "-batch", "-"], stdin=batch_b)

    # -- firewall ------------------------------------------------------------------------------

    def set_policy(
        self,
        default: str = "reject",
        rules: dict[int | tuple[int, int], str] | None = None,
        loss: float = 0.0,
        *,
        ping: bool = True,
    ) -> None:
        """Replace the firewall: per port/range accept|reject|drop, ``default`` for other TCP.

        Single ports win over ranges and narrower ranges over wider ones. ``loss`` drops that
        share of packets at random in both directions; ``ping=False`` also drops ICMP.
        """
        parsed: list[tuple[int, int, Action]] = []
        for key, action in (rules or {}).items():
            low, high = (key, key) if isinstance(key, int) else key
            if not 0 < low <= high <= 65535:
                raise ValueError(f"bad port or range {key!r}")
            parsed.append((low, high, _check_action(action)))
        if not 0.0 <= loss <= 1.0:
            raise ValueError("loss must be within [0, 1]")
        parsed.sort(key=lambda rule: (rule[1] - rule[0], rule[0]))
        with self._lock:
            self._check_usable()
            policy = _Policy(_check_action(default), tuple(parsed), loss, ping)
            self._apply_policy(policy)
            self._policy = policy

    def _apply_policy(self, policy: _Policy | None) -> None:
        """Load the whole table in one nft transaction; None means 'powered off'."""
        base = "type filter hook {hook} priority 0; policy {policy};"
        input_rules = ['iifname "lo" accept']
        output_rules = ['oifname "lo" accept']
        if policy is None:
            verdict = "drop"
        else:
            verdict = "accept"
            if policy.loss > 0:
                drop = f"numgen random mod 10000 < {round(policy.loss * 10000)} drop"
                input_rules.append(drop)
                output_rules.append(drop)
            if not policy.ping:
                input_rules.append("meta l4proto { icmp, ipv6-icmp } drop")
            for low, high, action in policy.rules:
                ports = str(low) if low == high else f"{low}-{high}"
                input_rules.append(f"tcp dport {ports} {NFT_ACTION[action]}")
            if policy.default != "accept":
                input_rules.append(f"meta l4proto tcp {NFT_ACTION[policy.default]}")
        script = "table inet emtb {}\ndelete table inet emtb\ntable inet emtb {\n"
        for chain, hook, rules in (("input", "input", input_rules), ("output", "output", output_rules)):
            script += f"  chain {chain} {{\n    {base.format(hook=hook, policy=verdict)}\n"
            script += "".join(f"    {rule}\n" for rule in rules) + "  }\n"
        self._ns(["nft", "-f", "-"], stdin=script + "}\n")

    # -- services ------------------------------------------------------------------------------

    def listen(
        self,
        port: int,
        kind: str = "tcp",
        *,
        banner: bytes | None = None,
        server_header: str | None = None,
        title: str | None = None,
    ) -> None:
        """Run a service on ``port`` (bound on 0.0.0.0 inside the namespace); returns when bound."""
        if kind not in ("tcp", "http", "tls"):
            raise ValueError(f"unknown listener kind {kind!r}")
        if not 0 < port <= 65535:
            raise ValueError(f"bad port {port}")
        with self._lock:
            self._check_usable()
            service = _Service(port, kind, banner, server_header, title)
            self._start_service(service)
            self._services[port] = service

    def unlisten(self, port: int) -> None:
        """Stop the service on ``port``; returns when the socket is closed."""
        with self._lock:
            self._check_usable()
            if self._services.pop(port, None) is not None and self._listeners is not None:
                self._expect_ok(self._listeners.request({"op": "unlisten", "port": port}))
            self._port_cert.pop(port, None)

    def _start_service(self, service: _Service) -> None:
        if self._listeners is None:
            self._listeners = self._python_child("testbed_listeners.py", [], "listeners")
            if not json.loads(self._listeners.readline()).get("ready"):
                raise RuntimeError(f"listeners of {self.name} did not start")
        cmd: dict[str, Any] = {"op": "listen", "port": service.port, "kind": service.kind}
        cmd.update(server_header=service.server_header, title=service.title)
        if service.banner:
            cmd["banner_b64"] = base64.b64encode(service.banner).decode()
        if service.kind == "tls":
            cert, key, sha = self._current_cert()
            cmd.update(cert=cert, key=key)
            self._port_cert[service.port] = sha
        self._expect_ok(self._listeners.request(cmd))

    def _expect_ok(self, answer: dict[str, Any]) -> None:
        if not answer.get("ok"):
            raise RuntimeError(f"listeners of {self.name}: {answer.get('error')}")

    def _current_cert(self) -> tuple[str, str, str]:
        if self._cert is None:
            self._cert_gen += 1
            cert = self.workdir / f"cert{self._cert_gen}.pem"
            key = self.workdir / f"key{self._cert_gen}.pem"
            subject = f"/CN=emtb router {self.index} firmware {self._cert_gen}"
            _run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                  "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30", "-subj", subject,
                  "-addext", f"subjectAltName=IP:{self.addr}", "-keyout", str(key),
                  "-out", str(cert)])  # fmt: skip
            der = ssl.PEM_cert_to_DER_cert(cert.read_text())
            self._cert = (str(cert), str(key), hashlib.sha256(der).hexdigest())
        return self._cert

    def cert_sha256(self, port: int) -> str:
        """Hex SHA-256 of the DER certificate the TLS service on ``port`` currently serves."""
        with self._lock:
            if port not in self._port_cert:
                raise KeyError(f"no TLS listener on port {port} of {self.name}")
            return self._port_cert[port]

    # -- boot cycle ----------------------------------------------------------------------------

    def save_boot_state(self) -> None:
        """Remember the current policy and services as what a reboot brings back."""
        with self._lock:
            self._check_usable()
            self._boot = (self._policy, dict(self._services))

    def power_off(self) -> None:
        """Go silent (every packet dropped both ways) and stop all services."""
        with self._lock:
            self._check_usable()
            self._apply_policy(None)
            self._powered = False
            if self._listeners is not None:
                self._listeners.stop()
                self._listeners = None
            self._services.clear()
            self._port_cert.clear()

    def power_on(self, new_cert: bool = False) -> None:
        """Boot: services of the saved boot state first, then its firewall, so 'up' is atomic."""
        with self._lock:
            if self._closed or self._powered:
                raise RuntimeError(f"{self.name} is closed or already powered on")
            if new_cert:
                self._cert = None  # "firmware update": the next TLS start makes a new one
            policy, services = self._boot
            for service in services.values():
                self._start_service(service)
                self._services[service.port] = service
            self._apply_policy(policy)
            self._policy = policy
            self._powered = True

    def reboot(self, downtime: float = 1.0, new_cert: bool = False) -> None:
        """power_off(), stay down for ``downtime`` seconds, power_on(): blocks for the downtime."""
        if not 0.0 <= downtime <= 600.0:
            raise ValueError("downtime must be within [0, 600] seconds")
        self.power_off()
        # The downtime *is* the behaviour under test (the router is away that long), not a
        # stand-in for waiting on a condition.
        time.sleep(downtime)
        self.power_on(new_cert)

    # -- introspection and teardown --------------------------------------------------------------

    def relay_stats(self) -> dict[str, Any] | None:
        """Packet counters and CPU seconds of the latency relay (None without one)."""
        with self._lock:
            if self._relay is None:
                return self.relay_final_stats
            return self._relay.request("stats")

    def _check_usable(self) -> None:
        if self._closed:
            raise RuntimeError(f"router {self.name} is closed")
        if not self._powered:
            raise RuntimeError(f"router {self.name} is powered off")

    def close(self, *, _locked_already: bool = False) -> None:
        """Stop processes, delete links and namespace; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for child in (self._listeners, self._relay):
                if child is not None:
                    lines = child.stop()
                    if child is self._relay and lines:
                        with contextlib.suppress(ValueError):
                            self.relay_final_stats = json.loads(lines[-1])
                            _CLOSED_LOG.append({"router": self.name, **self.relay_final_stats})
            self._listeners = self._relay = None
            if hasattr(self, "_veth"):
                # Deleting our end removes the pair now; netns teardown alone is asynchronous.
                _run(["ip", "link", "del", self._veth], check=False)
                _run(["ip", "netns", "del", self.name], check=False)
            shutil.rmtree(self.workdir, ignore_errors=True)
            with _LIVE_LOCK:
                was_live = _LIVE.pop(id(self), None) is not None
                last = was_live and not _LIVE
            if last:
                with _locked() if not _locked_already else contextlib.nullcontext():
                    _root_release()

    def __enter__(self) -> Router:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Router {self.name} addr={self.addr} delayed={self.delayed_addr} rtt={self.rtt}>"


def _check_action(action: str) -> Action:
    if action not in NFT_ACTION:
        raise ValueError(f"action must be accept, reject or drop, not {action!r}")
    return action  # type: ignore[return-value]


def make_router(rtt: float = 0.0) -> Router:
    """A new Router (also a context manager); ``rtt`` seconds of round trip on delayed_addr."""
    return Router(rtt)


@atexit.register
def close_all() -> None:
    """Close every Router of this process (atexit, and handy after Ctrl-C)."""
    with _LIVE_LOCK:
        routers = list(_LIVE.values())
    for router in routers:
        with contextlib.suppress(Exception):
            router.close()


# -- small probing helpers for tests -----------------------------------------------------------


def tcp_state(addr: str, port: int, timeout: float = 0.3) -> str:
    """One blocking connect: "open", "closed" (RST) or "filtered" (no answer in ``timeout``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        err = sock.connect_ex((addr, port))
        if err == 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return "open"
        if err == errno.ECONNREFUSED:
            return "closed"
        if err in (errno.EAGAIN, errno.ETIMEDOUT, errno.EINPROGRESS):
            return "filtered"
        raise OSError(err, f"connect to {addr}:{port}: {os.strerror(err)}")


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``condition`` until true or ``timeout`` passes; bounded in time and iterations."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        if condition():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    return condition()
