"""Address ranges: a CIDR target expands to one target per address, within the limits."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from exposuremon.config.checks import check_warnings
from exposuremon.config.fields import ConfigError
from exposuremon.config.models import Config, parse_config
from exposuremon.config.ranges import MAX_RANGE_ADDRESSES, member_name, parse_range

BASE = Path("/srv/exposuremon")
NAME_RULE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def target(name: str, address: str, extra: str = "") -> str:
    """One [[targets]] table."""
    return f'[[targets]]\nname = "{name}"\naddress = "{address}"\n{extra}'


def errors(text: str) -> list[str]:
    """The problems parse_config reports for `text`."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, BASE)
    return caught.value.errors


def test_a_range_is_one_target_per_address_sharing_the_policy() -> None:
    """A /29 becomes eight targets named NAME-ADDRESS, each with the entry's policy."""
    extra = 'expected_open = "443"\nignore = [22]\n[targets.schedule]\nsentinel = "1m"\n'
    config = parse_config(target("shop", "203.0.113.8/29", extra), BASE)
    assert [t.name for t in config.targets] == [f"shop-203.0.113.{i}" for i in range(8, 16)]
    assert [t.address for t in config.targets] == [f"203.0.113.{i}" for i in range(8, 16)]
    for member in config.targets:
        assert member.expected_open == frozenset({443})
        assert member.ignore == frozenset({22})
        assert member.schedule.sentinel == 60.0
        assert member.from_range == "203.0.113.8/29"
        assert member.range_name == "shop"
        assert member.origin == "targets[0]"


def test_ipv6_names_replace_colons() -> None:
    """An IPv6 range's targets are named with the colons of the address replaced by '-'."""
    config = parse_config(target("lab", "2001:db8::/126"), BASE)
    assert [t.name for t in config.targets] == [
        "lab-2001-db8--",
        "lab-2001-db8--1",
        "lab-2001-db8--2",
        "lab-2001-db8--3",
    ]
    assert config.targets[1].address == "2001:db8::1"


def test_ranges_mix_with_single_addresses() -> None:
    """Single-address targets keep their place and name; a range's targets follow in order."""
    text = target("gw", "198.51.100.1") + target("blk", "192.0.2.0/31") + target("x", "gw.example")
    names = [t.name for t in parse_config(text, BASE).targets]
    assert names == ["gw", "blk-192.0.2.0", "blk-192.0.2.1", "x"]


@pytest.mark.parametrize(
    ("address", "count"),
    [("10.0.0.0/20", 4096), ("2001:db8::/116", 4096), ("192.0.2.7/32", 1), ("::1/128", 1)],
)
def test_the_largest_ranges_allowed(address: str, count: int) -> None:
    """IPv4 up to /20 and IPv6 up to /116 (4096 addresses) are accepted."""
    assert len(parse_config(target("r", address), BASE).targets) == count


@pytest.mark.parametrize(
    ("address", "size"), [("10.0.0.0/19", 8192), ("10.0.0.0/8", 2**24), ("2001:db8::/115", 8192)]
)
def test_larger_ranges_are_errors_that_name_the_limit(address: str, size: int) -> None:
    """A block past 4096 addresses is refused with its size and the limits per family."""
    assert errors(target("r", address)) == [
        f"targets[0].address: range {address} has {size} addresses; at most "
        f"{MAX_RANGE_ADDRESSES} (IPv4 /20, IPv6 /116)"
    ]


def test_host_bits_set_is_an_error_that_shows_the_range() -> None:
    """`203.0.113.9/29` is refused, naming the block it lies in."""
    assert errors(target("r", "203.0.113.9/29")) == [
        "targets[0].address: '203.0.113.9/29' has host bits set: the range is 203.0.113.8/29 "
        "(write that, or one address)"
    ]


def test_not_a_range() -> None:
    """An address with a prefix length that is no CIDR block is refused as such."""
    assert errors(target("r", "10.0.0.0/33")) == [
        "targets[0].address: not an address range: '10.0.0.0/33' (write it as 203.0.113.8/29)"
    ]
    assert errors(target("r", "router.example/24")) == [
        "targets[0].address: not an IP address or hostname: 'router.example/24' "
        "(write it without scheme, port or path)"
    ]


def test_duplicate_names_after_expansion_name_both_entries() -> None:
    """A range making a name another target has is an error naming both entries."""
    text = target("shop-203.0.113.9", "192.0.2.1") + target("shop", "203.0.113.8/29")
    assert errors(text) == [
        "targets[1].address: range 203.0.113.8/29 makes target 'shop-203.0.113.9', a name "
        "targets[0] has already"
    ]


def test_two_ranges_making_one_name() -> None:
    """Two ranges that make one name: the error names the range that made it first."""
    text = target("a", "2001:db8::/127") + target("a-2001", "db8::1/128")
    assert errors(text) == [
        "targets[1].address: range db8::1/128 makes target 'a-2001-db8--1', a name "
        "targets[0] (2001:db8::/127) has already"
    ]


def test_a_name_too_long_for_its_range() -> None:
    """NAME-ADDRESS must stay within 64 characters: the error says how long NAME may be."""
    name = "n" * 30
    (line,) = errors(target(name, "2001:db8:1234:5678:9abc:def0:1234:5000/116"))
    assert line.startswith(f"targets[0].name: name '{name}' is too long for range ")
    assert line.endswith("at most 64 characters, so the name may have 25")


def test_channels_may_name_a_range_or_one_of_its_targets() -> None:
    """A channel's `targets` naming a range stands for all its targets; a member is itself."""
    text = (
        target("shop", "203.0.113.8/30")
        + target("gw", "192.0.2.1")
        + '[[notify]]\nname = "n"\ntype = "webhook"\nurl = "http://127.0.0.1:1/x"\n'
        + 'targets = ["shop"]\n'
        + '[[notify]]\nname = "m"\ntype = "webhook"\nurl = "http://127.0.0.1:1/x"\n'
        + 'targets = ["shop-203.0.113.9", "gw"]\n'
    )
    config = parse_config(text, BASE)
    assert config.notify[0].targets == tuple(f"shop-203.0.113.{i}" for i in range(8, 12))
    assert config.notify[1].targets == ("shop-203.0.113.9", "gw")
    bad = text.replace('"shop-203.0.113.9"', '"shop-203.0.113.99"')
    assert errors(bad) == ["notify[1].targets[0]: no target named 'shop-203.0.113.99'"]


def test_model_validate_expands_too() -> None:
    """Config.model_validate (not only the file loader) expands ranges."""
    config = Config.model_validate({"targets": [{"name": "b", "address": "192.0.2.0/31"}]})
    assert [t.address for t in config.targets] == ["192.0.2.0", "192.0.2.1"]
    with pytest.raises(ValidationError, match="has 8192 addresses"):
        Config.model_validate({"targets": [{"name": "b", "address": "10.0.0.0/19"}]})


def test_one_warning_per_range() -> None:
    """check-config warns once for a range of private addresses, not once per address."""
    config = parse_config(target("lan", "10.1.2.0/24") + target("gw", "10.9.9.9"), BASE)
    warnings = check_warnings(config, own_addresses=())
    assert [w.split(";")[0] for w in warnings] == [
        "targets[0].address: range 10.1.2.0/24: 10.1.2.0 is a private address",
        "targets[1].address: 10.9.9.9 is a private address",
    ]


@given(
    name=st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True),
    base=st.integers(min_value=0, max_value=2**32 - 1),
    prefix=st.integers(min_value=24, max_value=32),
)
def test_ipv4_expansion_names_are_valid_unique_and_reversible(
    name: str, base: int, prefix: int
) -> None:
    """Every IPv4 member name follows the name rules, is unique, and gives back its address."""
    network = ipaddress.IPv4Network((base, prefix), strict=False)
    config = Config.model_validate({"targets": [{"name": name, "address": str(network)}]})
    assert len(config.targets) == network.num_addresses
    names = [t.name for t in config.targets]
    assert len(set(names)) == len(names)
    for member in config.targets:
        assert NAME_RULE.match(member.name)
        assert member.name == member_name(name, member.address)
        assert ipaddress.ip_address(member.name.removeprefix(f"{name}-")) in network


@given(
    name=st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True),
    base=st.integers(min_value=0, max_value=2**128 - 1),
    prefix=st.integers(min_value=120, max_value=128),
)
def test_ipv6_expansion_names_are_valid_unique_and_reversible(
    name: str, base: int, prefix: int
) -> None:
    """Every IPv6 member name follows the name rules, is unique, and its '-' back to ':'
    give the address."""
    network = ipaddress.IPv6Network((base, prefix), strict=False)
    config = Config.model_validate({"targets": [{"name": name, "address": str(network)}]})
    names = [t.name for t in config.targets]
    assert len(set(names)) == len(names) == network.num_addresses
    for member in config.targets:
        assert NAME_RULE.match(member.name)
        label = member.name.removeprefix(f"{name}-")
        assert ipaddress.ip_address(label.replace("-", ":")) == ipaddress.ip_address(member.address)


@given(prefix=st.integers(min_value=0, max_value=32))
def test_the_ipv4_limit_is_exactly_4096(prefix: int) -> None:
    """parse_range accepts an IPv4 block iff it has at most 4096 addresses."""
    network = ipaddress.IPv4Network((0, prefix))
    if network.num_addresses <= MAX_RANGE_ADDRESSES:
        assert parse_range(str(network)) == network
    else:
        with pytest.raises(ValueError, match="at most 4096"):
            parse_range(str(network))
