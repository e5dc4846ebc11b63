"""Field parsers of the configuration: durations, port specs, names, addresses, URLs.

Each runs before pydantic's own type checks and raises an error that becomes
`key.path: problem`; config.py builds the models from them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    PlainValidator,
    SecretStr,
    StrictInt,
    ValidationInfo,
)
from pydantic_core import PydanticCustomError

from exposuremon.config.ranges import is_range, parse_range
from exposuremon.model import Severity
from exposuremon.scan import (
    RATE_MAX,
    RATE_MIN,
    TIMEOUT_MAX,
    TIMEOUT_MIN,
    PortSpecError,
    parse_ports,
)
from exposuremon.units import parse_duration

TOKEN_ENV = "EXPOSUREMON_API_TOKEN"
NotifyType = Literal["slack", "discord", "msteams", "googlechat", "ntfy", "webhook"]
NOTIFY_TYPES: tuple[str, ...] = get_args(NotifyType)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class ConfigError(Exception):
    """The configuration is invalid; `errors` holds one `key.path: problem` line per problem."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


def key_error(key: str, message: str) -> PydanticCustomError:
    # A model validator's error is located at the model; ctx["key"] lets us point below it.
    return PydanticCustomError("at_key", "{message}", {"key": key, "message": message})


# --- field parsers (run before pydantic's own type checks) ------------------------------------


def duration_text(seconds: float) -> str:
    """A duration the way the config writes it: the largest unit that divides it exactly."""
    # Days only from two on: "24h" reads better than "1d".
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= max(size, 2 * 86400 if unit == "d" else 0) and (seconds / size).is_integer():
            return f"{int(seconds // size)}{unit}"
    if seconds >= 1:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{seconds * 1000:.3f}".rstrip("0").rstrip(".") + "ms"


# The longest duration any key accepts: a century is "forever" to a monitor, and longer ones
# overflow the date arithmetic of the scheduler and of retention (year 9999).
MAX_DURATION = 36525 * 86400.0


@dataclasses.dataclass(frozen=True, slots=True)
class DurationParser:
    """Seconds from a duration, within [low, high]; `why` says what a shorter one would do."""

    low: float
    high: float = MAX_DURATION
    why: str = ""

    def __call__(self, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError("expected a duration like '30s', '15m' or '24h'")
        seconds = parse_duration(value)  # refuses nan, inf and negative values
        return _within(seconds, self.low, self.high, self.why, duration_text, value)

    def describe(self) -> str:
        """What the key accepts, for docs/config.md."""
        if self.high == MAX_DURATION:
            return f"duration ≥ {duration_text(self.low)}"
        return f"duration {duration_text(self.low)}-{duration_text(self.high)}"


def _within(
    number: float, low: float, high: float, why: str, text: Callable[[float], str], value: object
) -> float:
    """`number` if within [low, high]; else the error naming the bound (`text` writes it)."""
    if number < low:
        reason = f" ({why})" if why else ""
        raise ValueError(f"must be at least {text(low)}{reason}, got {value!r}")
    if number > high:
        raise ValueError(f"must be at most {text(high)}, got {value!r}")
    return number


def _finite(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a number")
    # TOML has nan, inf and integers of any length; NaN passes every comparison, so it must
    # be refused by name.
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"must be a finite number, got {value!r}")
    return number


def _positive_number(value: object) -> float:
    number = _finite(value)
    if number <= 0:
        raise ValueError(f"must be more than zero, got {value!r}")
    return number


@dataclasses.dataclass(frozen=True, slots=True)
class NumberParser:
    """A finite number within [low, high]; `why` says what a smaller one would do."""

    low: float
    high: float
    why: str = ""

    def __call__(self, value: object) -> float:
        return _within(_finite(value), self.low, self.high, self.why, _plain, value)

    def describe(self) -> str:
        """What the key accepts, for docs/config.md."""
        return f"number {_plain(self.low)}-{_plain(self.high)}"


def _plain(number: float) -> str:
    # 1000000, not 1e+06: the way an operator writes it in the file.
    return f"{number:.0f}" if number.is_integer() else f"{number:g}"


# Below a tenth, an ordinary scan with a few open ports would count as a middlebox answering
# everything, and its real findings would be hidden behind one anomaly event.
ANOMALY_SHARE_MIN = 0.1


def parse_share(value: object) -> float:
    share = _positive_number(value)
    if share > 1:
        raise ValueError(f"must be a share in (0, 1], got {value!r}")
    if share < ANOMALY_SHARE_MIN:
        raise ValueError(
            f"must be at least {ANOMALY_SHARE_MIN:g} (a smaller share takes ordinary scans "
            f"for a middlebox and hides their findings), got {value!r}"
        )
    return share


def parse_jitter(value: object) -> float:
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            share = float(value.strip()[:-1]) / 100
        except ValueError:
            raise ValueError(f"not a percentage: {value!r}") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        share = _finite(value)
    else:
        raise ValueError("expected a fraction like 0.1 or a percentage like '10%'")
    if not 0 <= share <= 0.5:
        raise ValueError(f"must be between 0 and 0.5 (50%), got {value!r}")
    return share


@lru_cache(maxsize=256)
def _ports_of(items: tuple[str | int, ...]) -> frozenset[int]:
    # Cached so that thousands of targets share one `1-65535` set instead of 4 MB each.
    return frozenset(parse_ports(items))


def _port_error(problem: str, index: int | None) -> PydanticCustomError:
    # ctx["item"] extends the key path to the offending list entry: `expected_open[1]`.
    ctx: dict[str, Any] = {"problem": problem}
    if index is not None:
        ctx["item"] = index
    return PydanticCustomError("port_spec", "{problem}", ctx)


def _port_set(value: object) -> frozenset[int]:
    if isinstance(value, frozenset):
        return value
    listed = isinstance(value, list | tuple)
    items: list[object] = list(value) if isinstance(value, list | tuple) else [value]
    specs: list[str | int] = []
    for index, item in enumerate(items):
        if isinstance(item, bool) or not isinstance(item, str | int):
            if listed:
                raise _port_error("expected a port number or a spec string", index)
            raise _port_error("expected a port spec string or a list of ports and specs", None)
        specs.append(item)
    try:
        return _ports_of(tuple(specs))
    except PortSpecError:
        for index, spec in enumerate(specs):  # find the entry to blame
            try:
                parse_ports(spec)
            except PortSpecError as exc:
                raise _port_error(str(exc), index if listed else None) from None
        raise


def _name(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    if not _NAME.match(value):
        raise ValueError(f"must be 1-64 characters of A-Z a-z 0-9 . _ -, got {value!r}")
    return value


def _env_name(value: object) -> str:
    if not isinstance(value, str) or not _ENV_NAME.match(value):
        raise ValueError(f"not an environment variable name: {value!r}")
    return value


def _path(value: object, info: ValidationInfo) -> Path:
    if not isinstance(value, str | Path) or not str(value):
        raise ValueError("expected a non-empty path string")
    path = Path(value)
    base = (info.context or {}).get("base_dir")
    # Relative paths are relative to the config file, not to wherever the daemon was started.
    return path if path.is_absolute() or base is None else Path(base) / path


def _is_hostname(text: str) -> bool:
    labels = text.removesuffix(".").split(".")
    # An all-numeric last label would make `999.1.1.1` a "hostname" (RFC 3696 section 2).
    return (
        0 < len(text) <= 253
        and all(_LABEL.match(label) for label in labels)
        and not labels[-1].isdigit()
    )


def parse_address(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not _is_hostname(text):
        raise ValueError(
            f"not an IP address or hostname: {value!r} (write it without scheme, port or path)"
        )
    return text.lower()


def parse_target_address(value: object) -> str:
    """A target's address: an IP address, a hostname or a CIDR range (config/ranges.py)."""
    if isinstance(value, str) and is_range(value):
        return str(parse_range(value.strip()))
    return parse_address(value)


def split_listen(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT like '127.0.0.1:9810' or '[::1]:9810', got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not _is_ip(host) or ":" not in host:
            raise ValueError(f"not an IPv6 address in brackets: {text!r}")
    elif ":" in host:
        raise ValueError(f"put IPv6 addresses in brackets, e.g. '[::1]:9810', got {text!r}")
    elif not (_is_ip(host) or _is_hostname(host)):
        raise ValueError(f"not an IP address or hostname: {host!r}")
    # Port 0 asks the kernel for a free port (tests run several daemons side by side).
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be 0-65535, got {port_text!r}")
    return host, int(port_text)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_listen(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    split_listen(value)
    return value


def parse_http_url(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    parts = urlsplit(value)
    # The message never echoes the value: webhook URLs are secrets.
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return value


def check_store_url(text: str) -> str:
    """A `[store]` database URL: `postgresql://...` or `sqlite:////ABSOLUTE/FILE`.

    The messages never echo the value: the URL may hold a password. The store maps
    `postgresql://` to its async driver; naming a driver here is refused.
    """
    scheme, sep, rest = text.partition("://")
    if scheme == "postgresql" and sep:
        return text
    if scheme.startswith(("postgresql+", "postgres")):
        raise ValueError("write postgresql://, without a driver (the store picks its own)")
    if scheme == "sqlite" and sep:
        if not rest.startswith("//") or len(rest) <= 2:
            raise ValueError("a sqlite URL needs an absolute file path: sqlite:////path/to/file.db")
        return text
    raise ValueError("must be a postgresql:// URL, or sqlite:////path/to/file.db")


def parse_store_url(value: object) -> SecretStr:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return SecretStr(check_store_url(value))


def parse_public_url(value: object) -> str:
    return parse_http_url(value).rstrip("/")


def parse_secret_url(value: object) -> SecretStr:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return SecretStr(parse_http_url(value))


def parse_severity(value: object) -> Severity:
    if isinstance(value, Severity):
        return value
    if not isinstance(value, str):
        raise ValueError("expected 'info', 'warning' or 'critical'")
    return Severity.parse(value)


def lower_text(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


PortSet = Annotated[frozenset[int], PlainValidator(_port_set)]
Name = Annotated[str, BeforeValidator(_name)]
EnvName = Annotated[str, BeforeValidator(_env_name)]
FilePath = Annotated[Path, BeforeValidator(_path)]
PositiveInt = Annotated[StrictInt, Field(ge=1)]
PositiveFloat = Annotated[float, BeforeValidator(_positive_number)]
ScanRate = Annotated[
    float,
    BeforeValidator(
        NumberParser(RATE_MIN, RATE_MAX, "slower scans never finish: a sentinel takes a minute")
    ),
]
ProbeTimeout = Annotated[
    float,
    BeforeValidator(
        DurationParser(
            TIMEOUT_MIN, TIMEOUT_MAX, "shorter than a scheduling hiccup: every port looks filtered"
        )
    ),
]

DEFAULT_QUICK = _ports_of(("top1000,hot",))
DEFAULT_FULL = _ports_of(("1-65535",))


# --- notification rates ---------------------------------------------------------------------


NOTIFY_RATE_MIN = 1 / 3600  # messages per second
NOTIFY_RATE_MAX = 1000.0


@dataclasses.dataclass(frozen=True, slots=True)
class Rate:
    """At most `count` messages in any `per` seconds."""

    count: float
    per: float = 1.0

    def __post_init__(self) -> None:
        if not (self.count > 0 and self.per > 0 and math.isfinite(self.count / self.per)):
            raise ValueError(f"rate: need a positive count and period, got {self}")

    @property
    def per_second(self) -> float:
        """Sustained messages per second."""
        return self.count / self.per

    def __str__(self) -> str:
        return f"{self.count:g}/{self.per:g}s"


def parse_rate(value: object) -> Rate:
    """A rate from `5` (per second), `"1/s"`, `"5/2s"` or `"30/1m"`; ValueError says why."""
    if isinstance(value, Rate):
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("expected a rate like 5, '1/s', '5/2s' or '30/1m'")
    if isinstance(value, int | float):
        count, per = _finite(value), 1.0
    else:
        head, sep, tail = value.partition("/")
        tail = tail.strip()
        try:
            count = float(head)
            per = 1.0 if not sep else parse_duration(f"1{tail}" if tail.isalpha() else tail)
        except ValueError:
            raise ValueError(
                f"not a rate: {value!r} (use a number per second, or e.g. '5/2s', '30/1m')"
            ) from None
    if not math.isfinite(count):  # nan and inf: TOML floats, or "nan/s"
        raise ValueError(f"must be a finite rate, got {value!r}")
    try:
        rate = Rate(count, per)
    except ValueError:
        raise ValueError(f"rate must be more than zero: {value!r}") from None
    # Slower than one an hour, a burst of events would wait days in the outbox; more than
    # 1000 a second no receiver takes, and a huge count would size the pacing window.
    if rate.per_second < NOTIFY_RATE_MIN:
        raise ValueError(f"must allow at least one message an hour, got {value!r}")
    if rate.per_second > NOTIFY_RATE_MAX or rate.count > NOTIFY_RATE_MAX:
        raise ValueError(f"must be at most {NOTIFY_RATE_MAX:g} messages a second, got {value!r}")
    return rate
