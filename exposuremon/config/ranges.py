"""Address ranges in `[[targets]]` and targets files: a CIDR block is one target per address.

An ISP's business customers come in blocks (`203.0.113.8/29`); a range expands to targets
named `NAME-ADDRESS` (IPv6 colons become `-`: `lab-2001-db8--1`) that share the entry's policy.
The limits keep a typo (`/16` for `/26`) from becoming 65536 targets: at most 4096 addresses,
an IPv4 `/20` or an IPv6 `/116`. Every address of the block is a target, the network and
broadcast addresses too: they never answer, so they stay `unknown` and page nobody.
Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

MAX_RANGE_ADDRESSES = 4096
MIN_PREFIX = {4: 20, 6: 116}  # the largest block of each family: 2**12 addresses
NAME_MAX = 64  # config/fields.py's name rule: 1-64 characters of A-Z a-z 0-9 . _ -

_CIDR = re.compile(r"[0-9A-Fa-f:.]+/[0-9]+")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_range(address: str) -> bool:
    """Whether an address as written is meant as a CIDR range (`203.0.113.8/29`), not a URL
    or some other text with a slash (those are refused as addresses)."""
    return _CIDR.fullmatch(address.strip()) is not None


def parse_range(text: str) -> IPNetwork:
    """A CIDR block within the limits; ValueError says what is wrong and names the limit."""
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"not an address range: {text!r} (write it as 203.0.113.8/29)") from None
    if ipaddress.ip_interface(text).ip != network.network_address:
        raise ValueError(
            f"{text!r} has host bits set: the range is {network} (write that, or one address)"
        )
    smallest = MIN_PREFIX[network.version]
    if network.prefixlen < smallest:
        raise ValueError(
            f"range {network} has {network.num_addresses} addresses; at most "
            f"{MAX_RANGE_ADDRESSES} (IPv4 /{MIN_PREFIX[4]}, IPv6 /{MIN_PREFIX[6]})"
        )
    return network


def address_label(address: str) -> str:
    """An address as it appears in a target name: IPv6 colons become `-` (names allow no `:`)."""
    return address.replace(":", "-")


def member_name(name: str, address: str) -> str:
    """The name of one address's target: `NAME-ADDRESS`."""
    return f"{name}-{address_label(address)}"


def members(network: IPNetwork) -> Iterator[str]:
    """Every address of the block, in order, as canonical text."""
    for address in network:
        yield str(address)


def check_names(name: str, network: IPNetwork) -> None:
    """ValueError when the longest `NAME-ADDRESS` of the block breaks the 64-character rule."""
    longest = max(len(a) for a in members(network))  # compressed IPv6 text varies in length
    room = NAME_MAX - 1 - longest
    if len(name) > room:
        raise ValueError(
            f"name {name!r} is too long for range {network}: its targets are named "
            f"{name}-ADDRESS, at most {NAME_MAX} characters, so the name may have {room}"
        )
