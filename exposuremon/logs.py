"""Logging: structlog to stderr, one event per line, console or JSON, secrets redacted.

Decisions are made once, at configuration: the renderer (JSON for journald and log shippers,
key=value lines otherwise, colour only on a terminal) and the level filter.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Keys whose values are secrets wherever they appear in an event (webhook URLs, tokens).
_SECRET_MARKERS = ("url", "secret", "token", "password", "authorization")
_REDACTED = "<redacted>"


def redact_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace the value of any key that names a secret; a safety net, not a licence to log."""
    for key in list(event):
        lowered = key.lower()
        if any(marker in lowered for marker in _SECRET_MARKERS) and key != "public_url":
            event[key] = _REDACTED
    return event


def configure_logging(log_format: str = "console", level: str = "info") -> None:
    """Set up structlog (and stdlib logging, for libraries) for the whole process."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: Any
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, force=True)
    # APScheduler logs every job run at INFO: noise at our scan rates.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def get_logger(**context: Any) -> structlog.typing.FilteringBoundLogger:
    """A logger with bound context fields (e.g. target=..., kind=...)."""
    return structlog.get_logger(**context)  # type: ignore[no-any-return]
