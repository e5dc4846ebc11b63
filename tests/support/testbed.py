"""Network test bed: "routers" in network namespaces, reached over veth (and a delayed TUN path).

Every Router is a netns `emtb-<pid>-<n>` with `eth0` = 198.18.<n>.2/24, joined by a veth pair
to the root namespace (198.18.<n>.1). Its firewall is an nftables table inside the namespace,
its services run in one listener process inside it (tests/support/testbed_listeners.py), and with
`rtt > 0` a relay process (tests/support/testbed_relay.py) adds a second path, 198.19.<n>.2, that
holds
every packet for rtt/2 each way. Traffic only ever goes to 198.18.0.0/15 addresses of namespaces
made here. Root-namespace changes (port range, a safety route) are described in testbed_sys.

A port is **open** only when a listener runs on it *and* the policy accepts it: like a router,
the firewall decides first. All calls block briefly (a few subprocesses at most) except
reboot(), which blocks for its downtime; from async code use `asyncio.to_thread`.

    with make_router(rtt=0.04) as router:
        router.listen(443, "tls")
        router.set_policy("reject", {443: "accept", (80, 89): "drop"})
        router.save_boot_state()
        assert tcp_state(router.delayed_addr, 443) == "open"
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import dataclasses
import hashlib
import ipaddress
import json
import os
import shutil
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from tests.support.testbed_probe import ping, probe_many, tcp_state, wait_for
from tests.support.testbed_sys import (
    SAFETY_ROUTE,
    Child,
    alive,
    cleanup_stale,
    locked,
    missing_requirements,
    root_acquire,
    root_exit,
    root_release,
    run,
)

__all__ = [
    "Router",
    "alive",
    "cleanup_stale",
    "close_all",
    "make_router",
    "missing_requirements",
    "ping",
    "probe_many",
    "tcp_state",
    "wait_for",
]

HERE = Path(__file__).resolve().parent
# Inside each router: deep queues so a scan burst is answered, not silently dropped.
NETNS_SYSCTLS = {
    "net.core.somaxconn": "65535",
    "net.ipv4.tcp_max_syn_backlog": "65535",
    # "prohibit" answers with ICMP, which the kernel rate-limits per peer (icmp_ratelimit) and
    # globally (icmp_msgs_per_sec/burst); a scan would then see timeouts instead of answers.
    "net.ipv4.icmp_ratelimit": "0",
    "net.ipv4.icmp_msgs_per_sec": "1000000",
    "net.ipv4.icmp_msgs_burst": "1000000",
    "net.ipv6.conf.all.disable_ipv6": "1",  # no RS/DAD chatter on the links we observe
    "net.ipv6.conf.default.disable_ipv6": "1",
}
# The tun ptr_ring is as long as txqueuelen; 500 would drop packets of a 30k/s burst.
TUN_TXQUEUELEN = "10000"
# Seconds the relay waits after a wakeup to move packets in batches (see testbed_relay.py).
RELAY_COALESCE = float(os.environ.get("EMTB_RELAY_COALESCE", "0.0005"))
Action = Literal["accept", "reject", "drop", "prohibit"]
NFT_ACTION = {
    "accept": "accept",
    "reject": "reject with tcp reset",
    "drop": "drop",
    "prohibit": "reject with icmpx type admin-prohibited",  # connect() fails EHOSTUNREACH
}


# -- routers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Policy:
    default: Action
    rules: tuple[tuple[int, int, Action], ...]
    loss: float
    ping: bool
    syn_limit: tuple[int, int] | None = None  # (SYNs per second, burst) the router accepts


@dataclass(frozen=True)
class _Service:
    port: int
    kind: str
    banner: bytes | None
    server_header: str | None
    title: str | None


_LIVE: dict[int, Router] = {}
_LIVE_LOCK = threading.Lock()
_USED_ROOT = False  # this process changed root-namespace state and must give it back at exit


class Router:
    """A 'router' network namespace reached over a veth pair (and optionally a delayed TUN path)."""

    name: str  # netns name, emtb-<pid>-<index>
    index: int  # the <n> of its subnets
    addr: str  # router on the direct veth path, 198.18.<n>.2
    host_addr: str  # our end of the veth, 198.18.<n>.1
    delayed_addr: str | None  # router behind the latency relay, 198.19.<n>.2 (when rtt > 0)
    delayed_host_addr: str  # our end of the relay path, 198.19.<n>.1

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
        self._relay: Child | None = None
        self._listeners: Child | None = None
        self._services: dict[int, _Service] = {}
        self._port_cert: dict[int, str] = {}
        self._cert: tuple[str, str, str] | None = None  # cert path, key path, sha256
        self._cert_gen = 0
        self._policy = _Policy("reject", (), 0.0, True)
        self._boot: tuple[_Policy, dict[int, _Service]] = (self._policy, {})
        self.relay_final_stats: dict[str, Any] | None = None
        # The pid in the name lets cleanup_stale() find the workdirs of crashed runs.
        self.workdir = Path(tempfile.mkdtemp(prefix=f"emtb-{os.getpid()}-"))
        try:
            with locked():
                self._claim_index()
                self._build_links()
            self._apply_policy(self._policy)
            if rtt > 0:
                self._start_relay()
        except BaseException:
            self.close()
            raise

    # -- construction --------------------------------------------------------------------------

    def _claim_index(self) -> None:
        """Pick a subnet no Router of any process uses (caller holds the cross-process lock)."""
        self.index = self._free_index()
        pid = os.getpid()
        self.name = f"emtb-{pid}-{self.index}"
        self._veth = f"emtb{pid}v{self.index}"
        self._tun_a = f"emtb{pid}t{self.index}"
        self._tun_b = f"emtb{pid}u{self.index}"
        self.host_addr = f"198.18.{self.index}.1"
        self.addr = f"198.18.{self.index}.2"
        self.delayed_host_addr = f"198.19.{self.index}.1"
        self.delayed_addr = f"198.19.{self.index}.2" if self.rtt > 0 else None
        with _LIVE_LOCK:
            first = not _LIVE
            _LIVE[id(self)] = self
        if first:
            global _USED_ROOT
            _USED_ROOT = True
            root_acquire()

    @staticmethod
    def _free_index() -> int:
        # Other processes' routers are seen through their root-side addresses.
        used = {r.index for r in list(_LIVE.values())}
        for iface in json.loads(run(["ip", "-j", "-4", "addr", "show"]) or "[]"):
            for info in iface.get("addr_info", []):
                ip = ipaddress.ip_address(info.get("local", "0.0.0.0"))
                if ip in ipaddress.ip_network(SAFETY_ROUTE):
                    used.add(ip.packed[2])
        for index in range(1, 255):
            if index not in used:
                return index
        raise RuntimeError("no free 198.18.<n>.0/24 subnet left for a test-bed router")

    def _build_links(self) -> None:
        run(["ip", "netns", "add", self.name])
        run(["ip", "link", "add", self._veth, "type", "veth", "peer", "eth0", "netns", self.name])
        Path(f"/proc/sys/net/ipv6/conf/{self._veth}/disable_ipv6").write_text("1")
        run(["ip", "addr", "add", f"{self.host_addr}/24", "dev", self._veth])
        run(["ip", "link", "set", self._veth, "up"])
        sysctls = [f"{key}={value}" for key, value in NETNS_SYSCTLS.items()]
        self._ns(["sysctl", "-q", "-w", *sysctls])
        batch = f"link set lo up\naddr add {self.addr}/24 dev eth0\nlink set eth0 up\n"
        run(["ip", "-n", self.name, "-batch", "-"], stdin=batch)

    def _ns(self, argv: list[str], stdin: str | None = None) -> str:
        return run(["ip", "netns", "exec", self.name, *argv], stdin=stdin)

    def run_inside(self, argv: list[str], stdin: str | None = None) -> str:
        """Run a command inside the namespace (links, routes, nftables); its stdout."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"router {self.name} is closed")
            return self._ns(argv, stdin)

    def _python_child(self, script: str, args: list[str], what: str) -> Child:
        argv = ["ip", "netns", "exec", self.name, sys.executable, str(HERE / script), *args]
        return Child(argv, f"{what} of {self.name}", self.workdir / f"{what}.log")

    def _start_relay(self) -> None:
        argv = [sys.executable, str(HERE / "testbed_relay.py"), "--tun-a", self._tun_a]
        argv += ["--tun-b", self._tun_b, "--delay", repr(self.rtt / 2)]
        argv += ["--coalesce", repr(RELAY_COALESCE)]
        self._relay = Child(argv, f"relay of {self.name}", self.workdir / "relay.log")
        if self._relay.readline() != "ready":
            raise RuntimeError(f"relay of {self.name} did not start")
        # Moving an open TUN device into the namespace keeps the relay's fd working.
        run(["ip", "link", "set", self._tun_b, "netns", self.name])
        Path(f"/proc/sys/net/ipv6/conf/{self._tun_a}/disable_ipv6").write_text("1")
        batch_a = f"addr add {self.delayed_host_addr}/24 dev {self._tun_a}\n"
        batch_a += f"link set {self._tun_a} txqueuelen {TUN_TXQUEUELEN} up\n"
        run(["ip", "-batch", "-"], stdin=batch_a)
        batch_b = f"addr add {self.delayed_addr}/24 dev {self._tun_b}\n"
        batch_b += f"link set {self._tun_b} txqueuelen {TUN_TXQUEUELEN} up\n"
        run(["ip", "-n", self.name, "-batch", "-"], stdin=batch_b)

    # -- firewall ------------------------------------------------------------------------------

    def set_policy(
        self,
        default: str = "reject",
        rules: dict[int | tuple[int, int], str] | None = None,
        loss: float = 0.0,
        *,
        ping: bool = True,
    ) -> None:
        """Replace the firewall: an action per port or range, `default` for all other TCP.

        Actions: accept; reject (TCP RST); drop (silence); prohibit (ICMP admin-prohibited,
        connect() fails with EHOSTUNREACH). Single ports win over ranges, narrower ranges over
        wider ones. `loss` drops that share of all packets at random in both directions;
        `ping=False` also drops ICMP echo.
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
                input_rules.append("icmp type echo-request drop")
            if policy.syn_limit is not None:
                # SYN-flood protection as OpenWrt's firewall does it: a token bucket on new
                # connections ahead of every port rule; SYNs over the limit vanish silently.
                rate, burst = policy.syn_limit
                input_rules.append(
                    f"tcp flags & (syn | ack) == syn limit rate over {rate}/second "
                    f"burst {burst} packets drop"
                )
            for low, high, action in policy.rules:
                ports = str(low) if low == high else f"{low}-{high}"
                input_rules.append(f"tcp dport {ports} {NFT_ACTION[action]}")
            if policy.default != "accept":
                input_rules.append(f"meta l4proto tcp {NFT_ACTION[policy.default]}")
        script = "table inet emtb {}\ndelete table inet emtb\ntable inet emtb {\n"
        for chain, hook, rules in (
            ("input", "input", input_rules),
            ("output", "output", output_rules),
        ):
            script += f"  chain {chain} {{\n    {base.format(hook=hook, policy=verdict)}\n"
            script += "".join(f"    {rule}\n" for rule in rules) + "  }\n"
        self._ns(["nft", "-f", "-"], stdin=script + "}\n")

    def rate_limit(self, rate: int | None, burst: int = 5) -> None:
        """Limit new connections (SYNs) to `rate` per second with a bucket of `burst`; None: off.

        Over-limit SYNs are dropped without an answer, before the port rules, as a router's
        SYN-flood protection does (OpenWrt: 25/s burst 50). The limit stays in force until
        `set_policy` replaces the firewall or `rate_limit(None)` lifts it.
        """
        if rate is not None and not (rate >= 1 and burst >= 1):
            raise ValueError("rate and burst must be at least 1")
        with self._lock:
            self._check_usable()
            policy = self._policy or _Policy("reject", (), 0.0, True)
            limit = None if rate is None else (rate, burst)
            policy = dataclasses.replace(policy, syn_limit=limit)
            self._apply_policy(policy)
            self._policy = policy

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
        """Run a service on `port` (bound on 0.0.0.0 inside the namespace); returns when bound."""
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
        """Stop the service on `port`; returns when the socket is closed."""
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
            run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                  "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30", "-subj", subject,
                  "-addext", f"subjectAltName=IP:{self.addr}", "-keyout", str(key),
                  "-out", str(cert)])  # fmt: skip
            der = ssl.PEM_cert_to_DER_cert(cert.read_text())
            self._cert = (str(cert), str(key), hashlib.sha256(der).hexdigest())
        return self._cert

    def cert_sha256(self, port: int) -> str:
        """Hex SHA-256 of the DER certificate the TLS service on `port` currently serves."""
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
        """power_off(), stay down for `downtime` seconds, power_on(): blocks for the downtime."""
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

    def close(self) -> None:
        """Stop processes, delete links and namespace; safe to call twice.

        Every step runs even if an earlier one fails; the first error is raised at the end.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            errors: list[BaseException] = []

            def step(action: Callable[[], object]) -> None:
                try:
                    action()
                except Exception as exc:
                    errors.append(exc)

            if self._listeners is not None:
                step(self._listeners.stop)
            if self._relay is not None:
                relay = self._relay
                step(lambda: self._keep_final_stats(relay.stop()))
            self._listeners = self._relay = None
            if hasattr(self, "_veth"):
                # Deleting our end removes the pair now; netns teardown alone is asynchronous.
                step(lambda: run(["ip", "link", "del", self._veth], check=False))
                step(lambda: run(["ip", "netns", "del", self.name], check=False))
            shutil.rmtree(self.workdir, ignore_errors=True)
            with _LIVE_LOCK:
                was_live = _LIVE.pop(id(self), None) is not None
                last = was_live and not _LIVE
            if last:
                with locked():
                    step(root_release)
            if errors:
                raise errors[0]

    def _keep_final_stats(self, lines: list[str]) -> None:
        with contextlib.suppress(ValueError, IndexError):
            self.relay_final_stats = json.loads(lines[-1])

    def __enter__(self) -> Router:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        name, addr = getattr(self, "name", "?"), getattr(self, "addr", "?")
        return f"<Router {name} addr={addr} delayed={getattr(self, 'delayed_addr', None)}>"


def _check_action(action: str) -> Action:
    if action not in NFT_ACTION:
        raise ValueError(f"action must be one of {', '.join(NFT_ACTION)}, not {action!r}")
    return action  # type: ignore[return-value]


def make_router(rtt: float = 0.0) -> Router:
    """A new Router (also a context manager); `rtt` seconds of round trip on delayed_addr."""
    return Router(rtt)


def close_all() -> None:
    """Close every Router of this process (handy after Ctrl-C; also runs at exit)."""
    with _LIVE_LOCK:
        routers = list(_LIVE.values())
    for router in routers:
        with contextlib.suppress(Exception):
            router.close()


@atexit.register
def _at_exit() -> None:
    close_all()
    if _USED_ROOT:
        with contextlib.suppress(Exception), locked():
            root_exit()
