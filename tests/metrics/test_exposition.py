"""The fast exposition of state families parses, in both formats, as prometheus-client reads it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from exposuremon.metrics.exposition import Family, escape, number, render

label_values = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=0, max_size=40
)
values = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e18, max_value=1e18),
)


@given(st.lists(st.tuples(label_values, values), min_size=1, max_size=20, unique_by=lambda x: x[0]))
def test_any_label_value_round_trips(samples: list[tuple[str, float]]) -> None:
    """Label values with quotes, backslashes and newlines parse back to themselves."""
    family = Family("x_thing", "gauge", "help with \\ and\nnewline", ("target",))
    for label, value in samples:
        family.add((escape(label),), value)
    for openmetrics in (False, True):
        text = render([family], openmetrics=openmetrics)
        parse = openmetrics_families if openmetrics else text_string_to_metric_families
        parsed = list(parse(text + ("# EOF\n" if openmetrics else "")))
        assert len(parsed) == 1
        got = [(s.labels["target"], s.value) for s in parsed[0].samples]
        assert got == [(label, float(number(value))) for label, value in samples]
        assert parsed[0].documentation == "help with \\ and\nnewline"


def test_counters_are_named_per_format() -> None:
    """A counter family is `x_total` in the text format and `x` in OpenMetrics; samples `_total`."""
    family = Family("x_reopened", "counter", "Reopens.", ("target",))
    family.add(("gw",), 3)
    text = render([family], openmetrics=False)
    assert "# TYPE x_reopened_total counter\n" in text
    om = render([family], openmetrics=True)
    assert "# TYPE x_reopened counter\n" in om
    assert 'x_reopened_total{target="gw"} 3\n' in text
    assert 'x_reopened_total{target="gw"} 3\n' in om
    [parsed] = openmetrics_families(om + "# EOF\n")  # type: ignore[no-untyped-call]
    assert parsed.type == "counter"
    assert parsed.samples[0].value == 3


def test_numbers_print_like_prometheus_expects() -> None:
    """Integers print without a fraction, other floats exactly (repr round-trips)."""
    assert number(1) == "1"
    assert number(2.0) == "2"
    assert number(1764146058.123456) == "1764146058.123456"
    assert float(number(0.1)) == 0.1


def test_a_family_without_labels() -> None:
    """A family without labels prints bare sample lines."""
    family = Family("x_pending", "gauge", "Pending.", ())
    family.add((), 7)
    assert render([family], openmetrics=False).endswith("\nx_pending 7\n")
