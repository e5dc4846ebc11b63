"""nmap XML documents: well-formed for any text, and read as intended by python-libnmap."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

from hypothesis import given
from hypothesis import strategies as st
from libnmap.parser import NmapParser

from exposuremon.model import Fingerprint
from exposuremon.scan.nmapxml import (
    NmapHost,
    NmapPort,
    fingerprint_lines,
    nmap_run,
    service_of,
    xml_text,
)

T0 = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
TLS_WEB = Fingerprint(
    banner=None,
    tls_sha256="ab" * 32,
    tls_subject="CN=router.example.net",
    tls_not_after=dt.datetime(2027, 3, 1, 12, 0, tzinfo=dt.UTC),
    http_server="bintec elmeg httpd",
    http_title="Digitalisierungsbox Premium",
)


def document(hosts: list[NmapHost]) -> str:
    """A run of `hosts` over one minute from T0."""
    return nmap_run(
        hosts,
        args="exposuremon test",
        version="0.1.0",
        started=T0,
        finished=T0 + dt.timedelta(minutes=1),
        ports=[22, 80, 443, 8443],
    )


def test_libnmap_reads_hosts_ports_services_and_scripts() -> None:
    """python-libnmap sees the host, each port's state, the service a fingerprint stands for,
    and one `exposuremon` script result per port with the verdict and the fingerprint."""
    host = NmapHost(
        address="203.0.113.9",
        status="up",
        hostname="router.example.net",
        ports=[
            NmapPort(443, "open", TLS_WEB, "unexpected"),
            NmapPort(22, "open", Fingerprint(banner="SSH-2.0-dropbear_2019.78\r\n")),
            NmapPort(8443, "filtered"),
        ],
        extraports={"closed": 1},
        started=T0,
        finished=T0 + dt.timedelta(seconds=30),
        note="target shop-203.0.113.9",
    )
    report = NmapParser.parse_fromstring(document([host]))
    assert report.version == "0.1.0"
    assert report.commandline == "exposuremon test"
    assert report.hosts_total == 1
    (parsed,) = report.hosts
    assert parsed.address == "203.0.113.9"
    assert parsed.status == "up"
    assert parsed.hostnames == ["router.example.net"]
    assert parsed.scripts_results == [
        {"id": "exposuremon", "output": "target shop-203.0.113.9", "elements": {}}
    ]
    services = {s.port: s for s in parsed.services}
    assert {p: s.state for p, s in services.items()} == {
        22: "open",
        443: "open",
        8443: "filtered",
    }
    web = services[443]
    assert web.service == "http"
    assert web.tunnel == "ssl"
    assert web.service_dict["product"] == "bintec elmeg httpd"
    assert web.service_dict["extrainfo"] == (
        "title: Digitalisierungsbox Premium; TLS CN=router.example.net"
    )
    (script,) = web.scripts_results
    assert script["id"] == "exposuremon"
    assert script["output"].splitlines() == [
        "verdict: unexpected",
        "http-server-header: bintec elmeg httpd",
        "http-title: Digitalisierungsbox Premium",
        "ssl-cert: Subject: CN=router.example.net; Not valid after: 2027-03-01T12:00:00; "
        f"SHA-256: {'ab' * 32}",
    ]
    ssh = services[22]
    assert ssh.service == "unknown"
    assert [r["output"] for r in ssh.scripts_results] == ["banner: SSH-2.0-dropbear_2019.78\\r\\n"]
    assert services[8443].service == ""  # nothing learned: no <service>, as nmap -sT writes
    assert services[8443].scripts_results == []


def test_service_names() -> None:
    """HTTP answers make `http` (over TLS: tunnel ssl), TLS alone `ssl`, a banner `unknown`."""
    assert service_of(Fingerprint(http_title="x"))["name"] == "http"
    assert "tunnel" not in service_of(Fingerprint(http_server="x"))
    assert service_of(Fingerprint(tls_sha256="00"))["name"] == "ssl"
    assert service_of(Fingerprint(banner="220 ftp"))["name"] == "unknown"


def test_an_unscanned_hostname_target_has_no_address() -> None:
    """A host known only by name is written with its hostname and without an address."""
    host = NmapHost(address=None, status="unknown", hostname="gw.example.net")
    root = ET.fromstring(document([host]).split("\n", 2)[2])
    (elem,) = root.iter("host")
    assert elem.find("address") is None
    assert elem.find("status").get("state") == "unknown"  # type: ignore[union-attr]
    assert [h.get("name") for h in elem.iter("hostname")] == ["gw.example.net"]


def test_ipv6_addresses_carry_their_type() -> None:
    """An IPv6 host's address element says addrtype ipv6."""
    host = NmapHost(address="2001:db8::7", status="up")
    (parsed,) = NmapParser.parse_fromstring(document([host])).hosts
    assert parsed.address == "2001:db8::7"
    assert parsed.ipv6 == "2001:db8::7"


def test_xml_text_escapes_what_xml_cannot_carry() -> None:
    """NUL, other controls and lone surrogates become visible escapes; the rest stays."""
    assert xml_text("a\x00b\x1bc\ud800d\tok\n") == "a\\x00b\\x1bc\\ud800d\tok\n"
    assert xml_text("Grüße ✓ \U0001f600") == "Grüße ✓ \U0001f600"


@given(
    banner=st.text(max_size=40),
    title=st.text(max_size=40),
    subject=st.text(max_size=40),
    hostname=st.text(min_size=1, max_size=20),
)
def test_any_network_text_gives_a_document_both_parsers_read(
    banner: str, title: str, subject: str, hostname: str
) -> None:
    """Whatever a router sends in a banner, title or certificate, the document stays
    well-formed, and the text is carried on one line each (escaped where XML cannot hold it)."""
    fp = Fingerprint(banner=banner or None, http_title=title or None, tls_subject=subject or None)
    host = NmapHost("192.0.2.1", "up", hostname=hostname, ports=[NmapPort(80, "open", fp)])
    text = document([host])
    root = ET.fromstring(text.encode())
    (parsed,) = NmapParser.parse_fromstring(text).hosts
    (service,) = parsed.services
    scripts = service.scripts_results
    lines = scripts[0]["output"].split("\n") if scripts else []
    assert lines == [xml_text(line) for line in fingerprint_lines(fp)]
    names = [h.get("name") for h in root.iter("hostname")]
    assert names == [xml_text(hostname)]
