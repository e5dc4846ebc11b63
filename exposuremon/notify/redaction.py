"""Pure redaction of secrets (webhook URLs, signing secrets) from text we log or show."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit

import yarl

REDACTED = "<redacted>"


def secret_parts(url: str, secret: str | None = None) -> list[str]:
    """The pieces of a webhook URL (and signing secret) that must never be shown, longest first.

    Its path with the query, the query, each query value, each path segment long enough to be
    a token, and a password; each in every form it can take on the way: as configured, as
    yarl (so aiohttp) rewrites it before sending (`%2F` -> `/`, `%7E` -> `~`, `%41` -> `A`,
    `%2b` -> `%2B`: what a receiver echoing its request line shows) and percent-decoded (what a
    receiver echoing its decoded path or parameters shows). The scheme and host stay visible:
    they tell the operator which service failed (`https://hooks.slack.com<redacted>`).
    """
    parts = {secret or ""}
    forms = [url]
    try:
        sent = yarl.URL(url)
    except (ValueError, TypeError):  # not a URL aiohttp could send: the configured text only
        sent = None
    if sent is not None:
        forms.append(str(sent))
        parts.add(sent.path)
        parts.update(sent.query.values())
        parts.update(seg for seg in sent.path.split("/") if len(seg) >= 4)
    for form in forms:
        parts.update(_pieces(form))
    decoded = {f(p) for p in parts for f in (unquote, unquote_plus)}
    parts |= decoded
    return sorted((p for p in parts if len(p) >= 4 and p != "/"), key=len, reverse=True)


def _pieces(url: str) -> set[str]:
    split = urlsplit(url)
    pieces = {split.path + (f"?{split.query}" if split.query else ""), split.query}
    if split.password:
        pieces.add(split.password)
    pieces.update(v for _, v in parse_qsl(split.query, keep_blank_values=True))
    pieces.update(seg for seg in split.path.split("/") if len(seg) >= 4)
    return pieces


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret replaced by `<redacted>`."""
    for part in secrets:
        if part:
            text = text.replace(part, REDACTED)
    return text
