"""What a notification says, independent of the chat format it is rendered into.

A `Message` is what one delivery carries: the events of one target from one scan (grouped),
a reminder of an unacknowledged finding, or a test message from `exposuremon notify-test`.
Renderers (`notify/formats.py`) turn it into one HTTP request body per channel type.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

from exposuremon.model import Event, Severity


class MessageKind(enum.StrEnum):
    """Why a message is sent."""

    EVENTS = "events"  # what detection found in one scan of one target
    REMINDER = "reminder"  # an unacknowledged critical finding is still open
    TEST = "test"  # `exposuremon notify-test`: clearly marked, carries no real finding


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """One delivery to one channel: a target's events from one scan, a vantage's health
    change, a reminder or a test."""

    target: str
    address: str | None
    events: tuple[Event, ...]  # saved events (ids set), oldest first
    kind: MessageKind = MessageKind.EVENTS
    public_url: str | None = None  # `[http] public_url`: links to the status page when set
    delivery_id: str = ""  # stable across retries: "<channel>/<group>"; receivers dedup on it
    reminder_count: int = 0  # for REMINDER: 1 for the first reminder
    # A vantage's message (vantage_degraded / vantage_recovered): no target of its own, so
    # `target` is "" and this names the vantage.
    vantage: str | None = None

    @property
    def severity(self) -> Severity:
        """The highest severity among the events (INFO for none)."""
        return max((e.severity for e in self.events), default=Severity.INFO)


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """A rendered HTTP request: the body bytes and the headers that go with them."""

    body: bytes
    headers: Mapping[str, str]
