r"""Rendering a `Message` into the HTTP request body of each chat format (pure: no I/O, no clock).

`render_parts(channel_type, message)` returns the `Request`s (compact UTF-8 JSON and its
headers) of one message: one, except for a webhook message over 256 KB (`webhook_bodies`);
`render` is the one request of a message that needs one. Every format sends
`Content-Type: application/json` and, when `message.delivery_id` is set,
`X-Exposuremon-Delivery: <delivery_id>` (stable across retries; receivers dedup on it). The
webhook adds the Standard Webhooks headers `webhook-id` (the same delivery id),
`webhook-timestamp` (the `now` passed in: the caller's clock) and, with a secret,
`webhook-signature` next to `X-Exposuremon-Signature`.

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
| googlechat | `text`                              | defang; ZWSP after `<` (no entities: Chat |
|            |                                     | shows them raw); backtick -> `'`; service |
|            |                                     | text in code spans                        |
| ntfy       | JSON publish, markdown off          | cleaned only (plain text)                 |
| webhook    | the architecture doc's contract, in | cleaned only (data; receivers escape)     |
|            | < 256 KB; Standard Webhooks headers |                                           |

Slack's body is also what Mattermost and Rocket.Chat incoming webhooks take (they read `text`).
ntfy: delivery POSTs the body to the server's root URL (`split_ntfy_url`), the topic is in the
body. Discord: delivery POSTs to the URL with `?wait=true` (`discord_url`). Size limits of
each service are kept by showing fewer lines per section ("… and N more"), then by leaving the
details out.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
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
# Standard Webhooks (standardwebhooks.com): the id is the delivery id, stable across retries.
WEBHOOK_ID_HEADER = "webhook-id"
WEBHOOK_TIMESTAMP_HEADER = "webhook-timestamp"
WEBHOOK_SIGNATURE_HEADER = "webhook-signature"
WHSEC_PREFIX = "whsec_"

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
# Teams Workflows answer 202 before they post the card: one over the ~28 KB message limit is
# dropped silently, so the card stays well below it.
TEAMS_BYTES = 24_000
GOOGLECHAT_TEXT = 4_096
NTFY_MESSAGE_BYTES = 4_096
NTFY_TITLE = 250
# Generic webhook: each request's body stays under 256 KB (nginx refuses 1 MiB by default, and
# a 413 is a permanent error); a larger group is split into parts.
WEBHOOK_BYTES = 256_000

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
    now: dt.datetime | None = None,
) -> Request:
    """The one request of a message that fits one (see `render_parts`); else a ValueError."""
    requests = render_parts(channel_type, message, secret=secret, topic=topic, now=now)
    if len(requests) != 1:
        raise ValueError(f"{channel_type}: the message takes {len(requests)} requests")
    return requests[0]


def render_parts(
    channel_type: str,
    message: Message,
    *,
    secret: str | None = None,
    topic: str | None = None,
    now: dt.datetime | None = None,
) -> tuple[Request, ...]:
    """The requests of one message for one channel, in order (several only for webhook).

    `secret` signs webhook bodies, `topic` is ntfy's topic, `now` is the webhook's
    `webhook-timestamp` (the time of the attempt: receivers refuse old ones).
    """
    if channel_type not in CHANNEL_TYPES:
        raise ValueError(
            f"unknown channel type {channel_type!r} (use one of {', '.join(CHANNEL_TYPES)})"
        )
    headers = {"Content-Type": "application/json"}
    if message.delivery_id:
        headers[DELIVERY_HEADER] = _header_value(message.delivery_id)
    if channel_type == "webhook":
        if now is None:
            raise ValueError("webhook: the time of the attempt is needed (webhook-timestamp)")
        key = signing_key(secret) if secret is not None else None
        return tuple(_webhook_request(body, secret, key, now) for body in webhook_bodies(message))
    if channel_type == "ntfy":
        if topic is None or not _NTFY_TOPIC.match(topic):
            raise ValueError("ntfy: topic must be 1-64 characters of A-Z a-z 0-9 - _")
        return (Request(body=_encode(_ntfy(digest(message), topic)), headers=headers),)
    build = {"slack": _slack, "discord": _discord, "msteams": _teams, "googlechat": _googlechat}
    return (Request(body=_encode(build[channel_type](digest(message))), headers=headers),)


class SecretError(ValueError):
    """The signing secret cannot be used (empty, or a `whsec_` value that is not base64)."""


def sign(body: bytes, secret: str) -> str:
    """`sha256=<hex HMAC-SHA256 of body>`, the value of `X-Exposuremon-Signature`.

    The key is the secret's text as configured (also for a `whsec_` secret): what receivers
    written before the Standard Webhooks headers check.
    """
    if not secret:
        raise SecretError("webhook secret is empty")
    # os.environ decodes undecodable bytes as lone surrogates: sign with the original bytes.
    key = secret.encode("utf-8", "surrogateescape")
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def signing_key(secret: str) -> bytes:
    """The Standard Webhooks key: a `whsec_<base64>` secret's decoded bytes, else its text."""
    if not secret:
        raise SecretError("webhook secret is empty")
    if not secret.startswith(WHSEC_PREFIX):
        return secret.encode("utf-8", "surrogateescape")
    text = secret[len(WHSEC_PREFIX) :]
    try:
        # Unpadded base64 is common in such secrets: pad it, as the reference library does.
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        # Never the value in the message: it is the secret.
        raise SecretError("webhook secret starts with whsec_ but is not base64") from None
    if not key:
        raise SecretError("webhook secret is empty")
    return key


def standard_signature(key: bytes, webhook_id: str, timestamp: str, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`: the Standard Webhooks signature."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def _webhook_request(
    body: dict[str, Any], secret: str | None, key: bytes | None, now: dt.datetime
) -> Request:
    data = _encode(body)
    headers = {"Content-Type": "application/json"}
    if body["delivery_id"]:
        webhook_id = _header_value(body["delivery_id"])
        headers[DELIVERY_HEADER] = webhook_id
    else:  # no delivery id (a hand-made message): still one stable id per body
        webhook_id = "msg_" + hashlib.sha256(data).hexdigest()[:32]
    timestamp = str(math.floor(now.timestamp()))
    headers |= {WEBHOOK_ID_HEADER: webhook_id, WEBHOOK_TIMESTAMP_HEADER: timestamp}
    if secret is not None and key is not None:
        headers[SIGNATURE_HEADER] = sign(data, secret)
        headers[WEBHOOK_SIGNATURE_HEADER] = standard_signature(key, webhook_id, timestamp, data)
    return Request(body=data, headers=headers)


def discord_url(url: str) -> str:
    """The webhook URL with `wait=true`, any other query (`thread_id`) kept byte for byte.

    With `wait=true` Discord answers only after it saved the message, and an error when it did
    not (AutoMod, for example); without it a dropped message looks sent.
    """
    base, _, fragment = url.partition("#")
    path, _, query = base.partition("?")
    kept = [p for p in query.split("&") if p and p.split("=", 1)[0] != "wait"]
    out = f"{path}?{'&'.join([*kept, 'wait=true'])}"
    return f"{out}#{fragment}" if fragment else out


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
    if event.vantage is not None and event.target is None:
        ref = event.id if event.id is not None else rfc3339(event.observed_at)
        return f"vantage/{clean(event.vantage, None)}/{event.type.value}/{ref}"
    name = clean(target, None)
    if event.port is not None and event.finding_id is not None:
        key = f"{name}/tcp/{event.port}/{event.finding_id}"
        if event.type in (EventType.FINDING_OPENED, EventType.FINDING_REOPENED):
            return key
        return f"{key}/{event.type.value}"
    ref = event.id if event.id is not None else rfc3339(event.observed_at)
    return f"{name}/{event.type.value}/{ref}"


def webhook_bodies(message: Message, limit: int = WEBHOOK_BYTES) -> list[dict[str, Any]]:
    """The webhook bodies of one message: one, or parts of at most `limit` bytes each.

    Every event is in exactly one part, in order. Each part is a complete body (`webhook_body`)
    with `part` (1-based) and `parts`; when there are several, each has its own delivery id,
    `<delivery id>/part<n>of<parts>`, so receivers that deduplicate on it keep every part.
    """
    whole = webhook_body(message)
    if len(_encode(whole)) <= limit:
        return [whole]
    # The events' encoded sizes (plus a comma each), against what the rest of a part takes;
    # 64 bytes of room for the part numbers and the longer delivery id.
    room = limit - len(_encode({**whole, "events": []})) - 64
    groups: list[list[dict[str, Any]]] = [[]]
    used = 0
    for event in whole["events"]:
        size = len(_encode(event)) + 1
        if groups[-1] and used + size > room:
            groups.append([])
            used = 0
        groups[-1].append(event)
        used += size
    parts = len(groups)
    base = whole["delivery_id"]
    return [
        {
            **whole,
            "events": events,
            "delivery_id": f"{base}/part{n}of{parts}" if base else None,
            "part": n,
            "parts": parts,
        }
        for n, events in enumerate(groups, 1)
    ]


def webhook_body(message: Message) -> dict[str, Any]:
    """The generic webhook body (docs/architecture.md) plus `kind`, `delivery_id`, `part`, `parts`.

    Per event `seen_from` (only on finding events from a fleet with several vantages), and
    `dedup_key` is `{target}/tcp/{port}/{finding_id}` for finding_opened and
    finding_reopened, `{target}/tcp/{port}/{finding_id}/{type}` for other events of a finding,
    and `{target}/{type}/{event id}` otherwise (`vantage/{vantage}/{type}/{event id}` for a
    vantage's events). `protocol` is null for events without a port.
    """
    return {
        "version": 1,
        "source": "exposuremon",
        "target": None if message.vantage is not None else clean(message.target, None),
        "address": None if message.address is None else clean(message.address, None),
        # A vantage's message (vantage_degraded / vantage_recovered) names it; target is null.
        "vantage": None if message.vantage is None else clean(message.vantage, None),
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
                **_seen_from(e),
            }
            for e in message.events
        ],
        "kind": message.kind.value,
        "delivery_id": clean(message.delivery_id, None) or None,
        "part": 1,  # of `parts`: a large group is split (`webhook_bodies`)
        "parts": 1,
    }


def _seen_from(e: Event) -> dict[str, Any]:
    """`seen_from` of a finding event from a fleet with several vantages; nothing otherwise."""
    where = e.details.get("seen_from")
    if not isinstance(where, Mapping):
        return {}
    return {
        "seen_from": {
            clean(str(state), None): [clean(str(n), None) for n in names]
            for state, names in where.items()
            if isinstance(names, list | tuple)
        }
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


def _gchat_text(text: str) -> str:
    # Google Chat shows `&amp;` as typed, so no entities: a zero-width space after `<` keeps
    # `<users/all>` (and any mention or `<url|text>` link) from being a token, as for Discord.
    return defang(text).replace("<", "<" + ZWSP).replace("`", "'")


def _gchat_code(text: str) -> str:
    return f"`{_gchat_text(text)}`"


_SLACK = _Markup(_entity_text, _entity_code, lambda s: f"*{s}*")
_GCHAT = _Markup(_gchat_text, _gchat_code, lambda s: f"*{s}*")
_DISCORD = _Markup(_discord_text, _discord_code, lambda s: f"**{s}**")
_PLAIN = _Markup(lambda s: s, lambda s: s, lambda s: s)


def _link_url(url: str) -> str:
    """A URL for `<url|text>` links: nothing in it may end the token."""
    url = clean(url, None).replace(" ", "%20")
    return url.replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")


def _slack_link_url(url: str) -> str:
    """`_link_url` for Slack, which reads `&` in a link as the start of an entity."""
    return _link_url(url).replace("&", "&amp;")


# ------------------------------------------------------------------------------- formats


def _fitted(d: Digest, build: Callable[[Digest], T], fits: Callable[[T], bool]) -> T:
    """The richest rendering within the service's limits: fewer lines first, then none."""
    for cap in (DETAIL_LIMIT, 3, 1, 0):
        out = build(d.capped(cap))
        if fits(out):
            return out
    return build(dataclasses.replace(d, sections=(), intro=(Item((Span(_LEFT_OUT),)),)))


def _mrkdwn_parts(
    d: Digest, title_limit: int, m: _Markup, link_url: Callable[[str], str]
) -> tuple[str, list[str], str]:
    """Head, sections and footer in Slack's or Google Chat's inline markup (much the same)."""
    head = "\n".join(
        [f"{d.tone.emoji} *{fit(d.title, m.text, title_limit)}*", *(m.item(i) for i in d.intro)]
    )
    sections = [f"*{m.text(s.heading)}*\n" + m.lines(s.items) for s in d.sections]
    footer = m.text(d.footer)
    if d.link:
        footer += f" · <{link_url(d.link)}|status page>"
    return head, sections, footer


def _slack(d: Digest) -> dict[str, Any]:
    def build(d: Digest) -> dict[str, Any]:
        head, sections, footer = _mrkdwn_parts(d, 2_000, _SLACK, _slack_link_url)
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
        # Slack's layout (*bold*, `code`, <url|link>); no entities (see `_gchat_text`).
        head, sections, footer = _mrkdwn_parts(d, 1_500, _GCHAT, _link_url)
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
