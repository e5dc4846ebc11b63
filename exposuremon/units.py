"""Human units in config, CLI and JSON: durations like `30s`, `15m`, `24h`; RFC 3339 times."""

from __future__ import annotations

import datetime as dt
import math
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str | float | int) -> float:
    """Seconds from `250ms`, `30s`, `15m`, `24h`, `7d` or a bare number of seconds."""
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        try:
            seconds = float(text)
        except OverflowError:  # a 400-digit TOML integer
            raise ValueError(f"not a finite duration: {text!r}") from None
    else:
        match = _DURATION.match(text)
        if match is None:
            raise ValueError(
                f"not a duration: {text!r} (use a number with ms, s, m, h or d, e.g. '30s')"
            )
        seconds = float(match.group(1)) * _SECONDS[match.group(2)]
    # nan and inf come from TOML (`nan`, `inf`) or from 400 digits that float() rounds to inf.
    if not math.isfinite(seconds):
        raise ValueError(f"not a finite duration: {text!r}")
    if seconds < 0:
        raise ValueError(f"duration must not be negative: {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """Short human form: `850ms`, `12.3s`, `4m05s`, `2h00m`."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def rfc3339(when: dt.datetime, timespec: str = "seconds") -> str:
    """A time as RFC 3339 in UTC with a `Z`, e.g. `2026-11-26T03:14:07Z`."""
    return when.astimezone(dt.UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def utcnow() -> dt.datetime:
    """The current time in UTC: the default clock of everything that takes one."""
    return dt.datetime.now(dt.UTC)
