"""Port specs: parsing, formatting and probe ordering (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exposuremon.scan.ports import (
    HOT_PORTS,
    MOST_COMMON,
    TOP1000_PORTS,
    PortSpecError,
    format_ports,
    parse_ports,
    probe_order,
)

ports_st = st.integers(min_value=1, max_value=65535)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("80,443", (80, 443)),
        ("80-89", tuple(range(80, 90))),
        (" 443 , 80 ", (80, 443)),
        ("22,20-23", (20, 21, 22, 23)),
        ("1-65535", tuple(range(1, 65536))),
        (8080, (8080,)),
        ([443, "8080-8082"], (443, 8080, 8081, 8082)),
    ],
)
def test_parse_examples(spec: str | int | list[str | int], expected: tuple[int, ...]) -> None:
    """Ports, ranges and lists parse to the sorted set of ports they name."""
    assert parse_ports(spec) == expected


def test_named_sets() -> None:
    """`hot` covers the incident's ranges and admin ports; `top1000` is nmap's 1000 ports."""
    hot = set(parse_ports("hot"))
    assert set(range(80, 90)) <= hot
    assert set(range(440, 450)) <= hot
    assert {21, 22, 23, 445, 3389, 8443} <= hot
    assert set(range(8080, 8091)) <= hot
    assert len(parse_ports("top1000")) == 1000
    assert {22, 80, 443, 3389} <= TOP1000_PORTS
    assert set(parse_ports("hot,top1000")) == HOT_PORTS | TOP1000_PORTS
    assert parse_ports("HOT") == parse_ports("hot")


@pytest.mark.parametrize(
    ("spec", "token"),
    [
        ("70000", "70000"),
        ("80,0", "0"),
        ("80-", "80-"),
        ("abc", "abc"),
        ("90-80", "90-80"),
        ("443,top100", "top100"),
        ("1-2-3", "1-2-3"),
        ("-5", "-5"),
    ],
)
def test_bad_token_is_named(spec: str, token: str) -> None:
    """A bad spec raises an error that quotes the offending token."""
    with pytest.raises(PortSpecError) as err:
        parse_ports(spec)
    assert repr(token) in str(err.value)


@pytest.mark.parametrize("spec", ["", " ", "80,,81", "80,"])
def test_empty_tokens_rejected(spec: str) -> None:
    """Empty specs and empty tokens between commas are errors, not silently ignored."""
    with pytest.raises(PortSpecError):
        parse_ports(spec)


@pytest.mark.parametrize("item", [True, 3.5, None, 0, 65536])
def test_bad_list_items(item: object) -> None:
    """List items that are not ports or spec strings are rejected."""
    with pytest.raises(PortSpecError):
        parse_ports([item])  # type: ignore[list-item]


@given(st.sets(ports_st, min_size=1, max_size=300))
def test_format_parse_roundtrip(ports: set[int]) -> None:
    """Formatting a set of ports and parsing it back gives the same set."""
    assert parse_ports(format_ports(ports)) == tuple(sorted(ports))


@given(st.lists(st.tuples(ports_st, ports_st), min_size=1, max_size=10))
def test_ranges_union(pairs: list[tuple[int, int]]) -> None:
    """A comma list of ranges parses to the union of the ranges."""
    ranges = [(min(a, b), max(a, b)) for a, b in pairs]
    spec = ",".join(f"{lo}-{hi}" for lo, hi in ranges)
    expected: set[int] = set()
    for lo, hi in ranges:
        expected.update(range(lo, hi + 1))
    assert set(parse_ports(spec)) == expected


@given(
    st.sets(ports_st, min_size=0, max_size=2000),
    st.lists(ports_st, max_size=10),
    st.integers(min_value=0, max_value=2**32),
)
def test_probe_order_is_a_permutation_with_hints_first(
    ports: set[int], hints: list[int], seed: int
) -> None:
    """Probe order visits every port once: hints, the most common ports, then common ports."""
    order = probe_order(ports, hints, seed)
    assert sorted(order) == sorted(ports)
    hinted = [p for p in dict.fromkeys(hints) if p in ports]
    assert order[: len(hinted)] == hinted
    most = [p for p in MOST_COMMON if p in ports and p not in hinted]
    assert order[len(hinted) : len(hinted) + len(most)] == most
    rest = order[len(hinted) + len(most) :]
    common = [p in TOP1000_PORTS for p in rest]
    assert common == sorted(common, reverse=True)


@pytest.mark.parametrize("spec", ["²", "٨٠", "80-٨٩", "８０", "1²", "⁸⁰"])
def test_only_ascii_digits_are_ports(spec: str) -> None:
    """Superscripts, Arabic-Indic and full-width digits are refused as port numbers."""
    with pytest.raises(PortSpecError) as err:
        parse_ports(spec)
    assert "is not a port number" in str(err.value)


@given(st.text(max_size=20))
def test_any_text_parses_or_raises_port_spec_error(spec: str) -> None:
    """Any string either parses (and is then plain ASCII) or raises PortSpecError, nothing else."""
    try:
        ports = parse_ports(spec)
    except PortSpecError:
        return
    assert spec.isascii()
    assert all(1 <= p <= 65535 for p in ports)


@given(st.text(alphabet=st.characters(categories=["Nd", "No"]), min_size=1, max_size=5))
def test_unicode_digits_are_refused_unless_ascii(digits: str) -> None:
    """A run of Unicode digits is a port only when every digit is ASCII 0-9."""
    try:
        ports = parse_ports(digits)
    except PortSpecError:
        assert not digits.isascii() or not 1 <= int(digits) <= 65535
        return
    assert digits.isascii()
    assert ports == (int(digits),)
