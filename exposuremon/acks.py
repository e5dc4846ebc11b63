"""Acknowledging a finding: the rules `exposuremon ack` and `POST /api/v1/findings/{id}/ack` share.

`parse_until` and `check_reason` are pure; `ack_finding` loads, checks and saves through the
store. The daemon calls it under the target's lock so that an ack never races a scan.
"""

from __future__ import annotations

import datetime as dt
import unicodedata

from exposuremon import detect
from exposuremon.model import Finding
from exposuremon.store import Store
from exposuremon.units import parse_duration

# An ack silences a finding while it stays open; one that never expires is a finding nobody
# will look at again, so an expiry is at most this far ahead (renew it to keep it).
MAX_ACK = dt.timedelta(days=365)
MAX_REASON = 1000  # characters: a sentence or two, not a document
# Unicode categories refused in a reason: control characters (terminal escapes, BEL; tab and
# newline are allowed), format characters (bidi overrides such as U+202E reorder what the
# status page and a terminal show, zero-width ones hide text), surrogates (SQLite cannot
# store a lone one) and line/paragraph separators (they break log and table lines).
_REFUSED = {
    "Cc": "control characters",
    "Cf": "invisible format characters (bidi overrides, zero-width marks)",
    "Cs": "lone surrogates",
    "Zl": "line separators",
    "Zp": "paragraph separators",
}
_ALLOWED_CONTROLS = frozenset("\t\n")


def parse_until(text: str, now: dt.datetime) -> dt.datetime:
    """An ack's expiry: an ISO date/time (UTC unless it says otherwise) or a duration (`7d`).

    ValueError with a message quoting the text when it is neither, or not in the future.
    """
    try:
        when = now + dt.timedelta(seconds=parse_duration(text))
    except ValueError:
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{text!r} is neither a date (2026-12-31, 2026-12-31T18:00) nor a duration (7d)"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
    except OverflowError:
        raise ValueError(f"{text!r} is too far in the future") from None
    try:
        # Normalised here: 9999-12-31T23:59-05:00 is valid ISO but past datetime.max in UTC.
        when = when.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError(f"{text!r} is too far in the future") from None
    # Also for a zero duration: detect.acknowledge refuses an expiry that is not in the future.
    if when <= now:
        raise ValueError(f"{text!r} is not in the future")
    if when > now + MAX_ACK:
        raise ValueError(
            f"{text!r} is more than a year ahead: an ack lasts at most 365 days (renew it then)"
        )
    return when


def check_reason(text: str) -> str:
    """The reason, stripped: ValueError when empty, longer than MAX_REASON or not plain text.

    The one rule for `exposuremon ack --reason` and the API's `reason`.
    """
    if len(text) > MAX_REASON:
        raise ValueError(f"longer than {MAX_REASON} characters ({len(text)})")
    for char in text:
        category = unicodedata.category(char)
        if category in _REFUSED and char not in _ALLOWED_CONTROLS:
            raise ValueError(
                f"must be plain text without {_REFUSED[category]}: found U+{ord(char):04X}"
            )
    reason = text.strip()
    if not reason:
        raise ValueError("must not be empty")
    return reason


async def ack_finding(
    store: Store, finding_id: int, until: dt.datetime, reason: str, now: dt.datetime
) -> Finding:
    """Acknowledge an active finding and save it; the acked finding.

    LookupError when there is no such finding, ValueError when it is resolved (or `until`
    is not after `now`).
    """
    finding = await store.finding(finding_id)
    if finding is None:
        raise LookupError(f"no finding with id {finding_id}")
    if not finding.is_active:
        raise ValueError(f"finding {finding_id} is resolved: nothing to acknowledge")
    state = await store.load_state(finding.target)
    _, acked = detect.acknowledge(state, finding.port, until, check_reason(reason), now)
    if acked.id != finding_id:  # the state's active finding on that port is another one
        raise LookupError(f"finding {finding_id} is not the active finding of its port")
    await store.save_ack(acked)
    return acked
