"""The ack rules `exposuremon ack` and the API share: reason text and the expiry cap (pure)."""

from __future__ import annotations

import datetime as dt
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exposuremon import acks

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


@given(st.characters(categories=["Cf", "Cc", "Zl", "Zp"], exclude_characters="\t\n"))
def test_control_and_format_characters_are_refused(char: str) -> None:
    """Any control, format (bidi, zero-width) or line-separator character makes the reason bad."""
    with pytest.raises(ValueError, match=f"U\\+{ord(char):04X}"):
        acks.check_reason(f"vendor {char} port")


@given(st.text(alphabet=st.characters(categories=["L", "M", "N", "P", "S", "Zs"]), min_size=1))
def test_plain_text_is_kept_stripped(text: str) -> None:
    """Letters, marks, digits, punctuation, symbols and spaces pass, stripped, up to the limit."""
    if not text.strip() or len(text) > acks.MAX_REASON:
        with pytest.raises(ValueError, match=r"empty|longer"):
            acks.check_reason(text)
        return
    assert acks.check_reason(text) == text.strip()
    assert all(unicodedata.category(c) not in ("Cc", "Cf") for c in acks.check_reason(text))


def test_tab_newline_and_the_length_limit() -> None:
    """Tabs and newlines are allowed; 1000 characters are, 1001 are not."""
    assert acks.check_reason("line one\n\tline two") == "line one\n\tline two"
    assert acks.check_reason("x" * acks.MAX_REASON) == "x" * 1000
    with pytest.raises(ValueError, match="longer than 1000"):
        acks.check_reason("x" * 1001)


@given(st.integers(min_value=1, max_value=3 * 365 * 86400))
def test_expiry_is_capped_at_a_year(seconds: int) -> None:
    """A duration up to 365 days is accepted as is; a longer one is refused, never clamped."""
    if seconds <= 365 * 86400:
        assert acks.parse_until(f"{seconds}s", NOW) == NOW + dt.timedelta(seconds=seconds)
    else:
        with pytest.raises(ValueError, match="at most 365 days"):
            acks.parse_until(f"{seconds}s", NOW)


def test_a_date_in_year_9999_is_refused() -> None:
    """The 'permanent silence' date of the issue is more than a year ahead."""
    with pytest.raises(ValueError, match="at most 365 days"):
        acks.parse_until("9999-12-31", NOW)
