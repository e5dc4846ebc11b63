"""One POST against real receivers on 127.0.0.1 that answer like each chat service."""

from __future__ import annotations

import datetime as dt
import email.utils
import random
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import yarl
from hypothesis import given, settings
from hypothesis import strategies as st

from exposuremon.model import Event, EventType, Severity
from exposuremon.notify import delivery
from exposuremon.notify.formats import DELIVERY_HEADER, render
from exposuremon.notify.message import Message, MessageKind
from exposuremon.notify.notifier import endpoint
from exposuremon.notify.redaction import REDACTED, redact, secret_parts
from exposuremon.notify.retry import Permanent, Retry, Sent
from tests.support.receivers import KINDS, PATHS, SECRET, Answer, Receiver

T0 = dt.datetime(2026, 11, 26, 3, 14, 7, tzinfo=dt.UTC)
SUCCESS = {
    "slack": 200,
    "discord": 200,  # posted with ?wait=true: the saved message comes back
    "msteams": 202,
    "googlechat": 200,
    "ntfy": 200,
    "webhook": 200,
}


def message(delivery_id: str = "ops/17") -> Message:
    """A reopened finding with its context, as the outbox worker builds it."""
    events = (
        Event(
            type=EventType.REBOOT_SUSPECTED,
            severity=Severity.WARNING,
            target="surgery-router",
            observed_at=T0,
            summary="reboot suspected: down, then up",
            id=41,
        ),
        Event(
            type=EventType.FINDING_REOPENED,
            severity=Severity.CRITICAL,
            target="surgery-router",
            observed_at=T0,
            summary="port 443/tcp open again (closed since 2026-11-20, reboot suspected 03:12)",
            port=443,
            finding_id=7,
            id=42,
        ),
    )
    return Message(
        target="surgery-router",
        address="198.51.100.7",
        events=events,
        kind=MessageKind.EVENTS,
        delivery_id=delivery_id,
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session like the service's."""
    async with aiohttp.ClientSession() as s:
        yield s


async def send(
    session: aiohttp.ClientSession,
    receiver: Receiver,
    *,
    url: str | None = None,
    secret: str | None = None,
    time_limit: float = 5.0,
) -> delivery.DeliveryOutcome:
    """Render the test message for the receiver's type and POST it once, as the notifier does."""
    configured = url or receiver.url
    url, topic = endpoint(receiver.kind, configured)
    request = render(
        receiver.kind, message(), secret=secret, topic=topic, now=dt.datetime.now(dt.UTC)
    )
    return await delivery.post(
        session,
        url,
        request,
        delivery_id="ops/17",
        secrets=secret_parts(configured, secret),
        time_limit=time_limit,
    )


@pytest.mark.parametrize("kind", KINDS)
async def test_each_format_is_accepted_by_its_service(
    session: aiohttp.ClientSession, kind: str
) -> None:
    """Every renderer's body passes its service's checks and the success code means sent."""
    async with Receiver(kind) as receiver:
        outcome = await send(session, receiver)
        assert outcome == Sent(SUCCESS[kind])
        (req,) = receiver.requests
        assert req.headers[DELIVERY_HEADER] == "ops/17"
        assert req.headers["Content-Type"] == "application/json"
        if kind == "webhook":
            body = req.json()
            assert body["version"] == 1
            assert [e["id"] for e in body["events"]] == [41, 42]
        if kind == "ntfy":
            assert req.path == "/"
            assert req.json()["topic"] == PATHS["ntfy"][1:]


async def test_a_signed_webhook_carries_a_valid_signature(session: aiohttp.ClientSession) -> None:
    """With a secret, the receiver verifies the HMAC; a wrong secret is refused for good."""
    async with Receiver("webhook", secret="s3cr3t-key") as receiver:
        assert await send(session, receiver, secret="s3cr3t-key") == Sent(200)
        wrong = await send(session, receiver, secret="another-key")
    assert wrong == Permanent("HTTP 401: bad signature")


@pytest.mark.parametrize(
    "secret", ["whsec_" + "c2VjcmV0LWtleS1vZi0zMi1ieXRlcy1sb25nLi4u", "plain-key"]
)
async def test_standard_webhooks_headers_pass_the_reference_check(
    session: aiohttp.ClientSession, secret: str
) -> None:
    """A receiver checking with the `standardwebhooks` library accepts our signed request."""
    async with Receiver("webhook", secret=secret, standard=True) as receiver:
        assert await send(session, receiver, secret=secret) == Sent(200)
        (req,) = receiver.requests
    assert req.headers["webhook-id"] == "ops/17"
    assert req.headers["webhook-signature"].startswith("v1,")


# A webhook URL whose secret yarl rewrites before sending: `%2F` -> `/`, `%7E` -> `~`, `%41` -> `A`.
ENCODED_SECRET = "ab%2Bcd%2FSIGSECRET%7Ezz%41q"
AS_SENT = "ab%2Bcd/SIGSECRET~zzAq"


async def test_a_404_page_echoing_the_url_as_sent_is_redacted(
    session: aiohttp.ClientSession,
) -> None:
    """A receiver quoting its request line (the URL as yarl rewrote it) leaks no secret form."""
    async with Receiver("webhook", echo=True) as receiver:
        url = f"http://127.0.0.1:{receiver.port}/hooks/in?sig={ENCODED_SECRET}"
        outcome = await send(session, receiver, url=url)
        (req,) = receiver.requests
    assert AS_SENT in req.path  # the receiver saw (and echoed) the rewritten form
    assert isinstance(outcome, Permanent)
    assert outcome.error.startswith("HTTP 404: Not Found: POST ")
    assert REDACTED in outcome.error
    assert "SIGSECRET" not in outcome.error


token_st = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs")),
    min_size=8,
    max_size=30,
)


@settings(max_examples=100, deadline=None)
@given(token=token_st, spell=st.randoms(use_true_random=False), where=st.sampled_from(["q", "p"]))
def test_every_form_of_a_secret_is_redacted(token: str, spell: random.Random, where: str) -> None:
    """As configured, as yarl sends it, and percent-decoded: no form of the token survives."""
    # The operator may percent-encode any character, in upper or lower case hex.
    spelled = "".join(
        "".join(f"%{b:02{spell.choice('xX')}}" for b in c.encode())
        if not c.isalnum() or spell.random() < 0.3
        else c
        for c in token
    )
    url = (
        f"https://hooks.example.net/in?sig={spelled}&x=1"
        if where == "q"
        else f"https://hooks.example.net/api/{spelled}/x"
    )
    parts = secret_parts(url)
    sent = yarl.URL(url)
    forms = [url, str(sent), sent.raw_path_qs, sent.path, *sent.query.values()]
    for form in forms:
        shown = redact(f"error for {form}!", parts)
        assert token not in shown, (form, shown)
        assert spelled not in shown
    assert redact("https://hooks.example.net", parts) == "https://hooks.example.net"


@pytest.mark.parametrize(
    ("kind", "status", "error"),
    [
        ("slack", 400, "HTTP 400: invalid_payload"),
        ("slack", 403, "HTTP 403: invalid_token"),
        ("slack", 410, "HTTP 410: channel_is_archived"),
        ("discord", 400, 'HTTP 400: {"message": "400: error", "code": 50006}'),
        ("googlechat", 400, "HTTP 400: "),
        ("msteams", 400, "HTTP 400: "),
        ("ntfy", 400, "HTTP 400: "),
    ],
)
async def test_client_errors_are_permanent(
    session: aiohttp.ClientSession, kind: str, status: int, error: str
) -> None:
    """400-style answers are dead letters with the service's own words in the error."""
    async with Receiver(kind) as receiver:
        receiver.script(Answer(status))
        outcome = await send(session, receiver)
    assert isinstance(outcome, Permanent)
    assert outcome.error.startswith(error)


@pytest.mark.parametrize("kind", KINDS)
async def test_an_unknown_webhook_is_a_permanent_404_without_the_secret(
    session: aiohttp.ClientSession, kind: str
) -> None:
    """A deleted webhook (wrong path) answers 404: permanent, and no URL in the error."""
    async with Receiver(kind) as receiver:
        wrong = receiver.url.replace(SECRET, "deleted0000000000")
        if kind == "ntfy":  # any topic exists on ntfy; a wrong server path is what 404s
            wrong = receiver.url.replace(PATHS["ntfy"], "/gone/x/" + PATHS["ntfy"][1:])
        outcome = await send(session, receiver, url=wrong)
    assert isinstance(outcome, Permanent)
    assert outcome.error.startswith("HTTP 404")
    assert SECRET not in outcome.error


@pytest.mark.parametrize("kind", ["slack", "discord", "googlechat", "ntfy"])
async def test_429_carries_retry_after_seconds(session: aiohttp.ClientSession, kind: str) -> None:
    """A rate-limit answer is retried after exactly what the service asked for."""
    async with Receiver(kind) as receiver:
        receiver.script(Answer(429, retry_after="3"))
        outcome = await send(session, receiver)
    assert isinstance(outcome, Retry)
    assert outcome.after == 3.0
    assert outcome.error.startswith("HTTP 429")


async def test_503_with_an_http_date(session: aiohttp.ClientSession) -> None:
    """Retry-After as an HTTP-date is honoured too (seconds until then)."""
    when = email.utils.format_datetime(
        dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120), usegmt=True
    )
    async with Receiver("webhook") as receiver:
        receiver.script(Answer(503, retry_after=when))
        outcome = await send(session, receiver)
    assert isinstance(outcome, Retry)
    assert outcome.after is not None
    assert 115 <= outcome.after <= 120


@pytest.mark.parametrize("status", [408, 500, 502, 503])
async def test_server_errors_are_retried_with_backoff(
    session: aiohttp.ClientSession, status: int
) -> None:
    """Without Retry-After a transient error leaves the wait to the backoff."""
    async with Receiver("discord") as receiver:
        receiver.script(Answer(status))
        outcome = await send(session, receiver)
    assert isinstance(outcome, Retry)
    assert outcome.after is None


async def test_a_slow_receiver_times_out(session: aiohttp.ClientSession) -> None:
    """No answer within the time limit is a transient failure, and it does not wait longer."""
    async with Receiver("slack") as receiver:
        receiver.script(Answer(delay=1.0))
        started = time.monotonic()
        outcome = await send(session, receiver, time_limit=0.3)
        elapsed = time.monotonic() - started
    assert outcome == Retry("no answer within 0.3s")
    assert elapsed < 0.9


async def test_connection_refused_is_retried_and_names_no_secret(
    session: aiohttp.ClientSession,
) -> None:
    """Nobody listening: a transient failure naming host and port only."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    url = f"http://127.0.0.1:{port}{PATHS['slack']}"
    request = render("slack", message())
    outcome = await delivery.post(session, url, request, secrets=secret_parts(url))
    assert isinstance(outcome, Retry)
    assert outcome.error.startswith(f"cannot connect to 127.0.0.1:{port}")
    assert SECRET not in outcome.error


async def test_an_answer_echoing_the_url_is_redacted(session: aiohttp.ClientSession) -> None:
    """A receiver that quotes the webhook URL back cannot leak it into logs or the API."""
    async with Receiver("webhook") as receiver:
        receiver.script(Answer(500, body=f"upstream failed for {receiver.url}"))
        outcome = await send(session, receiver)
    assert isinstance(outcome, Retry)
    assert SECRET not in outcome.error
    assert "<redacted>" in outcome.error
    assert "127.0.0.1" in outcome.error


async def test_a_redirect_is_not_followed(session: aiohttp.ClientSession) -> None:
    """A 301 is a permanent failure; the POST is not replayed elsewhere."""
    async with Receiver("webhook") as receiver:
        receiver.script(Answer(301, body="moved"))
        outcome = await send(session, receiver)
        assert len(receiver.requests) == 1
    assert outcome == Permanent("HTTP 301: moved")


async def test_the_delivery_header_is_added_when_the_renderer_did_not(
    session: aiohttp.ClientSession,
) -> None:
    """A request rendered without a delivery id still carries the dedup header."""
    async with Receiver("webhook") as receiver:
        bare = Message(target="t", address=None, events=())
        request = render("webhook", bare, now=dt.datetime.now(dt.UTC))
        assert DELIVERY_HEADER not in request.headers
        outcome = await delivery.post(session, receiver.url, request, delivery_id="ops/9")
        assert outcome == Sent(200)
        assert receiver.requests[0].key == "ops/9"
