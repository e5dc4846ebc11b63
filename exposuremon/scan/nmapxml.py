"""nmap's XML output format (`-oX`), for ndiff and the tools that import it.

DefectDojo, Faraday, IVRE, python-libnmap and nmap's own `ndiff` read nmap XML; writing it lets
them take exposuremon's scans and its known state as they are. The document follows nmap.dtd
(xmloutputversion 1.05) with `scanner="exposuremon"`, the way masscan writes `scanner="masscan"`.

What the format has no field for is carried where nmap itself puts such things:
- a fingerprint becomes `<service>`: name `http` when an HTTP answer came (tunnel `ssl` under
  TLS), else `ssl` for TLS alone, else `unknown`; `product` = the HTTP Server header,
  `extrainfo` = the page title and the certificate subject; method `probed`;
- everything else is ONE `<script id="exposuremon">` per port, one `key: value` line each:
  `verdict` (expected, ignored, unexpected with its finding), `banner`, `http-server-header`,
  `http-title`, `ssl-cert` (subject, expiry, SHA-256), named after the NSE scripts that
  report the same; and a host script `exposuremon` naming the target.
One script per port because Debian's ndiff (7.93) cannot compare ports with more than one:
it sorts their results with a Python 2 `__cmp__` and fails with a TypeError.

Pure: values in, text out. Text from the network (banners, titles) may hold characters XML
cannot carry (NUL, other controls, lone surrogates): they are written as `\\xNN` / `\\uNNNN`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence

from exposuremon.model import Fingerprint
from exposuremon.scan.ports import format_ports

XML_OUTPUT_VERSION = "1.05"
# Characters XML 1.0 cannot hold, even escaped (surrogates too: they are not characters).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Why a port has its state, in nmap's words (`--reason`): a connect scan's answers.
REASONS = {"open": "syn-ack", "closed": "conn-refused", "filtered": "no-response"}


@dataclasses.dataclass(frozen=True, slots=True)
class NmapPort:
    """One `<port>`: a TCP port's state, what was learned of its service, and notes."""

    port: int
    state: str  # "open", "closed" or "filtered"
    fingerprint: Fingerprint | None = None
    verdict: str = ""  # what exposuremon makes of the port (`expected`, ...); "": nothing


@dataclasses.dataclass(frozen=True, slots=True)
class NmapHost:
    """One `<host>`: its address (an IP; None if never resolved), name, status and ports."""

    address: str | None
    status: str  # "up", "down" or "unknown"
    hostname: str | None = None  # a name the user gave (a DDNS name), not a PTR record
    ports: Sequence[NmapPort] = ()
    extraports: Mapping[str, int] = dataclasses.field(default_factory=dict)  # state -> count
    started: dt.datetime | None = None
    finished: dt.datetime | None = None
    note: str = ""  # the host's `exposuremon` script output ("": none)


def xml_text(text: str) -> str:
    """`text` with what XML 1.0 cannot carry written as `\\xNN` / `\\uNNNN` escapes."""
    return _NOT_XML.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _epoch(when: dt.datetime) -> str:
    return str(int(when.timestamp()))


def _timestr(when: dt.datetime) -> str:
    # nmap writes ctime-style local time; UTC is unambiguous for a document read elsewhere.
    return when.astimezone(dt.UTC).strftime("%a %b %d %H:%M:%S %Y UTC")


def service_of(fp: Fingerprint) -> dict[str, str]:
    """The `<service>` attributes a fingerprint stands for (see the module's docstring)."""
    tls = fp.tls_sha256 is not None or fp.tls_subject is not None
    http = fp.http_server is not None or fp.http_title is not None
    attrs = {"name": "http" if http else "ssl" if tls else "unknown"}
    if fp.http_server:
        attrs["product"] = xml_text(fp.http_server)
    extra = [f"title: {fp.http_title}"] if fp.http_title else []
    extra += [f"TLS {fp.tls_subject}"] if fp.tls_subject else []
    if extra:
        attrs["extrainfo"] = xml_text("; ".join(extra))
    if http and tls:
        attrs["tunnel"] = "ssl"
    attrs |= {"method": "probed", "conf": "10" if http or tls else "3"}
    return attrs


def fingerprint_lines(fp: Fingerprint) -> list[str]:
    """The fingerprint as `key: value` lines of the port's `exposuremon` script, keyed by the
    NSE scripts that report the same (`banner`, `http-server-header`, `http-title`,
    `ssl-cert`). Line breaks inside a value are written as `\\n`, one line per key."""
    found = []
    if fp.banner:
        found.append(("banner", fp.banner))
    if fp.http_server:
        found.append(("http-server-header", fp.http_server))
    if fp.http_title:
        found.append(("http-title", fp.http_title))
    if fp.tls_subject or fp.tls_sha256:
        parts = []
        if fp.tls_subject:
            parts.append(f"Subject: {fp.tls_subject}")
        if fp.tls_not_after:
            parts.append(f"Not valid after: {fp.tls_not_after.strftime('%Y-%m-%dT%H:%M:%S')}")
        if fp.tls_sha256:
            parts.append(f"SHA-256: {fp.tls_sha256}")
        found.append(("ssl-cert", "; ".join(parts)))
    return [f"{key}: {_one_line(value)}" for key, value in found]


def _one_line(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


def _port(parent: ET.Element, port: NmapPort) -> None:
    elem = ET.SubElement(parent, "port", protocol="tcp", portid=str(port.port))
    reason = REASONS.get(port.state, "unknown")
    ET.SubElement(elem, "state", state=port.state, reason=reason, reason_ttl="0")
    lines = [f"verdict: {port.verdict}"] if port.verdict else []
    if port.fingerprint is not None and not port.fingerprint.is_empty():
        ET.SubElement(elem, "service", service_of(port.fingerprint))
        lines += fingerprint_lines(port.fingerprint)
    if lines:
        ET.SubElement(elem, "script", id="exposuremon", output=xml_text("\n".join(lines)))


def _host(parent: ET.Element, host: NmapHost) -> None:
    times = {}
    if host.started is not None:
        times["starttime"] = _epoch(host.started)
    if host.finished is not None:
        times["endtime"] = _epoch(host.finished)
    elem = ET.SubElement(parent, "host", times)
    ET.SubElement(elem, "status", state=host.status, reason="user-set", reason_ttl="0")
    if host.address is not None:
        version = ipaddress.ip_address(host.address).version
        ET.SubElement(elem, "address", addr=host.address, addrtype=f"ipv{version}")
    names = ET.SubElement(elem, "hostnames")
    if host.hostname is not None:
        ET.SubElement(names, "hostname", name=xml_text(host.hostname), type="user")
    ports = ET.SubElement(elem, "ports")
    for state, count in sorted(host.extraports.items()):
        if count:
            ET.SubElement(ports, "extraports", state=state, count=str(count))
    for port in sorted(host.ports, key=lambda p: p.port):
        _port(ports, port)
    if host.note:
        scripts = ET.SubElement(elem, "hostscript")
        ET.SubElement(scripts, "script", id="exposuremon", output=xml_text(host.note))


def nmap_run(
    hosts: Sequence[NmapHost],
    *,
    args: str,
    version: str,
    started: dt.datetime,
    finished: dt.datetime,
    ports: Sequence[int] | None = None,
) -> str:
    """One `<nmaprun>` document. `ports`: the ports every host was scanned on (None: unknown,
    as for the known state of a store, where each port has its own history)."""
    root = ET.Element(
        "nmaprun",
        scanner="exposuremon",
        args=xml_text(args),
        start=_epoch(started),
        startstr=_timestr(started),
        version=version,
        xmloutputversion=XML_OUTPUT_VERSION,
    )
    if ports is not None:
        ET.SubElement(
            root,
            "scaninfo",
            type="connect",
            protocol="tcp",
            numservices=str(len(set(ports))),
            services=format_ports(ports) if ports else "",
        )
    ET.SubElement(root, "verbose", level="0")
    ET.SubElement(root, "debugging", level="0")
    for host in hosts:
        _host(root, host)
    stats = ET.SubElement(root, "runstats")
    up = sum(1 for h in hosts if h.status == "up")
    down = sum(1 for h in hosts if h.status == "down")
    elapsed = max(0.0, (finished - started).total_seconds())
    ET.SubElement(
        stats,
        "finished",
        time=_epoch(finished),
        timestr=_timestr(finished),
        summary=(
            f"exposuremon done at {_timestr(finished)}; {len(hosts)} IP addresses "
            f"({up} hosts up) scanned in {elapsed:.2f} seconds"
        ),
        elapsed=f"{elapsed:.2f}",
        exit="success",
    )
    ET.SubElement(stats, "hosts", up=str(up), down=str(down), total=str(len(hosts)))
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE nmaprun>\n{body}\n'
