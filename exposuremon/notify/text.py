"""Shared pieces of notification text: cleaning untrusted text, escaping helpers, spans.

All text that did not come from exposuremon (target names, addresses, summaries, banners, HTTP
titles, TLS subjects, event details) passes `clean()` first: control and format characters
(bidi overrides, zero-width characters) and invalid unicode are removed, whitespace collapses
to one line, and the length is capped. Each chat format's escaper (`notify/formats.py`) then
adds what that format needs; `defang()` is the part they share.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
import unicodedata
from collections.abc import Callable, Iterable
from urllib.parse import quote

from exposuremon.scan import format_ports

SNIPPET_LIMIT = 200  # banners, titles, subjects, details
NAME_LIMIT = 100  # target names and addresses (config allows 64)
SUMMARY_LIMIT = 300
DETAIL_LIMIT = 5  # items per section before "… and N more"
PORTS_LIMIT = 120  # characters of a compact port list
_BRACES = re.compile(r"\{(?=\{)")
ZWSP = "\u200b"  # breaks a token (a mention, a link) without a visible change
ELLIPSIS = "…"


def clean(text: object, limit: int | None = SNIPPET_LIMIT) -> str:
    """One printable line: control/format characters and invalid unicode removed, capped."""
    raw = str(text)
    if limit is not None and len(raw) > 2 * limit + 64:
        head = _printable(raw[: 2 * limit + 64])  # a 10 kB banner: look at what can be shown
        if len(head) > limit:
            return truncate(head, limit)
    return truncate(_printable(raw), limit)


def _printable(raw: str) -> str:
    if raw.isascii() and raw.isprintable():
        return " ".join(raw.split())
    kept: list[str] = []
    for ch in raw:
        category = unicodedata.category(ch)
        if category in ("Zl", "Zp") or ch in "\t\n\r\v\f\x1c\x1d\x1e\x1f\x85":
            kept.append(" ")
        elif category[0] != "C":  # Cc, Cf (bidi, zero-width), Cs (lone surrogates), Co, Cn
            kept.append(ch)
    return " ".join("".join(kept).split())


def truncate(text: str, limit: int | None) -> str:
    """`text` cut to at most `limit` characters, ending in an ellipsis when cut."""
    if limit is None or len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)].rstrip() + ELLIPSIS


def defang(text: str) -> str:
    """Break mentions (`@here`), markdown links (`](`) and card functions (`{{`) invisibly."""
    return _BRACES.sub("{" + ZWSP, text.replace("@", "@" + ZWSP).replace("](", "]" + ZWSP + "("))


def fit(raw: str, escape: Callable[[str], str], limit: int) -> str:
    """`escape(raw)`, with `raw` shortened (ending in an ellipsis) until the result fits."""
    out = escape(raw)
    n = len(raw)
    while len(out) > limit and n > 0:
        n = max(0, min(n - 1, n - (len(out) - limit)))
        out = escape(truncate(raw, n) if n else "")
    return out


def ports_text(ports: Iterable[int], limit: int = PORTS_LIMIT) -> str:
    """`80-89, 440-442, 444` (cut at a comma with an ellipsis past `limit`)."""
    text = format_ports(ports).replace(",", ", ")
    if len(text) <= limit:
        return text
    cut = text.rfind(", ", 0, limit)
    return (text[:cut] + ", " if cut > 0 else "") + ELLIPSIS


def short_time(when: dt.datetime, ref: dt.datetime | None) -> str:
    """`03:12Z` on the day of `ref`, else `2026-11-20 09:12Z`."""
    when = when.astimezone(dt.UTC)
    if ref is not None and when.date() == ref.astimezone(dt.UTC).date():
        return when.strftime("%H:%MZ")
    return when.strftime("%Y-%m-%d %H:%MZ")


def status_link(public_url: str | None, target: str) -> str | None:
    """The status page anchor of a target, or None without `public_url` (never a guess)."""
    if not public_url:
        return None
    base, name = public_url.rstrip("/"), clean(target, NAME_LIMIT)
    return f"{base}/#target-{quote(name, safe='')}" if name else f"{base}/"


class Style(enum.Enum):
    """How a span is shown; formats map these to their markup."""

    PLAIN = "plain"
    STRONG = "strong"
    CODE = "code"  # untrusted service text: monospace where the format has it


class Tone(enum.Enum):
    """The message's overall colour: severity, or good news, or a test."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"
    GOOD = "good"
    TEST = "test"

    @property
    def emoji(self) -> str:
        """A leading symbol for chat formats."""
        return _EMOJI[self]


_EMOJI = {
    Tone.CRITICAL: "🚨",
    Tone.WARNING: "⚠️",
    Tone.INFO: "ℹ️",
    Tone.GOOD: "✅",
    Tone.TEST: "🧪",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Span:
    """A run of cleaned text in one style."""

    text: str
    style: Style = Style.PLAIN


@dataclasses.dataclass(frozen=True, slots=True)
class Item:
    """One line of a section, and the ports it covers (for "… and N more ports")."""

    spans: tuple[Span, ...]
    ports: frozenset[int] = frozenset()

    @property
    def plain(self) -> str:
        """The line without markup."""
        return "".join(s.text for s in self.spans)


@dataclasses.dataclass(frozen=True, slots=True)
class Section:
    """A heading (our own wording) and its items."""

    heading: str
    items: tuple[Item, ...]

    def capped(self, limit: int) -> Section:
        """At most `limit` items, the rest summed up in one "… and N more" item."""
        if len(self.items) <= limit:
            return self
        shown, hidden = self.items[:limit], self.items[limit:]
        ports = frozenset().union(*(i.ports for i in hidden))
        if all(i.ports for i in hidden):
            what = f"{len(ports)} more port{'s' if len(ports) > 1 else ''}: {ports_text(ports)}"
        else:
            what = f"{len(hidden)} more"
        text = f"{ELLIPSIS} and {what}" if shown else what
        return Section(self.heading, (*shown, Item((Span(text),), ports)))
