"""Cut "the scanner's uplink" with an nftables table of our own in the root namespace.

`cut_uplink(addresses)` drops every packet this host sends to those addresses (a connect()
then fails at once, no SYN-ACK and no RST: the scan sees silence) until the context ends,
when the table is deleted. Only addresses of namespaces a test made (198.18.0.0/15) or
loopback addresses (127.0.0.0/8) are accepted: nothing else is ever filtered.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import subprocess
from collections.abc import Iterable, Iterator

_ALLOWED = (ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("127.0.0.0/8"))


def _nft(script: str) -> None:
    subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True, timeout=30)


@contextlib.contextmanager
def cut_uplink(destinations: Iterable[str], tag: str = "uplink") -> Iterator[str]:
    """Drop output to `destinations` (addresses or networks) while inside; yields the table."""
    nets = [ipaddress.ip_network(d, strict=False) for d in destinations]
    if not nets:
        raise ValueError("no destinations to cut")
    for net in nets:
        if not any(net.subnet_of(allowed) for allowed in _ALLOWED):  # type: ignore[arg-type]
            raise ValueError(f"{net}: not a test-bed or loopback network")
    table = f"emtest_{tag}_{os.getpid()}"
    elements = ", ".join(str(n) for n in nets)
    _nft(
        f"table ip {table} {{\n"
        "  chain out {\n"
        "    type filter hook output priority 0; policy accept;\n"
        f"    ip daddr {{ {elements} }} drop\n"
        "  }\n"
        "}\n"
    )
    try:
        yield table
    finally:
        subprocess.run(["nft", "delete", "table", "ip", table], check=False, timeout=30)
