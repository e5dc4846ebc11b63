"""Pure redaction of secrets (webhook URLs, signing secrets) from text we log or show."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit

REDACTED = "<redacted>"


def secret_parts(url: str, secret: str | None = None) -> list[str]:
    """The pieces of a webhook URL (and signing secret) that must never be shown, longest first.

    Its path with the query, the query, each query value, each path segment long enough to be
    a token, and a password. The scheme and host stay visible: they tell the operator which
    service failed (`https://hooks.slack.com<redacted>`).
    """
    parts = {secret or ""}
    split = urlsplit(url)
    parts.add(split.path + (f"?{split.query}" if split.query else ""))
    parts.add(split.query)
    if split.password:
        parts.add(split.password)
    parts.update(v for _, v in parse_qsl(split.query, keep_blank_values=True))
    parts.update(seg for seg in split.path.split("/") if len(seg) >= 4)
    return sorted((p for p in parts if len(p) >= 4 and p != "/"), key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret replaced by `<redacted>`."""
    for part in secrets:
        if part:
            text = text.replace(part, REDACTED)
    return text
