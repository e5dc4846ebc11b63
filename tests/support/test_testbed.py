"""Tests of the network test bed itself, with real sockets against namespaced routers."""

from __future__ import annotations

import asyncio
import hashlib
import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.testbed import (
    Router,
    alive,
    cleanup_stale,
    ping,
    probe_many,
    tcp_state,
    wait_for,
)
from tests.support.testbed_probe import check_target

pytestmark = pytest.mark.netns

RouterFactory = Callable[..., Router]


def http_get(addr: str, port: int, *, tls: bool = False) -> tuple[bytes, bytes | None]:
    """GET / and return the raw response and, over TLS, the server's DER certificate."""
    raw = socket.create_connection((addr, port), timeout=3)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with ctx.wrap_socket(raw) if tls else raw as sock:
        cert = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
        sock.sendall(b"GET / HTTP/1.1\r\nHost: router\r\n\r\n")
        response = b""
        for _ in range(100):
            chunk = sock.recv(65536)
            if not chunk:
                break
            response += chunk
    return response, cert


def served_cert_sha256(addr: str, port: int) -> str:
    _response, cert = http_get(addr, port, tls=True)
    assert cert is not None
    return hashlib.sha256(cert).hexdigest()


def netns_list() -> str:
    return subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout


def min_connect_time(addr: str, port: int, samples: int = 5) -> float:
    """Smallest time to an answer over a few connects (the first may include ARP)."""
    best = float("inf")
    for _ in range(samples):
        started = time.perf_counter()
        assert tcp_state(addr, port, timeout=2.0) == "closed"
        best = min(best, time.perf_counter() - started)
    return best


def test_open_listener_accepts_and_sends_banner(router: Router) -> None:
    """A listener on an accepted port completes the handshake and sends its banner."""
    router.listen(2222, banner=b"SSH-2.0-emtb\r\n")
    router.set_policy("reject", {2222: "accept"})
    assert tcp_state(router.addr, 2222) == "open"
    with socket.create_connection((router.addr, 2222), timeout=2) as sock:
        assert sock.recv(100) == b"SSH-2.0-emtb\r\n"


def test_reject_port_refuses_quickly(router: Router) -> None:
    """A rejected port answers with an RST at once, even when a service listens behind it."""
    router.listen(8080)
    router.set_policy("accept", {8080: "reject"})
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((router.addr, 8080), timeout=2).close()
    assert time.monotonic() - started < 0.1
    assert tcp_state(router.addr, 8081) == "closed"  # default accept, nothing listening


def test_drop_port_times_out(router: Router) -> None:
    """A dropped port never answers, so a short connect times out."""
    router.listen(8080)
    router.set_policy("accept", {8080: "drop"})
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        socket.create_connection((router.addr, 8080), timeout=0.3).close()
    assert time.monotonic() - started >= 0.29


def test_range_rules_and_specific_port_wins(router: Router) -> None:
    """Range rules cover their ports, a single-port rule beats a range, the default the rest."""
    for port in (80, 85, 89, 90):
        router.listen(port)
    router.set_policy("reject", {(80, 89): "accept", 85: "drop", (440, 449): "drop"})
    states = probe_many(router.addr, [79, 80, 85, 89, 90, 440, 449, 450], timeout=0.3)
    expected = ["closed", "open", "filtered", "open", "closed", "filtered", "filtered", "closed"]
    assert states == expected


def test_prohibit_answers_every_port_with_icmp(router: Router) -> None:
    """A prohibit range answers all of 2000 parallel connects with ICMP, none rate-limited."""
    router.set_policy("drop", {(10000, 11999): "prohibit"})
    started = time.monotonic()
    states = probe_many(router.addr, range(10000, 12000), timeout=2.0)
    assert states == ["unreachable"] * 2000
    assert time.monotonic() - started < 1.5


def test_loss_drops_some_but_not_all(router: Router) -> None:
    """With loss=0.5 each way, some of 200 parallel connects succeed and some time out."""
    router.listen(8080)
    router.set_policy("reject", {8080: "accept"}, loss=0.5)
    states = probe_many(router.addr, [8080] * 200, timeout=0.2)
    opened = states.count("open")
    # SYN and SYN-ACK must both survive: p = 0.25, so 50 expected, sd 6; bounds are > 5 sd.
    assert 15 <= opened <= 100, states
    assert states.count("filtered") == 200 - opened - states.count("closed")
    router.set_policy("reject", {8080: "accept"})
    assert probe_many(router.addr, [8080] * 50, timeout=1.0) == ["open"] * 50


def test_rate_limit_drops_syns_beyond_the_burst(router: Router) -> None:
    """Under `rate_limit(1, burst=5)` 5 of 20 parallel SYNs are answered; lifted, all 20 are."""
    router.listen(8080)
    router.set_policy("reject", {8080: "accept"})
    router.rate_limit(1, burst=5)
    states = probe_many(router.addr, range(1000, 1020), timeout=0.5)
    # The bucket holds 5; at 1/s at most one more token can arrive within the half second.
    assert 5 <= states.count("closed") <= 6, states
    assert states.count("filtered") == 20 - states.count("closed")
    router.rate_limit(None)
    assert probe_many(router.addr, range(1000, 1020), timeout=1.0) == ["closed"] * 20


def test_rate_limit_refills_at_its_rate_and_set_policy_clears_it(router: Router) -> None:
    """An emptied bucket answers again once a token arrives; `set_policy` replaces the limit."""
    router.listen(8080)
    router.set_policy("reject", {8080: "accept"})
    router.rate_limit(2, burst=1)
    states = probe_many(router.addr, [8080] * 10, timeout=0.3)
    assert states.count("open") in (1, 2), states
    assert wait_for(lambda: tcp_state(router.addr, 8080) == "open", timeout=5.0)
    router.set_policy("reject", {8080: "accept"})
    assert probe_many(router.addr, [8080] * 10, timeout=1.0) == ["open"] * 10


def test_delayed_path_has_the_rtt_and_direct_path_does_not(router_factory: RouterFactory) -> None:
    """Connects via delayed_addr take at least the RTT; via addr they take well under 5 ms."""
    router = router_factory(rtt=0.04)
    assert router.delayed_addr is not None
    delayed = min_connect_time(router.delayed_addr, 9)
    direct = min_connect_time(router.addr, 9)
    assert 0.040 <= delayed < 0.080
    assert direct < 0.005
    stats = router.relay_stats()
    assert stats is not None
    assert stats["a_to_b"] >= 5
    assert stats["b_to_a"] >= 5


def test_http_listener_answers_with_server_header_and_title(router: Router) -> None:
    """The http listener answers 200 with the configured Server header and HTML title."""
    router.listen(8080, "http", server_header="Bintec-httpd/10.2", title="Digitalisierungsbox")
    router.set_policy("reject", {8080: "accept"})
    response, _ = http_get(router.addr, 8080)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nServer: Bintec-httpd/10.2" in head
    assert b"<title>Digitalisierungsbox</title>" in body


def test_tls_cert_matches_and_changes_with_firmware_update(router_factory: RouterFactory) -> None:
    """The TLS cert served matches cert_sha256, survives a reboot, and changes with new_cert."""
    router = router_factory(rtt=0.01)
    assert router.delayed_addr is not None
    router.listen(443, "tls", server_header="fw-1", title="Login")
    router.set_policy("reject", {443: "accept"})
    router.save_boot_state()
    first = router.cert_sha256(443)
    assert served_cert_sha256(router.addr, 443) == first
    assert served_cert_sha256(router.delayed_addr, 443) == first
    response, _ = http_get(router.addr, 443, tls=True)
    assert b"Server: fw-1" in response
    assert b"<title>Login</title>" in response
    router.reboot(downtime=0.1)
    assert router.cert_sha256(443) == first == served_cert_sha256(router.addr, 443)
    router.reboot(downtime=0.1, new_cert=True)
    second = router.cert_sha256(443)
    assert second != first
    assert served_cert_sha256(router.addr, 443) == second


def test_reboot_goes_silent_then_restores_boot_state(router: Router) -> None:
    """During a reboot nothing answers; afterwards policy and services are the saved ones."""
    router.listen(80, "http")
    router.set_policy("reject", {80: "accept"})
    router.save_boot_state()
    # The admin's later changes are not part of the boot configuration.
    router.unlisten(80)
    router.listen(8080)
    router.set_policy("reject", {80: "drop", 8080: "accept"})
    assert probe_many(router.addr, [80, 8080, 81], timeout=0.3) == ["filtered", "open", "closed"]
    rebooting = threading.Thread(target=router.reboot, args=(1.0,), daemon=True)
    rebooting.start()
    try:
        assert wait_for(lambda: tcp_state(router.addr, 81, timeout=0.1) == "filtered", 1.0)
        assert probe_many(router.addr, [80, 8080], timeout=0.1) == ["filtered", "filtered"]
    finally:
        rebooting.join(timeout=10)
    assert not rebooting.is_alive()
    assert probe_many(router.addr, [80, 8080, 81], timeout=0.3) == ["open", "closed", "closed"]
    response, _ = http_get(router.addr, 80)
    assert response.startswith(b"HTTP/1.1 200 ")


def test_incident_ports_reopen_after_reboot(router_factory: RouterFactory) -> None:
    """The seed bug: ports 80-89/440-449 closed by the admin are open again after a reboot."""
    router = router_factory(rtt=0.02)
    assert router.delayed_addr is not None
    hot = [*range(80, 90), 440, 441, 442, 444, 445, 446, 447, 448, 449]
    for port in range(80, 90):
        router.listen(port, "http", server_header="bintec-httpd")
    for port in range(440, 450):
        router.listen(port, "tls")
    # Forwarding 443 makes the buggy firmware open both ranges, and that is what it boots into.
    router.set_policy("reject", {443: "accept", (80, 89): "accept", (440, 449): "accept"})
    router.save_boot_state()
    assert probe_many(router.delayed_addr, [*hot, 443]) == ["open"] * 20
    router.set_policy("reject", {443: "accept"})  # the admin closes them; not persisted
    assert probe_many(router.delayed_addr, [*hot, 443]) == ["closed"] * 19 + ["open"]
    before = router.cert_sha256(443)
    router.reboot(downtime=0.2, new_cert=True)  # a firmware update
    assert probe_many(router.delayed_addr, [*hot, 443]) == ["open"] * 20
    assert router.cert_sha256(443) != before
    assert served_cert_sha256(router.delayed_addr, 443) == router.cert_sha256(443)


def test_ping_answers_unless_policy_drops_icmp(router_factory: RouterFactory) -> None:
    """The router answers ICMP echo on both paths unless set_policy(ping=False)."""
    router = router_factory(rtt=0.02)
    assert router.delayed_addr is not None
    assert ping(router.addr)
    assert ping(router.delayed_addr)
    router.set_policy("drop", ping=False)
    assert not ping(router.addr, timeout=0.2)


def test_power_off_blocks_changes_until_power_on(router: Router) -> None:
    """A powered-off router drops everything and refuses configuration until it boots."""
    router.power_off()
    assert tcp_state(router.addr, 22, timeout=0.2) == "filtered"
    with pytest.raises(RuntimeError, match="powered off"):
        router.listen(22)
    router.power_on()
    assert tcp_state(router.addr, 22) == "closed"


def test_routers_coexist_with_separate_subnets(router_factory: RouterFactory) -> None:
    """Two routers get distinct subnets and namespaces and independent policies."""
    first, second = router_factory(), router_factory()
    assert first.name != second.name
    assert first.addr != second.addr
    first.listen(8080)
    second.listen(8080)
    first.set_policy("reject", {8080: "accept"})
    second.set_policy("drop")
    assert tcp_state(first.addr, 8080) == "open"
    assert tcp_state(second.addr, 8080, timeout=0.2) == "filtered"


@pytest.mark.asyncio
async def test_usable_from_async_code(router_factory: RouterFactory) -> None:
    """Routers work from async tests: asyncio connects through the delayed path."""
    router = await asyncio.to_thread(router_factory, 0.02)
    router.listen(8080, banner=b"hello\n")
    router.set_policy("reject", {8080: "accept"})
    assert router.delayed_addr is not None
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(router.delayed_addr, 8080), timeout=2
    )
    try:
        assert await asyncio.wait_for(reader.readline(), timeout=2) == b"hello\n"
    finally:
        writer.close()
        await writer.wait_closed()


def test_close_removes_namespace_links_and_processes(router_factory: RouterFactory) -> None:
    """After close() no emtb namespace, link or helper process of that router is left."""
    router = router_factory(rtt=0.02)
    router.listen(8080)
    name = router.name
    pids = [c.proc.pid for c in (router._relay, router._listeners) if c is not None]
    assert len(pids) == 2
    router.close()
    assert (
        name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    )
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    for kind in "vtu":
        assert f"emtb{os.getpid()}{kind}{router.index}" not in links
    assert not any(alive(pid) for pid in pids)
    assert tcp_state(router.addr, 80) == "unreachable"  # the safety route, not the internet


@pytest.mark.usefixtures("testbed_available")
def test_cleanup_stale_removes_leftovers_of_a_killed_run() -> None:
    """A run killed with SIGKILL leaves a namespace that cleanup_stale() then removes."""
    code = (
        "from tests.support.testbed import make_router; "
        "r = make_router(0.01); print(r.name, flush=True)"
    )
    code += "; import sys; sys.stdin.read()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "child did not build its router"
        name = proc.stdout.readline().decode().strip()
        assert name.startswith("emtb-")
    finally:
        proc.kill()
        proc.wait(10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
    assert name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert name in cleanup_stale()
    assert (
        name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    )


def test_probes_refuse_foreign_addresses() -> None:
    """The probe helpers refuse any address outside loopback and 198.18.0.0/15."""
    for addr in ("192.0.2.1", "8.8.8.8", "198.20.0.1", "2001:db8::1"):
        with pytest.raises(ValueError, match="refuses"):
            check_target(addr)
    check_target("127.0.0.1")
    check_target("198.19.255.2")
