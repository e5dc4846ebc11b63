"""The daemon's configuration: TOML -> frozen pydantic models, with errors that name the key path.

Every problem is reported as `key.path: problem` (e.g. `targets[2].expected_open: ...`), all at
once, without pydantic's boilerplate. Secrets (webhook URLs, the API token) are never part of a
model's repr or of an error message; env- and file-based secrets are read only when asked for.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    SecretStr,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from exposuremon.detect import Policy
from exposuremon.model import ScanKind, Severity
from exposuremon.scan.ports import HOT_PORTS, PortSpecError, format_ports, parse_ports
from exposuremon.scan.timing import ScanOptions
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


def _at(key: str, message: str) -> PydanticCustomError:
    # A model validator's error is located at the model; ctx["key"] lets us point below it.
    return PydanticCustomError("at_key", "{message}", {"key": key, "message": message})


# --- field parsers (run before pydantic's own type checks) ------------------------------------


def _duration(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("expected a duration like '30s', '15m' or '24h'")
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be more than zero: {value!r}")
    return seconds


def _positive_number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a number")
    if value <= 0:
        raise ValueError(f"must be more than zero, got {value!r}")
    return float(value)


def _share(value: object) -> float:
    share = _positive_number(value)
    if share > 1:
        raise ValueError(f"must be a share in (0, 1], got {value!r}")
    return share


def _jitter(value: object) -> float:
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            share = float(value.strip()[:-1]) / 100
        except ValueError:
            raise ValueError(f"not a percentage: {value!r}") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        share = float(value)
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


def _address(value: object) -> str:
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


def _split_listen(text: str) -> tuple[str, int]:
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


def _listen(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    _split_listen(value)
    return value


def _http_url(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    parts = urlsplit(value)
    # The message never echoes the value: webhook URLs are secrets.
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return value


def _public_url(value: object) -> str:
    return _http_url(value).rstrip("/")


def _secret_url(value: object) -> SecretStr:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return SecretStr(_http_url(value))


def _severity(value: object) -> Severity:
    if isinstance(value, Severity):
        return value
    if not isinstance(value, str):
        raise ValueError("expected 'info', 'warning' or 'critical'")
    return Severity.parse(value)


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


Duration = Annotated[float, BeforeValidator(_duration)]
PortSet = Annotated[frozenset[int], PlainValidator(_port_set)]
Name = Annotated[str, BeforeValidator(_name)]
EnvName = Annotated[str, BeforeValidator(_env_name)]
FilePath = Annotated[Path, BeforeValidator(_path)]
PositiveInt = Annotated[StrictInt, Field(ge=1)]
PositiveFloat = Annotated[float, BeforeValidator(_positive_number)]

DEFAULT_QUICK = _ports_of(("top1000,hot",))
DEFAULT_FULL = _ports_of(("1-65535",))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- sections ---------------------------------------------------------------------------------


class DaemonConfig(_Model):
    """`[daemon]`: where state lives and how the daemon logs."""

    state_dir: FilePath = Field(default=Path("state"), validate_default=True)
    log_format: Literal["console", "json"] = "console"
    log_level: Annotated[
        Literal["debug", "info", "warning", "error", "critical"], BeforeValidator(_lower)
    ] = "info"
    retention: Duration = 90 * 86400.0


class HttpConfig(_Model):
    """`[http]`: the status page, API and metrics listener."""

    listen: Annotated[str, BeforeValidator(_listen)] = "127.0.0.1:9810"
    token_file: FilePath | None = None
    public_url: Annotated[str, BeforeValidator(_public_url)] | None = None

    @property
    def host(self) -> str:
        """Host part of `listen`, without IPv6 brackets."""
        return _split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        """Port part of `listen`."""
        return _split_listen(self.listen)[1]

    def api_token(self) -> str | None:
        """The API token from env EXPOSUREMON_API_TOKEN, else token_file (read now), else None."""
        return _read_secret("http", TOKEN_ENV, self.token_file, env_key=None, file_key="token_file")


class ScanOverride(_Model):
    """`[targets.scan]`: per-target overrides of `[scan]`."""

    rate: PositiveFloat | None = None
    concurrency: PositiveInt | None = None
    resolve_after: PositiveInt | None = None


class ScanConfig(_Model):
    """`[scan]`: probing, confirmation and detection tuning."""

    concurrency: PositiveInt = 1024
    rate: PositiveFloat | None = None
    timeout_min: Duration = 0.1
    timeout_max: Duration = 1.25
    timeout_initial: Duration = 0.5
    retries: Annotated[StrictInt, Field(ge=0, le=10)] = 1
    max_concurrent_scans: PositiveInt = 16
    confirm: StrictBool = True
    fingerprint: StrictBool = True
    fingerprint_timeout: Duration = 3.0
    resolve_after: PositiveInt = 2
    anomaly_share: Annotated[float, BeforeValidator(_share)] = 0.5
    anomaly_min_ports: PositiveInt = 50

    @model_validator(mode="after")
    def _timeouts_ordered(self) -> ScanConfig:
        if self.timeout_min > self.timeout_max:
            raise _at("timeout_max", f"must not be below timeout_min ({self.timeout_min:g}s)")
        if not self.timeout_min <= self.timeout_initial <= self.timeout_max:
            raise _at(
                "timeout_initial",
                f"must lie between timeout_min ({self.timeout_min:g}s) "
                f"and timeout_max ({self.timeout_max:g}s)",
            )
        return self

    def with_override(self, override: ScanOverride) -> ScanConfig:
        """This section with a target's `[targets.scan]` values applied."""
        return self.model_copy(update=override.model_dump(exclude_none=True))

    def scan_options(self) -> ScanOptions:
        """The engine's options for one scan under these settings."""
        return ScanOptions(
            concurrency=self.concurrency,
            timeout_initial=self.timeout_initial,
            timeout_min=self.timeout_min,
            timeout_max=self.timeout_max,
            retries=self.retries,
            rate=self.rate,
        )


class ScheduleOverride(_Model):
    """`[targets.schedule]`: per-target overrides of `[schedule]`."""

    sentinel: Duration | None = None
    quick: Duration | None = None
    full: Duration | None = None
    jitter: Annotated[float, BeforeValidator(_jitter)] | None = None


class ScheduleConfig(_Model):
    """`[schedule]`: how often each scan kind runs, and the random jitter applied."""

    sentinel: Duration = 30.0
    quick: Duration = 15 * 60.0
    full: Duration = 24 * 3600.0
    jitter: Annotated[float, BeforeValidator(_jitter)] = 0.1

    def interval(self, kind: ScanKind) -> float:
        """Seconds between scans of `kind`."""
        return float(getattr(self, kind.value))

    def with_override(self, override: ScheduleOverride) -> ScheduleConfig:
        """This schedule with a target's `[targets.schedule]` values applied."""
        return self.model_copy(update=override.model_dump(exclude_none=True))


class TargetConfig(_Model):
    """`[[targets]]`: one monitored address and its policy."""

    name: Name
    address: Annotated[str, BeforeValidator(_address)]
    expected_open: PortSet = frozenset()
    ignore: PortSet = frozenset()
    # Left out of repr: tens of thousands of ports would drown every log line.
    ports_quick: PortSet = Field(default=DEFAULT_QUICK, repr=False)
    ports_full: PortSet = Field(default=DEFAULT_FULL, repr=False)
    schedule: ScheduleOverride = ScheduleOverride()
    scan: ScanOverride = ScanOverride()

    @model_validator(mode="after")
    def _policy_consistent(self) -> TargetConfig:
        both = self.expected_open & self.ignore
        if both:
            raise _at("ignore", f"ports {format_ports(both)} are also in expected_open")
        return self

    @property
    def ip(self) -> IPAddress | None:
        """The address as an IP, or None when it is a hostname (resolved at every scan)."""
        try:
            return ipaddress.ip_address(self.address)
        except ValueError:
            return None

    def sentinel_ports(self, seen_open: Iterable[int] = ()) -> frozenset[int]:
        """Sentinel set: expected ports, every port ever seen open, and the hot ports."""
        return self.expected_open | HOT_PORTS | frozenset(seen_open)

    def quick_ports(self, seen_open: Iterable[int] = ()) -> frozenset[int]:
        """Quick set: `ports_quick` plus the whole sentinel set."""
        return self.ports_quick | self.sentinel_ports(seen_open)

    def full_ports(self) -> frozenset[int]:
        """Full set: `ports_full` plus expected ports (the shared set itself when it has them)."""
        if self.expected_open <= self.ports_full:
            return self.ports_full
        return self.ports_full | self.expected_open

    def effective_schedule(self, schedule: ScheduleConfig) -> ScheduleConfig:
        """The global `[schedule]` with this target's overrides applied."""
        return schedule.with_override(self.schedule)

    def effective_scan(self, scan: ScanConfig) -> ScanConfig:
        """The global `[scan]` with this target's overrides applied."""
        return scan.with_override(self.scan)

    def effective_concurrency(self, scan: ScanConfig) -> int:
        """Probes in flight to this target: its override, else `[scan] concurrency`."""
        return self.scan.concurrency if self.scan.concurrency is not None else scan.concurrency

    def effective_rate(self, scan: ScanConfig) -> float | None:
        """Connects per second to this target: its override, else `[scan] rate` (None: no limit)."""
        return self.scan.rate if self.scan.rate is not None else scan.rate

    def policy(self, scan: ScanConfig) -> Policy:
        """The detection policy for this target under the global `[scan]` thresholds."""
        effective = self.effective_scan(scan)
        return Policy(
            expected_open=self.expected_open,
            ignore=self.ignore,
            resolve_after=effective.resolve_after,
            anomaly_share=effective.anomaly_share,
            anomaly_min_ports=effective.anomaly_min_ports,
        )

    def ports_for(self, kind: ScanKind, seen_open: Iterable[int] = ()) -> frozenset[int]:
        """The ports a scan of `kind` covers."""
        if kind is ScanKind.SENTINEL:
            return self.sentinel_ports(seen_open)
        if kind is ScanKind.QUICK:
            return self.quick_ports(seen_open)
        return self.full_ports()


class NotifyConfig(_Model):
    """`[[notify]]`: one chat or webhook channel; its URL is a secret."""

    name: Name
    type: NotifyType
    url: Annotated[SecretStr, BeforeValidator(_secret_url)] | None = Field(default=None, repr=False)
    url_env: EnvName | None = None
    url_file: FilePath | None = None
    secret_env: EnvName | None = None
    secret_file: FilePath | None = None
    min_severity: Annotated[Severity, BeforeValidator(_severity)] = Severity.WARNING
    targets: tuple[StrictStr, ...] | None = None

    @model_validator(mode="after")
    def _sources(self) -> NotifyConfig:
        given = [k for k in ("url", "url_env", "url_file") if getattr(self, k) is not None]
        if not given:
            raise _at("url", "one of url, url_env or url_file is required")
        if len(given) > 1:
            raise _at(given[1], f"set only one of url, url_env, url_file (also has {given[0]})")
        secret = [k for k in ("secret_env", "secret_file") if getattr(self, k) is not None]
        if secret and self.type != "webhook":
            raise _at(secret[0], "only type 'webhook' signs its requests")
        if len(secret) > 1:
            raise _at(secret[1], "set only one of secret_env, secret_file")
        if self.targets is not None and not self.targets:
            raise _at("targets", "empty list; leave the key out to notify for every target")
        return self

    def resolve_url(self) -> str:
        """The webhook URL, read from the config, env or file now; ConfigError if unavailable."""
        if self.url is not None:
            return self.url.get_secret_value()
        owner = f"notify {self.name!r}"
        url = _read_secret(
            owner, self.url_env, self.url_file, env_key="url_env", file_key="url_file"
        )
        if url is None:  # unreachable: the validator demands one source
            raise ConfigError([f"{owner}.url: no URL configured"])
        try:
            _http_url(url)
        except ValueError:
            key = "url_env" if self.url_env else "url_file"
            raise ConfigError([f"{owner}.{key}: the URL read from it must be http(s)://"]) from None
        return url

    def resolve_secret(self) -> str | None:
        """The webhook signing secret from env or file (read now), or None when not configured."""
        owner = f"notify {self.name!r}"
        return _read_secret(
            owner, self.secret_env, self.secret_file, env_key="secret_env", file_key="secret_file"
        )

    def wants(self, target: str, severity: Severity) -> bool:
        """Whether an event of `severity` for `target` goes to this channel."""
        in_scope = self.targets is None or target in self.targets
        return in_scope and severity >= self.min_severity


def _read_secret(
    owner: str,
    env: str | None,
    file: Path | None,
    *,
    env_key: str | None,
    file_key: str,
) -> str | None:
    # env_key None: the env var is an optional source (the API token), not a configured key.
    if env is not None:
        value = os.environ.get(env, "").strip()
        if value:
            return value
        if env_key is not None:  # a configured env var that is missing is an error
            raise ConfigError(
                [f"{owner}.{env_key}: environment variable {env} is not set or empty"]
            )
    if file is None:
        return None
    try:
        text = file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([f"{owner}.{file_key}: cannot read {file}: {reason}"]) from None
    if not text:
        raise ConfigError([f"{owner}.{file_key}: {file} is empty"])
    return text


class Config(_Model):
    """The whole configuration file."""

    daemon: DaemonConfig = Field(default_factory=dict, validate_default=True)
    http: HttpConfig = Field(default_factory=dict, validate_default=True)
    scan: ScanConfig = Field(default_factory=dict, validate_default=True)
    schedule: ScheduleConfig = Field(default_factory=dict, validate_default=True)
    targets: tuple[TargetConfig, ...] = ()
    notify: tuple[NotifyConfig, ...] = ()

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> Config:
        if (info.context or {}).get("cross_checked"):
            return self
        problems = _cross_check(
            {
                "targets": [{"name": t.name} for t in self.targets],
                "notify": [{"name": n.name, "targets": n.targets} for n in self.notify],
            }
        )
        if problems:
            key, _, message = problems[0].partition(": ")
            raise _at(key, message)
        return self

    def target(self, name: str) -> TargetConfig:
        """The target called `name` (KeyError if there is none)."""
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)

    def schedule_for(self, target: TargetConfig) -> ScheduleConfig:
        """`[schedule]` with the target's overrides applied."""
        return target.effective_schedule(self.schedule)

    def scan_for(self, target: TargetConfig) -> ScanConfig:
        """`[scan]` with the target's overrides (rate, concurrency, resolve_after) applied."""
        return target.effective_scan(self.scan)


def _cross_check(raw: Mapping[str, Any]) -> list[str]:
    """Checks across entries (unique names, known targets), tolerant of malformed input."""
    problems: list[str] = []
    if raw.get("targets") in (None, [], ()):
        problems.append("targets: at least one [[targets]] table is required")
    names: dict[str, set[object]] = {}
    for section, kind in (("targets", "target"), ("notify", "notify")):
        seen = names.setdefault(section, set())
        entries = raw.get(section)
        for i, entry in enumerate(entries if isinstance(entries, list | tuple) else ()):
            name = entry.get("name") if isinstance(entry, Mapping) else None
            if isinstance(name, str) and name in seen:
                problems.append(f"{section}[{i}].name: duplicate {kind} name {name!r}")
            seen.add(name)
    channels = raw.get("notify")
    for i, channel in enumerate(channels if isinstance(channels, list | tuple) else ()):
        wanted = channel.get("targets") if isinstance(channel, Mapping) else None
        for j, name in enumerate(wanted if isinstance(wanted, list | tuple) else ()):
            if isinstance(name, str) and name not in names["targets"]:
                problems.append(f"notify[{i}].targets[{j}]: no target named {name!r}")
    return problems


# --- loading and error translation ------------------------------------------------------------

_FIXED_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
    "model_type": "expected a table",
    "dict_type": "expected a table",
    "model_attributes_type": "expected a table",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
}
# Inputs are echoed only for these: they can never hold a secret (URLs are strings).
_ECHO_INPUT = (
    "literal_error",
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
)


def _key_path(loc: Iterable[str | int]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _translate(exc: ValidationError) -> list[str]:
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        ctx = error.get("ctx") or {}
        kind = error["type"]
        if kind == "at_key":
            path = f"{_key_path(loc)}.{ctx['key']}" if loc else ctx["key"]
            lines.append(f"{path}: {ctx['message']}")
            continue
        if kind == "port_spec" and "item" in ctx:
            loc.append(ctx["item"])
        message = _FIXED_MESSAGES.get(kind) or error["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(prefix)
        message = message.replace("Input should be", "must be")
        if kind in _ECHO_INPUT:
            message += f" (got {error['input']!r})"
        lines.append(f"{_key_path(loc)}: {message}")
    return lines


def parse_config(text: str, base_dir: Path, source: str = "<config>") -> Config:
    """Parse TOML text; relative paths are taken relative to `base_dir`. Raises ConfigError."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: invalid TOML: {exc}"]) from None
    problems = _cross_check(raw)
    try:
        config = Config.model_validate(raw, context={"base_dir": base_dir, "cross_checked": True})
    except ValidationError as exc:
        raise ConfigError(_translate(exc) + problems) from None
    if problems:
        raise ConfigError(problems)
    return config


def load_config(path: Path) -> Config:
    """Read and validate a config file. Raises ConfigError (also for a missing file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([f"{path}: cannot read config file: {reason}"]) from None
    return parse_config(text, path.absolute().parent, source=str(path))


# --- warnings ---------------------------------------------------------------------------------

_HAIRPIN = (
    "scanning your own WAN from inside the LAN goes through hairpin NAT and shows the wrong "
    "side; run exposuremon from a vantage point outside the monitored network"
)
_LOCAL_SUFFIXES = (".local", ".lan", ".home.arpa", ".internal", ".localhost")


def host_addresses() -> frozenset[IPAddress]:
    """This host's own addresses, from the kernel's tables (Linux /proc; no network traffic)."""
    found: set[IPAddress] = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
    try:
        last = None
        for line in Path("/proc/net/fib_trie").read_text().splitlines():
            text = line.strip()
            if text.startswith("|-- "):
                last = text[4:]
            elif text.endswith("host LOCAL") and last is not None:
                found.add(ipaddress.ip_address(last))
    except (OSError, ValueError):
        pass
    try:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            fields = line.split()
            if fields and len(fields[0]) == 32:
                found.add(ipaddress.IPv6Address(int(fields[0], 16)))
    except (OSError, ValueError):
        pass
    return frozenset(found)


def _address_warning(target: TargetConfig, own: frozenset[IPAddress]) -> str | None:
    ip = target.ip
    if ip is None:
        name = target.address.removesuffix(".")
        if name == "localhost" or name.endswith(_LOCAL_SUFFIXES):
            return f"{target.address} is a local name"
        if name == socket.gethostname().lower():
            return f"{target.address} is this host's own name"
        return None
    if ip in own:
        return f"{ip} is one of this host's own addresses"
    for attribute, what in (
        ("is_loopback", "a loopback"),
        ("is_link_local", "a link-local"),
        ("is_private", "a private"),
    ):
        if getattr(ip, attribute):
            return f"{ip} is {what} address"
    if not ip.is_global:
        return f"{ip} is not a globally routable address"
    return None


def _secret_warning(owner: str, env: str | None, file: Path | None) -> str | None:
    if env is not None and not os.environ.get(env, "").strip():
        return f"{owner}: environment variable {env} is not set here (the service's may differ)"
    if file is not None and not os.access(file, os.R_OK):
        return f"{owner}: {file} is not readable here (the service's user may differ)"
    return None


def check_warnings(config: Config, own_addresses: Iterable[IPAddress] | None = None) -> list[str]:
    """Problems that do not stop the daemon: inside-view targets, unavailable secrets, exposure."""
    own = frozenset(own_addresses) if own_addresses is not None else host_addresses()
    warnings: list[str] = []
    for i, target in enumerate(config.targets):
        reason = _address_warning(target, own)
        if reason is not None:
            warnings.append(f"targets[{i}].address: {reason}; {_HAIRPIN}")
    for i, channel in enumerate(config.notify):
        for key, env, file in (
            ("url", channel.url_env, channel.url_file),
            ("secret", channel.secret_env, channel.secret_file),
        ):
            suffix = "_env" if env is not None else "_file"
            problem = _secret_warning(f"notify[{i}].{key}{suffix}", env, file)
            if problem is not None:
                warnings.append(problem)
    problem = _secret_warning("http.token_file", None, config.http.token_file)
    if problem is not None:
        warnings.append(problem)
    host = config.http.host
    if host != "localhost" and not _is_loopback(host):
        warnings.append(
            f"http.listen: {config.http.listen} is reachable from other hosts; the status page "
            "and API show which ports are open on your routers, so restrict access to it"
        )
    return warnings


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False
