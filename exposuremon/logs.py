"""Logging: structlog to stderr, one event per line, console or JSON, secrets redacted.

Decisions are made once, at configuration: the renderer (JSON for log shippers, key=value
lines otherwise), colour (only on a terminal, and never with $NO_COLOR), and the level filter.
Library messages (stdlib `logging`: aiohttp, APScheduler, Alembic) go through the same renderer,
so a log holds one format.

Under journald ($JOURNAL_STREAM names our stderr) each line starts with its syslog priority
(`<3>` for errors …), so `journalctl -p warning` works, and console lines carry no timestamp of
their own since journald stamps every line. Away from a terminal an event never spans lines:
a traceback's newlines are escaped, so a log shipper sees one event per line.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

# Keys whose values are secrets wherever they appear in an event (webhook URLs, tokens).
_SECRET_MARKERS = ("url", "secret", "token", "password", "authorization")
_REDACTED = "<redacted>"
# syslog priorities of our levels (sd-daemon.h's SD_ERR and friends).
_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "critical": 2}


def redact_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace the value of any key that names a secret; a safety net, not a licence to log."""
    for key in list(event):
        lowered = key.lower()
        if any(marker in lowered for marker in _SECRET_MARKERS) and key != "public_url":
            event[key] = _REDACTED
    return event


def under_journald(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """True when `stream` is connected to journald: $JOURNAL_STREAM is its `device:inode`."""
    expected = environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # a StringIO, a closed stream
        return False
    return f"{st.st_dev}:{st.st_ino}" == expected


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError, AttributeError):
        return False


class LineRenderer:
    """Wraps a renderer: escapes newlines (one event per line) and adds a syslog priority."""

    def __init__(self, inner: Any, *, one_line: bool, priority_prefix: bool) -> None:
        self.inner = inner
        self.one_line = one_line
        self.priority_prefix = priority_prefix

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        level = str(event.get("level", method)).lower()
        text = str(self.inner(logger, method, event))
        if self.one_line:
            text = text.rstrip("\n").replace("\r", "\\r").replace("\n", "\\n")
        if self.priority_prefix:
            text = f"<{_PRIORITY.get(level, 6)}>{text}"
        return text


def configure_logging(
    log_format: str = "console",
    level: str = "info",
    *,
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Set up structlog (and stdlib logging, for libraries) for the whole process."""
    out = sys.stderr if stream is None else stream
    env = os.environ if environ is None else environ
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    journald = under_journald(out, env)
    tty = _isatty(out)
    shared: list[Any] = [structlog.processors.add_log_level]
    if log_format == "json" or not journald:  # journald stamps console lines itself
        shared.append(structlog.processors.TimeStamper(fmt="iso", utc=True))
    shared.append(redact_secrets)
    inner: Any
    if log_format == "json":
        shared.append(structlog.processors.format_exc_info)
        inner = structlog.processors.JSONRenderer()
    else:
        inner = structlog.dev.ConsoleRenderer(
            colors=tty and not journald and "NO_COLOR" not in env,
            exception_formatter=structlog.dev.plain_traceback,
            # Columns line up on a terminal; elsewhere padding only costs bytes.
            pad_event_to=30 if tty else 0,
            pad_level=tty,
        )
    renderer = LineRenderer(inner, one_line=not tty or journald, priority_prefix=journald)
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Libraries only speak up about problems, whatever our own level.
    root.setLevel(max(numeric, logging.WARNING))
    # APScheduler logs every job run at INFO: noise at our scan rates.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # Runs it skips it logs once per job; the service counts them and sums them up each
    # minute ("scans late"), so the per-job lines would only bury the rest of the log.
    for name in ("apscheduler.scheduler", "apscheduler.executors.default"):
        library = logging.getLogger(name)
        if not any(isinstance(f, SkippedRunsFilter) for f in library.filters):
            library.addFilter(SkippedRunsFilter())


class SkippedRunsFilter(logging.Filter):
    """Drops APScheduler's per-job lines about runs it skipped or missed."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for "skipped: maximum number of running instances" and "was missed by"."""
        message = str(record.msg)
        return not (
            "skipped: maximum number of running instances" in message or "was missed by" in message
        )


def get_logger(**context: Any) -> structlog.typing.FilteringBoundLogger:
    """A logger with bound context fields (e.g. target=..., kind=...)."""
    return structlog.get_logger(**context)  # type: ignore[no-any-return]
