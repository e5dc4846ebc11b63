"""Chat notifications: pure rendering per chat format, and the worker that delivers the outbox."""

from __future__ import annotations

from exposuremon.notify.notifier import Notifier, NullNotifier, channels_for_events, send_test

__all__ = ["Notifier", "NullNotifier", "channels_for_events", "send_test"]
