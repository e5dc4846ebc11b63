"""The status page in a real headless Chromium, served by a running daemon with real findings.

Three "routers" on loopback addresses play the incident: the surgery's router shows ports 80,
81 and 444 next to its forward on 443, an admin closes them, the router "reboots" (443 comes
back with a new Server header) and 81 and 444 open again: reopened, critical. A home office
router answers with a hostile HTTP title, a hostile SSH banner sits on the surgery router.
Chromium renders the page (no network beyond loopback); the DOM must hold the content, the
hostile text only as text; the surgery router's card draws each port's history (81 and 444:
open, closed, a reboot mark, open again in red); the screenshot becomes docs/status-page.png
for the README.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from exposuremon.config.fields import TOKEN_ENV
from exposuremon.model import EventType, FindingState
from exposuremon.service import Service
from exposuremon.store.database import Store
from exposuremon.web import HttpServer, make_app
from tests.support import bigstore
from tests.support.daemon import running_service, wait_until, write_config
from tests.web.test_target_pages import ReadOnly as ReadBackend

CHROMIUM = shutil.which("chromium")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "status-page.png"
TOKEN = "chromium-test-token"
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(1)>"
SURGERY, BRANCH, HOME = "127.0.0.61", "127.0.0.62", "127.0.0.63"
CHROMIUM_TIMEOUT = 90.0

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make test installs it)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="binds ports below 1024, as routers do"),
]


class Responder:
    """A TCP service on loopback: a banner that speaks first, or a small HTTP server."""

    def __init__(
        self, host: str, port: int, *, banner: str | None = None, server: str = "", title: str = ""
    ) -> None:
        self.host, self.port = host, port
        self.banner, self.server, self.title = banner, server, title
        self._server: asyncio.Server | None = None
        self._open: dict[asyncio.StreamWriter, asyncio.Event] = {}  # connections -> done

    async def start(self) -> None:
        """Listen (again, after stop)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)

    async def stop(self) -> None:
        """Stop listening and end open connections: the port refuses from now on."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._open):
            writer.transport.abort()  # the handler's read returns; it ends by itself
        waits = [asyncio.create_task(done.wait()) for done in self._open.values()]
        if waits:
            await asyncio.wait(waits, timeout=5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        done = self._open[writer] = asyncio.Event()
        try:
            async with asyncio.timeout(5):
                if self.banner is not None:
                    writer.write(self.banner.encode() + b"\r\n")
                    await writer.drain()
                    await reader.read(1024)
                    return
                request = await reader.read(4096)
                if request.startswith(b"GET "):  # a TLS hello or anything else: hang up
                    body = f"<html><head><title>{self.title}</title></head></html>".encode()
                    head = (
                        "HTTP/1.1 200 OK\r\n"
                        f"Server: {self.server}\r\n"
                        "Content-Type: text/html\r\n"
                        f"Content-Length: {len(body)}\r\n"
                        "Connection: close\r\n\r\n"
                    )
                    writer.write(head.encode() + body)
                    await writer.drain()
        except (TimeoutError, OSError):
            pass
        finally:
            writer.close()
            self._open.pop(writer, None)
            done.set()


@contextlib.asynccontextmanager
async def routers() -> AsyncIterator[dict[str, Responder]]:
    """The three routers' services, listening; all stopped afterwards."""
    bintec = {"server": "bintec-httpd/10.2.5", "title": "Digitalisierungsbox Premium"}
    services = {
        "surgery/443": Responder(SURGERY, 443, **bintec),
        "surgery/80": Responder(SURGERY, 80, **bintec),
        "surgery/81": Responder(SURGERY, 81, **bintec),
        "surgery/444": Responder(SURGERY, 444, **bintec),
        "surgery/2222": Responder(SURGERY, 2222, banner=f"SSH-2.0-dropbear {HOSTILE}"),
        "branch/22": Responder(BRANCH, 22, banner="SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"),
        "branch/443": Responder(BRANCH, 443, server="nginx", title="VPN portal"),
        "home/8080": Responder(
            HOME, 8080, server="mini_httpd/1.30", title='Router "admin"><script>alert(2)</script>'
        ),
    }
    try:
        for responder in services.values():
            await responder.start()
        yield services
    finally:
        for responder in services.values():
            await responder.stop()


async def findings_of(store: Store, target: str) -> dict[int, Any]:
    """Active findings of a target by port."""
    return dict((await store.load_state(target)).findings)


async def count_events(store: Store, target: str, kind: EventType) -> int:
    """How many events of one type a target has."""
    events, _ = await store.events(target=target, type=kind, limit=1000)
    return len(events)


async def chromium(*args: str, host: str, profile: Path) -> str:
    """Run headless Chromium (loopback only) and return its stdout; killed on timeout."""
    assert CHROMIUM is not None
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-sync",
        # Nothing but the daemon is reachable: every other host fails to resolve (the rules
        # apply to IP literals too), so nothing can leave loopback.
        f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {host}",
        "--hide-scrollbars",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its helpers share the group: one kill ends them all
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CHROMIUM_TIMEOUT)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode(errors="replace")


async def play_the_incident(service: Service, services: dict[str, Responder], api: str) -> None:
    """Findings, on-demand scans, a reboot that reopens two ports, an ack through the API."""
    store = service.store
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def surgery_exposed() -> bool:
        return {80, 81, 444} <= set(await findings_of(store, "surgery-router"))

    await wait_until(surgery_exposed, 30, "findings on 80, 81, 444")
    async with aiohttp.ClientSession() as http:
        for name in ("surgery-router", "branch-office", "home-office"):
            async with http.post(f"{api}/targets/{name}/scan", headers=headers) as resp:
                assert resp.status == 202, await resp.text()

        async def banner_seen() -> bool:
            found = (await findings_of(store, "surgery-router")).get(2222)
            return found is not None and found.fingerprint is not None

        await wait_until(banner_seen, 30, "the on-demand quick scan finds 2222 and its banner")

        # The admin closes the bug's ports; then the router reboots: 443 goes away too and
        # comes back with a new firmware's Server header, and 81 and 444 with it.
        for port in ("81", "444"):
            await services[f"surgery/{port}"].stop()

        async def resolved() -> bool:
            return await count_events(store, "surgery-router", EventType.FINDING_RESOLVED) >= 2

        await wait_until(resolved, 30, "81 and 444 resolved")
        await services["surgery/443"].stop()

        async def expected_gone() -> bool:
            kind = EventType.EXPECTED_PORT_CLOSED
            return await count_events(store, "surgery-router", kind) >= 1

        await wait_until(expected_gone, 30, "443 seen closed")
        services["surgery/443"].server = "bintec-httpd/10.2.7"
        for port in ("443", "81", "444"):
            await services[f"surgery/{port}"].start()

        async def reopened() -> bool:
            return await count_events(store, "surgery-router", EventType.FINDING_REOPENED) >= 2

        await wait_until(reopened, 30, "81 and 444 reopened")

        home = (await wait_until(lambda: findings_of(store, "home-office"), 30, "home finding"))[
            8080
        ]
        doc = {"until": "7d", "reason": "ISP remote management <b>ticket 4711</b>"}
        async with http.post(f"{api}/findings/{home.id}/ack", headers=headers, json=doc) as resp:
            assert resp.status == 200, await resp.text()
    acked = (await findings_of(store, "home-office"))[8080]
    assert acked.state is FindingState.ACKED


async def test_status_page_in_chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chromium shows targets, ports, reopened findings, port history; hostile text stays text."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    narrow = "1-1024,2222,8000-9000"  # full scans stay on the routers' own ports
    targets: list[dict[str, Any]] = [
        {"name": "surgery-router", "address": SURGERY, "expected_open": "443"},
        {"name": "branch-office", "address": BRANCH, "expected_open": "22,443"},
        {"name": "home-office", "address": HOME, "expected_open": "4443"},
    ]
    for t in targets:
        t["ports_full"] = narrow
    config = write_config(tmp_path, targets, quick="1h")
    async with routers() as services, running_service(config) as service:
        assert service.http_address is not None
        base = "http://{}:{}".format(*service.http_address)
        await play_the_incident(service, services, f"{base}/api/v1")
        host = service.http_address[0]
        dom = await chromium("--dump-dom", f"{base}/", host=host, profile=tmp_path / "dom")
        shot = tmp_path / "status-page.png"
        await chromium(
            f"--screenshot={shot}",
            "--window-size=1280,1500",
            f"{base}/",
            host=host,
            profile=tmp_path / "shot",
        )

    # Content: every target with its anchor, ports marked, reopened criticals, the timeline.
    for name in ("surgery-router", "branch-office", "home-office"):
        assert f'id="target-{name}"' in dom
    assert re.search(r"<title>exposuremon: \d+ critical, 1 warning</title>", dom), dom[:500]
    assert "reopened" in dom
    assert "finding reopened" in dom
    assert "reboot suspected" in dom or "fingerprint changed" in dom
    assert re.search(r"<b>443</b> expected", dom)
    assert re.search(r"<b>444</b> unexpected", dom)
    assert re.search(r"<b>4443</b> expected · not open", dom)
    assert "acked" in dom
    assert 'class="pill sev-critical"' in dom
    # The surgery router's port history: 81 and 444 open, closed by the admin, a reboot
    # mark, open again in red; drawn as inline SVG, which Chromium parsed as SVG elements.
    card = dom[dom.index('id="target-surgery-router"') :]
    card = card[: card.index("</section>")]
    assert '<svg class="history"' in card
    for port in ("81", "444"):
        row = re.split(r'<text class="port"[^>]*>', card)
        drawn = next(r for r in row if r.startswith(f"{port}<"))
        assert re.findall(r'<rect class="tl-(\w+)"', drawn)[-3:] == ["open", "closed", "reopened"]
        assert 'class="tl-reopen"' in drawn
        assert 'class="tl-reboot"' in drawn
    # Hostile text from the scanned hosts (and from the ack reason) arrived as text only.
    assert "<script" not in dom
    assert "<img" not in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in dom
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in dom
    assert "&lt;b&gt;ticket 4711&lt;/b&gt;" in dom
    assert shot.stat().st_size > 20_000
    SCREENSHOT.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT)


async def test_status_page_at_10000_targets(tmp_path: Path) -> None:
    """At 10,000 targets Chromium renders a small page: problems first, search and pages work."""
    big = await bigstore.build(tmp_path, 10_000)
    async with await Store.open(tmp_path / "state") as store:
        app = make_app(CollectorRegistry(), ReadBackend(store, big.config))
        server = HttpServer(app, "127.0.0.1", 0)
        await server.start()
        try:
            assert server.bound is not None
            host, port = server.bound
            base = f"http://{host}:{port}/"
            async with aiohttp.ClientSession() as http, http.get(base) as resp:
                html = await resp.text()
                csp = resp.headers["Content-Security-Policy"]
            dom = await chromium("--dump-dom", base, host=host, profile=tmp_path / "p1")
            # Follow the pager's "next" link of the list, as a click would.
            link = re.search(r'<a rel="next" href="([^"]*page=2[^"]*)"', dom)
            assert link is not None, "no link to the second page of targets"
            page2_url = base + link.group(1).replace("&amp;", "&")
            page2 = await chromium("--dump-dom", page2_url, host=host, profile=tmp_path / "p2")
            # The search form is a plain GET form: its submission is this URL.
            form = re.search(r'<form class="search" method="get"[^>]*>', dom)
            assert form is not None
            assert "action=" not in form.group(0)  # submits to the page itself
            found = await chromium(
                "--dump-dom", base + "?q=router-09999", host=host, profile=tmp_path / "p3"
            )
        finally:
            await server.stop()

    assert "form-action" not in csp  # the CSP leaves form submission alone
    assert len(html.encode()) <= 200_000
    reopened = big.reopened[0]
    # Most urgent first: reopened findings, then critical ones; the down routers come after.
    cards = re.findall(r'<section class="card target[^"]*" id="target-([^"]+)"', dom)
    assert cards == list(big.reopened[:25])  # 50 reopened: the first 25 in config order
    assert f'id="target-{reopened}"' in dom
    assert "reopened" in dom
    assert re.search(r"<b>8080</b> unexpected", dom)
    tiles = " ".join(re.sub(r"<[^>]+>", " ", dom).split())
    assert "10000 targets" in tiles
    assert "1000 need attention" in tiles
    assert "500 down" in tiles
    assert "page 1 of 40" in dom  # 1000 attention cards, 25 a page
    assert "page 1 of 90 · 1–100 of 9000 targets" in dom
    assert "page 2 of 90 · 101–200 of 9000 targets" in page2
    healthy = re.findall(r'<tr class="target" id="target-([^"]+)"', page2)
    assert len(healthy) == 100
    assert not set(healthy) & (set(big.down) | set(big.with_findings))
    assert 'id="target-router-09999"' in found
    assert found.count('<tr class="target"') == 1
    assert "<script" not in dom
