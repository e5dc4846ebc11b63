"""Chat notifications: pure rendering per chat format, and the worker that delivers the outbox."""

from __future__ import annotations

from exposuremon.notify.notifier import Notifier, NullNotifier, router, send_test

__all__ = ["Notifier", "NullNotifier", "router", "send_test"]
