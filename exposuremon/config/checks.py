"""Warnings about a valid configuration: targets that cannot be watched from here.

Scanning your own WAN address from inside the LAN goes through hairpin NAT and shows the
wrong side; `check-config` says so. Nothing here sends traffic (own addresses come from /proc).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
from collections.abc import Iterable
from pathlib import Path

from exposuremon.config.fields import IPAddress
from exposuremon.config.models import Config, TargetConfig, entry_key

_HAIRPIN = (
    "scanning your own WAN from inside the LAN goes through hairpin NAT and shows the wrong "
    "side; run exposuremon from a vantage point outside the monitored network"
)
_LOCAL_SUFFIXES = (".local", ".lan", ".home.arpa", ".internal", ".localhost")


def host_addresses() -> frozenset[IPAddress]:
    """This host's own addresses, from the kernel's tables (Linux /proc; no network traffic)."""
    found: set[IPAddress] = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
    try:
        last = None
        for line in Path("/proc/net/fib_trie").read_text().splitlines():
            text = line.strip()
            if text.startswith("|-- "):
                last = text[4:]
            elif text.endswith("host LOCAL") and last is not None:
                found.add(ipaddress.ip_address(last))
    except (OSError, ValueError):
        pass
    try:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            fields = line.split()
            if fields and len(fields[0]) == 32:
                found.add(ipaddress.IPv6Address(int(fields[0], 16)))
    except (OSError, ValueError):
        pass
    return frozenset(found)


def _address_warning(target: TargetConfig, own: frozenset[IPAddress]) -> str | None:
    ip = target.ip
    if ip is None:
        name = target.address.removesuffix(".")
        if name == "localhost" or name.endswith(_LOCAL_SUFFIXES):
            return f"{target.address} is a local name"
        if name == socket.gethostname().lower():
            return f"{target.address} is this host's own name"
        return None
    if ip in own:
        return f"{ip} is one of this host's own addresses"
    for attribute, what in (
        ("is_loopback", "a loopback"),
        ("is_link_local", "a link-local"),
        ("is_private", "a private"),
    ):
        if getattr(ip, attribute):
            return f"{ip} is {what} address"
    if not ip.is_global:
        return f"{ip} is not a globally routable address"
    return None


def _secret_warning(owner: str, env: str | None, file: Path | None) -> str | None:
    if env is not None and not os.environ.get(env, "").strip():
        return f"{owner}: environment variable {env} is not set here (the service's may differ)"
    if file is not None and not os.access(file, os.R_OK):
        return f"{owner}: {file} is not readable here (the service's user may differ)"
    return None


def _world_readable(path: Path) -> bool:
    try:
        return bool(os.stat(path).st_mode & stat.S_IROTH)
    except OSError:
        return False  # unreadable or missing: reported elsewhere (or the daemon says so)


def _exposed_secrets(config: Config, source: Path) -> list[str]:
    """Secrets readable by every local user: inline URLs in the file, and secret files.

    Group-readable is fine: install.sh installs the config 0640, root and the service's group,
    because the service reads it through that group. Readable by others is not: a webhook URL
    lets anyone post as exposuremon (and a secret file is the same secret).
    """
    warnings: list[str] = []
    if _world_readable(source):
        for i, channel in enumerate(config.notify):
            if channel.url is not None:
                warnings.append(
                    f"notify[{i}].url: the webhook URL is a secret, and {source} is readable by "
                    f"every user; chmod o-r {source} (install.sh installs it 0640), or move the "
                    "URL to url_file or url_env"
                )
    files = [(f"notify[{i}].url_file", c.url_file) for i, c in enumerate(config.notify)]
    files += [(f"notify[{i}].secret_file", c.secret_file) for i, c in enumerate(config.notify)]
    files.append(("http.token_file", config.http.token_file))
    for key, file in files:
        if file is not None and _world_readable(file):
            warnings.append(f"{key}: {file} holds a secret and is readable by every user")
    return warnings


def check_warnings(
    config: Config,
    own_addresses: Iterable[IPAddress] | None = None,
    source: Path | None = None,
) -> list[str]:
    """Problems that do not stop the daemon: inside-view targets, unavailable or exposed
    secrets (`source` is the config file, to check its mode), an exposed listener."""
    own = frozenset(own_addresses) if own_addresses is not None else host_addresses()
    warnings: list[str] = []
    if source is not None:
        warnings += _exposed_secrets(config, source)
    warned: set[str] = set()  # one warning per entry: the targets of a range share theirs
    for i, target in enumerate(config.targets):
        origin = target.origin or f"targets[{i}]"
        reason = None if origin in warned else _address_warning(target, own)
        if reason is not None:
            warned.add(origin)
            block = "" if target.from_range is None else f"range {target.from_range}: "
            warnings.append(f"{entry_key(origin, 'address')}: {block}{reason}; {_HAIRPIN}")
    for i, channel in enumerate(config.notify):
        for key, env, file in (
            ("url", channel.url_env, channel.url_file),
            ("secret", channel.secret_env, channel.secret_file),
        ):
            suffix = "_env" if env is not None else "_file"
            problem = _secret_warning(f"notify[{i}].{key}{suffix}", env, file)
            if problem is not None:
                warnings.append(problem)
    problem = _secret_warning("http.token_file", None, config.http.token_file)
    if problem is not None:
        warnings.append(problem)
    host = config.http.host
    if host != "localhost" and not _is_loopback(host):
        warnings.append(
            f"http.listen: {config.http.listen} is reachable from other hosts; the status page "
            "and API show which ports are open on your routers, so restrict access to it"
        )
    if host in ("0.0.0.0", "::") and not config.http.allowed_hosts:
        warnings.append(
            f"http.allowed_hosts: empty with the wildcard listen {config.http.listen}: only "
            "requests to an IP address of this host (or localhost) are served; add the names "
            'clients use (docs/api.md "Host names")'
        )
    return warnings


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False
