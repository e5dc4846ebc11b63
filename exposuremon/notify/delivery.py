"""One HTTP POST of a rendered message, and what its answer means (`retry.classify`).

The session is injected (the service shares one, with its connection pool); this module
only sends. Every error text it returns has the webhook URL's secret parts redacted, because
aiohttp's exceptions can carry the URL and receivers sometimes echo it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

import aiohttp

from exposuremon.notify.formats import DELIVERY_HEADER
from exposuremon.notify.message import Request
from exposuremon.notify.redaction import redact
from exposuremon.notify.retry import DeliveryOutcome, Permanent, Retry, Sent, classify
from exposuremon.units import utcnow

# Receivers deduplicate on DELIVERY_HEADER: the same value on every attempt of one message.
TIMEOUT = 10.0  # seconds per attempt: connect, send, and read the answer
_MAX_BODY = 2048  # bytes of an answer kept for the error text


async def post(
    session: aiohttp.ClientSession,
    url: str,
    request: Request,
    *,
    delivery_id: str | None = None,
    secrets: Sequence[str] = (),
    time_limit: float = TIMEOUT,
    retry_after_limits: tuple[float, float] = (1.0, 3600.0),
    clock: Callable[[], dt.datetime] = utcnow,
) -> DeliveryOutcome:
    """POST `request` to `url` once; Sent, Retry (transient, maybe after a delay) or Permanent."""
    headers = dict(request.headers)
    if delivery_id and not any(k.lower() == DELIVERY_HEADER.lower() for k in headers):
        headers[DELIVERY_HEADER] = delivery_id
    limits = retry_after_limits
    outcome = await _attempt(session, url, request.body, headers, time_limit, limits, clock)
    if isinstance(outcome, Sent):
        return outcome
    clean = redact(outcome.error, secrets)
    if isinstance(outcome, Retry):
        return Retry(clean, outcome.after)
    return Permanent(clean)


async def _attempt(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    time_limit: float,
    limits: tuple[float, float],
    clock: Callable[[], dt.datetime],
) -> DeliveryOutcome:
    try:
        async with session.post(
            url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=time_limit),
            allow_redirects=False,
        ) as resp:
            answer = await resp.content.read(_MAX_BODY)
            text = answer.decode("utf-8", "replace")
            return classify(resp.status, resp.headers.get("Retry-After"), text, clock(), limits)
    except TimeoutError:
        return Retry(f"no answer within {time_limit:g}s")
    except aiohttp.InvalidURL:
        return Permanent("invalid webhook URL")
    except aiohttp.ClientConnectorError as exc:
        # str(exc) names host and port only; the OS error says why (refused, unreachable).
        reason = exc.os_error.strerror or str(exc.os_error) or type(exc.os_error).__name__
        return Retry(f"cannot connect to {exc.host}:{exc.port}: {reason}")
    except aiohttp.ClientResponseError as exc:
        # Never str(exc): it holds the URL as yarl normalised it, which secret redaction of
        # the configured text may not match.
        return Retry(f"{type(exc).__name__}: {exc.status} {exc.message}".strip())
    except aiohttp.ClientError as exc:
        return Retry(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    except OSError as exc:
        return Retry(f"{type(exc).__name__}: {exc.strerror or exc}")


__all__ = ["DELIVERY_HEADER", "DeliveryOutcome", "Permanent", "Retry", "Sent", "post"]
