r"""Rendering a `Message` into the HTTP request body of each chat format (pure: no I/O, no clock).

`render(channel_type, message)` returns a `Request`: compact UTF-8 JSON and its headers. Every
format sends `Content-Type: application/json` and, when `message.delivery_id` is set,
`X-Exposuremon-Delivery: <delivery_id>` (stable across retries; receivers dedup on it).

What each format does with text that did not come from exposuremon (target names, addresses,
banners, HTTP titles and Server headers, TLS subjects; all first pass `text.clean`: no control
or bidi/zero-width characters, one line, capped; `defang` puts a zero-width space after every
`@`, between `](` and between `{{`):

| format     | body                                | untrusted text                            |
|------------|-------------------------------------|-------------------------------------------|
| slack      | `text` (complete) + mrkdwn `blocks` | defang; `& < >` -> entities; backtick ->  |
|            | (`verbatim`, no unfurling)          | `'`; service text in code spans           |
| discord    | `content` + 1 embed;                | defang; `\` before `\ * _ ~ | < > [ ] ( ) #` |
|            | `allowed_mentions: {parse: []}`     | and backtick, and a leading `-`/`+`;      |
|            |                                     | code spans: backtick -> `'`, `<` + ZWSP   |
| msteams    | Adaptive Card 1.4 of RichTextBlocks | defang; TextRuns (never parsed as         |
|            | (no mention entities)               | markdown); service text in Monospace      |
| googlechat | `text`                              | as slack (entities, code spans)           |
| ntfy       | JSON publish, markdown off          | cleaned only (plain text)                 |
| webhook    | the architecture doc's contract     | cleaned only (data; receivers escape)     |

Slack's body is also what Mattermost and Rocket.Chat incoming webhooks take (they read `text`).
ntfy: delivery POSTs the body to the server's root URL (`split_ntfy_url`), the topic is in the
body. Size limits of each service are kept by showing fewer lines per section ("… and N more"),
then by leaving the details out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

from exposuremon.model import Event, EventType
from exposuremon.notify.message import Message, Request
from exposuremon.notify.text import (
    DETAIL_LIMIT,
    ZWSP,
    Item,
    Span,
    Style,
    Tone,
    clean,
    defang,
    fit,
)
from exposuremon.notify.wording import Digest, digest
from exposuremon.units import rfc3339

CHANNEL_TYPES: tuple[str, ...] = ("slack", "discord", "msteams", "googlechat", "ntfy", "webhook")
DELIVERY_HEADER = "X-Exposuremon-Delivery"
SIGNATURE_HEADER = "X-Exposuremon-Signature"

# Service limits (characters unless named bytes).
SLACK_TEXT = 40_000
SLACK_BLOCK_TEXT = 3_000
SLACK_BLOCKS = 50
DISCORD_CONTENT = 2_000
DISCORD_TITLE = 256
DISCORD_DESCRIPTION = 4_096
DISCORD_FIELDS = 25
DISCORD_FIELD_NAME = 256
DISCORD_FIELD_VALUE = 1_024
DISCORD_FOOTER = 2_048
DISCORD_TOTAL = 6_000
TEAMS_BYTES = 28_000
GOOGLECHAT_TEXT = 4_096
NTFY_MESSAGE_BYTES = 4_096
NTFY_TITLE = 250

_NTFY_TOPIC = re.compile(r"^[-_A-Za-z0-9]{1,64}$")
_DISCORD_SPECIAL = re.compile(r"([\\*_~`|<>\[\]()])")
_DISCORD_COLOUR = {
    Tone.CRITICAL: 0xD92D20,
    Tone.WARNING: 0xF79009,
    Tone.INFO: 0x2E90FA,
    Tone.GOOD: 0x12B76A,
    Tone.TEST: 0x98A2B3,
}
_TEAMS_COLOUR = {
    Tone.CRITICAL: "Attention",
    Tone.WARNING: "Warning",
    Tone.INFO: "Accent",
    Tone.GOOD: "Good",
    Tone.TEST: "Default",
}
_NTFY = {  # priority, tag (ntfy shows tags that name an emoji as the emoji)
    Tone.CRITICAL: (5, "rotating_light"),
    Tone.WARNING: (4, "warning"),
    Tone.INFO: (3, "information_source"),
    Tone.GOOD: (3, "white_check_mark"),
    Tone.TEST: (3, "test_tube"),
}
_LEFT_OUT = "Details left out: too long for this channel."

T = TypeVar("T")


def render(
    channel_type: str,
    message: Message,
    *,
    secret: str | None = None,
    topic: str | None = None,
) -> Request:
    """The request for one channel; `secret` signs webhook bodies, `topic` is ntfy's topic."""
    if channel_type not in CHANNEL_TYPES:
        raise ValueError(
            f"unknown channel type {channel_type!r} (use one of {', '.join(CHANNEL_TYPES)})"
        )
    headers = {"Content-Type": "application/json"}
    if message.delivery_id:
        headers[DELIVERY_HEADER] = _header_value(message.delivery_id)
    if channel_type == "webhook":
        body = _encode(webhook_body(message))
        if secret is not None:
            headers[SIGNATURE_HEADER] = sign(body, secret)
        return Request(body=body, headers=headers)
    if channel_type == "ntfy":
        if topic is None or not _NTFY_TOPIC.match(topic):
            raise ValueError("ntfy: topic must be 1-64 characters of A-Z a-z 0-9 - _")
        return Request(body=_encode(_ntfy(digest(message), topic)), headers=headers)
    build = {"slack": _slack, "discord": _discord, "msteams": _teams, "googlechat": _googlechat}
    return Request(body=_encode(build[channel_type](digest(message))), headers=headers)


def sign(body: bytes, secret: str) -> str:
    """`sha256=<hex HMAC-SHA256 of body>`, the value of `X-Exposuremon-Signature`."""
    if not secret:
        raise ValueError("webhook secret is empty")
    # os.environ decodes undecodable bytes as lone surrogates: sign with the original bytes.
    key = secret.encode("utf-8", "surrogateescape")
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def split_ntfy_url(url: str) -> tuple[str, str]:
    """`https://ntfy.sh/alerts` -> (`https://ntfy.sh/`, `alerts`): where to POST, which topic."""
    parts = urlsplit(url)
    path, _, topic = parts.path.rstrip("/").rpartition("/")
    if not _NTFY_TOPIC.match(topic):
        # The URL is a secret (anyone with the topic can read it): never put it in an error.
        raise ValueError("ntfy URL must end in a topic name (1-64 of A-Z a-z 0-9 - _)")
    return urlunsplit((parts.scheme, parts.netloc, path + "/", parts.query, "")), topic


def dedup_key(target: str, event: Event) -> str:
    """Stable per-event key of the webhook body (see `webhook_body`)."""
    name = clean(target, None)
    if event.port is not None and event.finding_id is not None:
        key = f"{name}/tcp/{event.port}/{event.finding_id}"
        if event.type in (EventType.FINDING_OPENED, EventType.FINDING_REOPENED):
            return key
        return f"{key}/{event.type.value}"
    ref = event.id if event.id is not None else rfc3339(event.observed_at)
    return f"{name}/{event.type.value}/{ref}"


def webhook_body(message: Message) -> dict[str, Any]:
    """docs/architecture.md's generic webhook body (a contract), plus `kind` and `delivery_id`.

    Per event `dedup_key` is `{target}/tcp/{port}/{finding_id}` for finding_opened and
    finding_reopened, `{target}/tcp/{port}/{finding_id}/{type}` for other events of a finding,
    and `{target}/{type}/{event id}` otherwise. `protocol` is null for events without a port.
    """
    return {
        "version": 1,
        "source": "exposuremon",
        "target": clean(message.target, None),
        "address": None if message.address is None else clean(message.address, None),
        "events": [
            {
                "id": e.id,
                "type": e.type.value,
                "severity": e.severity.label,
                "port": e.port,
                "protocol": "tcp" if e.port is not None else None,
                "observed_at": rfc3339(e.observed_at),
                "summary": clean(e.summary, None),
                "finding_id": e.finding_id,
                "dedup_key": dedup_key(message.target, e),
            }
            for e in message.events
        ],
        "kind": message.kind.value,
        "delivery_id": clean(message.delivery_id, None) or None,
    }


# ------------------------------------------------------------------------------- markup


class _Markup:
    """A chat format's inline markup: how plain, strong and code spans are written."""

    def __init__(
        self,
        text: Callable[[str], str],
        code: Callable[[str], str],
        strong: Callable[[str], str],
    ) -> None:
        self.text, self.code, self.strong = text, code, strong

    def item(self, item: Item) -> str:
        return "".join(self.span(s) for s in item.spans)

    def span(self, span: Span) -> str:
        if span.style is Style.CODE:
            return self.code(span.text)
        if span.style is Style.STRONG:
            return self.strong(self.text(span.text))
        return self.text(span.text)

    def lines(self, items: Sequence[Item], bullet: str = "• ") -> str:
        """Items, one per line; `_fitted` keeps them within limits by showing fewer."""
        return "\n".join(bullet + self.item(i) for i in items)


def _entities(text: str) -> str:
    return defang(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _entity_text(text: str) -> str:
    return _entities(text).replace("`", "'")


def _entity_code(text: str) -> str:
    return f"`{_entity_text(text)}`"


def _discord_text(text: str) -> str:
    escaped = _DISCORD_SPECIAL.sub(r"\\\1", defang(text))
    return "\\" + escaped if escaped[:1] in ("-", "+", "#") else escaped  # lists, headers


def _discord_code(text: str) -> str:
    return "`" + defang(text).replace("`", "'").replace("<", "<" + ZWSP) + "`"


_SLACK = _Markup(_entity_text, _entity_code, lambda s: f"*{s}*")  # also Google Chat's
_DISCORD = _Markup(_discord_text, _discord_code, lambda s: f"**{s}**")
_PLAIN = _Markup(lambda s: s, lambda s: s, lambda s: s)


def _link_url(url: str) -> str:
    """A URL for `<url|text>` links: nothing in it may end the token."""
    url = clean(url, None).replace(" ", "%20")
    return url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")


# ------------------------------------------------------------------------------- formats


def _fitted(d: Digest, build: Callable[[Digest], T], fits: Callable[[T], bool]) -> T:
    """The richest rendering within the service's limits: fewer lines first, then none."""
    for cap in (DETAIL_LIMIT, 3, 1, 0):
        out = build(d.capped(cap))
        if fits(out):
            return out
    return build(dataclasses.replace(d, sections=(), intro=(Item((Span(_LEFT_OUT),)),)))


def _mrkdwn_parts(d: Digest, title_limit: int) -> tuple[str, list[str], str]:
    """Head, sections and footer in Slack's inline markup (Google Chat reads the same)."""
    m = _SLACK
    head = "\n".join(
        [f"{d.tone.emoji} *{fit(d.title, m.text, title_limit)}*", *(m.item(i) for i in d.intro)]
    )
    sections = [f"*{m.text(s.heading)}*\n" + m.lines(s.items) for s in d.sections]
    footer = m.text(d.footer)
    if d.link:
        footer += f" · <{_link_url(d.link)}|status page>"
    return head, sections, footer


def _slack(d: Digest) -> dict[str, Any]:
    def build(d: Digest) -> dict[str, Any]:
        head, sections, footer = _mrkdwn_parts(d, 2_000)
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": t, "verbatim": True}}
            for t in [head, *sections]
        ]
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": footer, "verbatim": True}]}
        )
        text = "\n\n".join([head, *sections, footer])
        return {"text": text, "blocks": blocks, "unfurl_links": False, "unfurl_media": False}

    def fits(body: dict[str, Any]) -> bool:
        texts = [b["text"]["text"] for b in body["blocks"] if "text" in b]
        return (
            len(body["text"]) <= SLACK_TEXT
            and len(body["blocks"]) <= SLACK_BLOCKS
            and all(len(t) <= SLACK_BLOCK_TEXT for t in texts)
        )

    return _fitted(d, build, fits)


def _discord(d: Digest) -> dict[str, Any]:
    def build(d: Digest) -> dict[str, Any]:
        m = _DISCORD
        fields = [
            {
                "name": fit(s.heading, m.text, DISCORD_FIELD_NAME),
                "value": m.lines(s.items),
                "inline": False,
            }
            for s in d.sections[:DISCORD_FIELDS]
        ]
        embed: dict[str, Any] = {
            "title": fit(d.label, m.text, DISCORD_TITLE),
            "color": _DISCORD_COLOUR[d.tone],
            "fields": fields,
            "footer": {"text": fit(d.footer, defang, DISCORD_FOOTER)},
        }
        if d.intro:
            embed["description"] = m.lines(d.intro, bullet="")
        if d.link:
            embed["url"] = d.link
        if d.when:
            embed["timestamp"] = rfc3339(d.when)
        content = f"{d.tone.emoji} " + m.strong(fit(d.title, m.text, DISCORD_CONTENT - 20))
        return {"content": content, "embeds": [embed], "allowed_mentions": {"parse": []}}

    def fits(body: dict[str, Any]) -> bool:
        embed = body["embeds"][0]
        return (
            discord_size(embed) <= DISCORD_TOTAL
            and len(embed.get("description", "")) <= DISCORD_DESCRIPTION
            and all(len(f["value"]) <= DISCORD_FIELD_VALUE for f in embed["fields"])
        )

    return _fitted(d, build, fits)


def discord_size(embed: dict[str, Any]) -> int:
    """Characters Discord counts against its 6000 per message: all text of the embed."""
    fields = embed.get("fields", [])
    return (
        len(embed.get("title", ""))
        + len(embed.get("description", ""))
        + len(embed.get("footer", {}).get("text", ""))
        + sum(len(f["name"]) + len(f["value"]) for f in fields)
    )


def _teams(d: Digest) -> dict[str, Any]:
    def run(text: str, **style: Any) -> dict[str, Any]:
        return {"type": "TextRun", "text": defang(text), **style}

    def block(inlines: list[dict[str, Any]], **props: Any) -> dict[str, Any]:
        return {"type": "RichTextBlock", "inlines": inlines, **props}

    def spans(item: Item) -> list[dict[str, Any]]:
        style = {Style.CODE: {"fontType": "Monospace"}, Style.STRONG: {"weight": "Bolder"}}
        return [run(s.text, **style.get(s.style, {})) for s in item.spans]

    def build(d: Digest) -> dict[str, Any]:
        colour = _TEAMS_COLOUR[d.tone]
        title = run(f"{d.tone.emoji} {d.title}", weight="Bolder", size="Medium", color=colour)
        body = [block([title]), *(block(spans(i)) for i in d.intro)]
        for s in d.sections:
            body.append(block([run(s.heading, weight="Bolder")], separator=True))
            body += [block([run("• "), *spans(i)], spacing="None") for i in s.items]
        body.append(block([run(d.footer, isSubtle=True, size="Small")], spacing="Medium"))
        card: dict[str, Any] = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "fallbackText": defang(d.title),
            "body": body,
            "msteams": {"width": "Full"},
        }
        if d.link:
            card["actions"] = [{"type": "Action.OpenUrl", "title": "Status page", "url": d.link}]
        attachment = {
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": None,
            "content": card,
        }
        return {"type": "message", "attachments": [attachment]}

    return _fitted(d, build, lambda body: len(_encode(body)) <= TEAMS_BYTES)


def _googlechat(d: Digest) -> dict[str, Any]:
    def build(d: Digest) -> dict[str, Any]:
        # Slack's inline escaping too: entities, *bold*, `code`.
        head, sections, footer = _mrkdwn_parts(d, 1_500)
        return {"text": "\n\n".join([head, *sections, footer])}

    return _fitted(d, build, lambda body: len(body["text"]) <= GOOGLECHAT_TEXT)


def _ntfy(d: Digest, topic: str) -> dict[str, Any]:
    priority, tag = _NTFY[d.tone]

    def build(d: Digest) -> dict[str, Any]:
        m = _PLAIN
        parts = [m.lines(d.intro, bullet="")] if d.intro else []
        parts += [f"{s.heading}\n" + m.lines(s.items) for s in d.sections]
        parts.append(d.footer)
        body: dict[str, Any] = {
            "topic": topic,
            "title": fit(d.title, str, NTFY_TITLE),
            "message": "\n\n".join(parts),
            "priority": priority,
            "tags": [tag],
        }
        if d.link:
            body["click"] = d.link
        return body

    def fits(body: dict[str, Any]) -> bool:
        return len(body["message"].encode()) <= NTFY_MESSAGE_BYTES

    return _fitted(d, build, fits)


def _encode(body: dict[str, Any]) -> bytes:
    # `clean` removed lone surrogates already; `replace` keeps even a missed one from raising.
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "replace")


def _header_value(value: str) -> str:
    """Printable ASCII only: a header cannot be split or smuggled through `delivery_id`."""
    return "".join(c if " " < c < "\x7f" else quote(c) for c in clean(value, 200))
