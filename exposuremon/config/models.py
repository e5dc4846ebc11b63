"""The daemon's configuration: TOML -> frozen pydantic models, with errors that name the key path.

Every problem is reported as `key.path: problem` (e.g. `targets[2].expected_open: ...`), all at
once, without pydantic's boilerplate. Secrets (webhook URLs, the API token) are never part of a
model's repr or of an error message; env- and file-based secrets are read only when asked for.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    SecretStr,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from exposuremon.config.fields import (
    DEFAULT_FULL,
    DEFAULT_QUICK,
    TOKEN_ENV,
    ConfigError,
    DurationParser,
    EnvName,
    FilePath,
    IPAddress,
    Name,
    NotifyType,
    PortSet,
    ProbeTimeout,
    Rate,
    ScanRate,
    check_store_url,
    key_error,
    lower_text,
    parse_address,
    parse_http_url,
    parse_jitter,
    parse_listen,
    parse_public_url,
    parse_rate,
    parse_secret_url,
    parse_severity,
    parse_share,
    parse_store_url,
    parse_target_address,
    split_listen,
)
from exposuremon.config.ranges import check_names, is_range, member_name, members, parse_range
from exposuremon.config.targets_file import parse_targets_csv, read_targets_file
from exposuremon.detect import TargetPolicy
from exposuremon.flap import FlapPolicy
from exposuremon.model import ScanKind, Severity
from exposuremon.scan import HOT_PORTS, ScanOptions, format_ports
from exposuremon.schedule import MaintenanceWindow, OneOff, Recurring, parse_cron, parse_zone


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Bounded field types (docs/config.md and config.example.toml state each bound). A scan kind's
# jobs never overlap (max_instances=1), so an interval shorter than its scan runs them back to
# back; the floors keep a typo ("1ms") from becoming 200 scans and 400 log lines a second.
SentinelInterval = Annotated[
    float, BeforeValidator(DurationParser(1.0, why="more often floods the router and the log"))
]
QuickInterval = Annotated[
    float, BeforeValidator(DurationParser(1.0, why="quick scans would run back to back"))
]
FullInterval = Annotated[
    float,
    BeforeValidator(DurationParser(60.0, why="a full scan of 65535 ports would run back to back")),
]
FingerprintTimeout = Annotated[
    float, BeforeValidator(DurationParser(0.1, 60.0, why="too short for a TLS handshake"))
]
# Pruning runs hourly: a shorter history would drop events before anyone reads them.
Retention = Annotated[
    float,
    BeforeValidator(DurationParser(86400.0, why="shorter drops events before anyone reads them")),
]
RetryHorizon = Annotated[
    float, BeforeValidator(DurationParser(1.0, why="a failed message would get no retry"))
]
# Reminders stop after remind_max, so a short period cannot flood (tests remind every 200ms).
RemindEvery = Annotated[float, BeforeValidator(DurationParser(0.1))]
Concurrency = Annotated[StrictInt, Field(ge=1, le=65535)]
FlapWindow = Annotated[
    float, BeforeValidator(DurationParser(1.0, 7 * 86400.0, why="no two scans fit in it"))
]
ResolveAfter = Annotated[StrictInt, Field(ge=1, le=100)]


# --- sections ---------------------------------------------------------------------------------


class DaemonConfig(_Model):
    """`[daemon]`: where state lives and how the daemon logs."""

    state_dir: FilePath = Field(default=Path("state"), validate_default=True)
    log_format: Literal["console", "json"] = "console"
    log_level: Annotated[
        Literal["debug", "info", "warning", "error", "critical"], BeforeValidator(lower_text)
    ] = "info"
    retention: Retention = 90 * 86400.0
    advisories_file: FilePath | None = None
    targets_file: FilePath | None = None


def _allowed_host(value: object) -> str:
    # One name as a Host header carries it, minus the port: the server compares names
    # lower-cased, without a trailing dot, and addresses in their canonical form.
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return parse_address(value.strip().removesuffix("."))


class HttpConfig(_Model):
    """`[http]`: the status page, API and metrics listener."""

    listen: Annotated[str, BeforeValidator(parse_listen)] = "127.0.0.1:9810"
    token_file: FilePath | None = None
    public_url: Annotated[str, BeforeValidator(parse_public_url)] | None = None
    allowed_hosts: tuple[Annotated[str, BeforeValidator(_allowed_host)], ...] = ()

    @property
    def host(self) -> str:
        """Host part of `listen`, without IPv6 brackets."""
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        """Port part of `listen`."""
        return split_listen(self.listen)[1]

    def api_token(self) -> str | None:
        """The API token from env EXPOSUREMON_API_TOKEN, else token_file (read now), else None."""
        return _read_secret("http", TOKEN_ENV, self.token_file, env_key=None, file_key="token_file")


class ScanOverride(_Model):
    """`[targets.scan]`: per-target overrides of `[scan]`."""

    rate: ScanRate | None = None
    concurrency: Concurrency | None = None
    resolve_after: ResolveAfter | None = None


class ScanConfig(_Model):
    """`[scan]`: probing, confirmation and detection tuning."""

    concurrency: Concurrency = 1024
    rate: ScanRate | None = None
    timeout_min: ProbeTimeout = 0.1
    timeout_max: ProbeTimeout = 1.25
    timeout_initial: ProbeTimeout = 0.5
    retries: Annotated[StrictInt, Field(ge=0, le=10)] = 1
    max_concurrent_scans: Annotated[StrictInt, Field(ge=1, le=1024)] = 16
    confirm: StrictBool = True
    fingerprint: StrictBool = True
    fingerprint_timeout: FingerprintTimeout = 3.0
    resolve_after: ResolveAfter = 2
    anomaly_share: Annotated[float, BeforeValidator(parse_share)] = 0.5
    anomaly_min_ports: Annotated[StrictInt, Field(ge=1, le=65535)] = 50
    flap_threshold: Annotated[StrictInt, Field(ge=2, le=1000)] = 4
    flap_window: FlapWindow = 600.0
    flap_settle: Annotated[StrictInt, Field(ge=1, le=1000)] = 5

    @model_validator(mode="after")
    def _timeouts_ordered(self) -> ScanConfig:
        if self.timeout_min > self.timeout_max:
            raise key_error("timeout_max", f"must not be below timeout_min ({self.timeout_min:g}s)")
        if not self.timeout_min <= self.timeout_initial <= self.timeout_max:
            raise key_error(
                "timeout_initial",
                f"must lie between timeout_min ({self.timeout_min:g}s) "
                f"and timeout_max ({self.timeout_max:g}s)",
            )
        return self

    def with_override(self, override: ScanOverride) -> ScanConfig:
        """This section with a target's `[targets.scan]` values applied."""
        return self.model_copy(update=override.model_dump(exclude_none=True))

    def flap_policy(self) -> FlapPolicy:
        """Flap damping's thresholds under these settings."""
        return FlapPolicy(self.flap_threshold, self.flap_window, self.flap_settle)

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

    sentinel: SentinelInterval | None = None
    quick: QuickInterval | None = None
    full: FullInterval | None = None
    jitter: Annotated[float, BeforeValidator(parse_jitter)] | None = None


class ScheduleConfig(_Model):
    """`[schedule]`: how often each scan kind runs, and the random jitter applied."""

    sentinel: SentinelInterval = 30.0
    quick: QuickInterval = 15 * 60.0
    full: FullInterval = 24 * 3600.0
    jitter: Annotated[float, BeforeValidator(parse_jitter)] = 0.1

    def interval(self, kind: ScanKind) -> float:
        """Seconds between scans of `kind`."""
        return float(getattr(self, kind.value))

    def with_override(self, override: ScheduleOverride) -> ScheduleConfig:
        """This schedule with a target's `[targets.schedule]` values applied."""
        return self.model_copy(update=override.model_dump(exclude_none=True))


class TargetConfig(_Model):
    """`[[targets]]`: one monitored address and its policy."""

    name: Name
    # An IP address, a hostname, or a CIDR range that Config expands (config/ranges.py).
    address: Annotated[str, BeforeValidator(parse_target_address)]
    expected_open: PortSet = frozenset()
    ignore: PortSet = frozenset()
    # Left out of repr: tens of thousands of ports would drown every log line.
    ports_quick: PortSet = Field(default=DEFAULT_QUICK, repr=False)
    ports_full: PortSet = Field(default=DEFAULT_FULL, repr=False)
    schedule: ScheduleOverride = ScheduleOverride()
    scan: ScanOverride = ScanOverride()
    # Where the entry was written: `targets[2]` or `targets.csv:7` (for messages), and the
    # range it was expanded from with the entry's name (None: a single address). Not keys of
    # the file.
    _origin: str = PrivateAttr(default="")
    _range: tuple[str, str] | None = PrivateAttr(default=None)

    @property
    def origin(self) -> str:
        """Where this target's entry is written: `targets[2]`, or `FILE:LINE` of a targets file."""
        return self._origin

    @property
    def from_range(self) -> str | None:
        """The CIDR range this target was expanded from, or None."""
        return None if self._range is None else self._range[0]

    @property
    def range_name(self) -> str | None:
        """The name of the range entry this target was expanded from (`shop`), or None."""
        return None if self._range is None else self._range[1]

    @model_validator(mode="after")
    def _policy_consistent(self) -> TargetConfig:
        both = self.expected_open & self.ignore
        if both:
            raise key_error("ignore", f"ports {format_ports(both)} are also in expected_open")
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

    def policy(self, scan: ScanConfig) -> TargetPolicy:
        """The detection policy for this target under the global `[scan]` thresholds."""
        effective = self.effective_scan(scan)
        return TargetPolicy(
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
    url: Annotated[SecretStr, BeforeValidator(parse_secret_url)] | None = Field(
        default=None, repr=False
    )
    url_env: EnvName | None = None
    url_file: FilePath | None = None
    secret_env: EnvName | None = None
    secret_file: FilePath | None = None
    min_severity: Annotated[Severity, BeforeValidator(parse_severity)] = Severity.WARNING
    targets: tuple[StrictStr, ...] | None = None
    # Delivery (notify/notifier.py): messages per period (default per type), how long a failing
    # message is retried, and reminders of open critical findings (off unless remind_every).
    rate: Annotated[Rate, PlainValidator(parse_rate), PlainSerializer(str)] | None = None
    retry_horizon: RetryHorizon = 24 * 3600.0
    remind_every: RemindEvery | None = None
    remind_max: Annotated[StrictInt, Field(ge=1, le=100)] = 3

    @model_validator(mode="after")
    def _sources(self) -> NotifyConfig:
        if not _url_sources(self):
            raise key_error("url", "one of url, url_env or url_file is required")
        secret = [k for k in ("secret_env", "secret_file") if getattr(self, k) is not None]
        if secret and self.type != "webhook":
            raise key_error(secret[0], "only type 'webhook' signs its requests")
        if len(secret) > 1:
            raise key_error(secret[1], "set only one of secret_env, secret_file")
        if self.targets is not None and not self.targets:
            raise key_error("targets", "empty list; leave the key out to notify for every target")
        return self

    def resolve_url(self) -> str:
        """The webhook URL, read from the config, env or file now; ConfigError if unavailable."""
        url = _resolve_url(f"notify {self.name!r}", self, _http_url)
        if url is None:  # unreachable: the validator demands one source
            raise ConfigError([f"notify {self.name!r}.url: no URL configured"])
        return url

    def resolve_secret(self) -> str | None:
        """The webhook signing secret from env or file (read now), or None when not configured."""
        owner = f"notify {self.name!r}"
        return _read_secret(
            owner, self.secret_env, self.secret_file, env_key="secret_env", file_key="secret_file"
        )

    def wants(self, target: str | None, severity: Severity) -> bool:
        """Whether an event of `severity` for `target` goes to this channel (None: a vantage's
        event, which concerns every target, so every channel's scope)."""
        in_scope = self.targets is None or target is None or target in self.targets
        return in_scope and severity >= self.min_severity


class _UrlSources(Protocol):
    """A table with a secret URL given one of three ways."""

    @property
    def url(self) -> SecretStr | None: ...
    @property
    def url_env(self) -> str | None: ...
    @property
    def url_file(self) -> Path | None: ...


def _url_sources(model: _UrlSources) -> list[str]:
    """Which of url, url_env, url_file are set; a key error when more than one is."""
    given = [k for k in ("url", "url_env", "url_file") if getattr(model, k) is not None]
    if len(given) > 1:
        raise key_error(given[1], f"set only one of url, url_env, url_file (also has {given[0]})")
    return given


def _resolve_url(owner: str, model: _UrlSources, check: Callable[[str], object]) -> str | None:
    """The URL from the config, or read from env or file now and checked; None if none is set.

    `check` raises ValueError on a bad URL; its message must not echo the URL (a secret).
    """
    if model.url is not None:
        return model.url.get_secret_value()
    url = _read_secret(owner, model.url_env, model.url_file, env_key="url_env", file_key="url_file")
    if url is None:
        return None
    try:
        check(url)
    except ValueError as exc:
        key = "url_env" if model.url_env else "url_file"
        raise ConfigError([f"{owner}.{key}: the URL read from it {_must(exc)}"]) from None
    return url


def _http_url(url: str) -> None:
    try:
        parse_http_url(url)
    except ValueError:
        raise ValueError("must be http(s)://") from None


def _must(exc: ValueError) -> str:
    # "must be an http:// URL" reads on after "the URL read from it"; others get a colon.
    text = str(exc)
    return text if text.startswith("must ") else f"is wrong: {text}"


class StoreConfig(_Model):
    """`[store]`: the database. None of url, url_env, url_file: SQLite under [daemon] state_dir.

    The URL is a secret (it may hold a password): never in a repr, an error or a log line.
    """

    url: Annotated[SecretStr, BeforeValidator(parse_store_url)] | None = Field(
        default=None, repr=False
    )
    url_env: EnvName | None = None
    url_file: FilePath | None = None

    @model_validator(mode="after")
    def _sources(self) -> StoreConfig:
        _url_sources(self)
        return self

    def resolve_url(self) -> str | None:
        """The database URL, read from the config, env or file now; None for the default
        (SQLite under state_dir). ConfigError naming the key if it cannot be read."""
        return _resolve_url("store", self, check_store_url)


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


class _SilenceShare:
    """A share in (0, 1]; `describe` for docs/config.md."""

    def __call__(self, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("expected a number like 0.5")
        if not 0 < value <= 1:  # NaN fails this too
            raise ValueError(f"must be a share in (0, 1], got {value!r}")
        return float(value)

    def describe(self) -> str:
        return "share in (0, 1]"


# A lease renewed every third of it must survive a database hiccup (a failover, a vacuum
# stall) and must not leave a dead node's targets unscanned for long.
LeaseTtl = Annotated[
    float,
    BeforeValidator(DurationParser(3.0, 600.0, why="a database hiccup would move every shard")),
]


class FleetConfig(_Model):
    """`[fleet]`: this node's name and vantage in a fleet sharing one PostgreSQL database."""

    node: Name | None = None  # None: the host name (`node_name`)
    vantage: Name = "default"
    lease_ttl: LeaseTtl = 15.0
    vantage_silence_share: Annotated[float, BeforeValidator(_SilenceShare())] = 0.5
    # Vantage health is judged only with at least this many answering targets: with one or
    # two routers, a silence is the router's (a reboot stays a reboot).
    vantage_min_targets: Annotated[StrictInt, Field(ge=2, le=1_000_000)] = 3

    @property
    def node_name(self) -> str:
        """`node`, or this host's name made a valid one (A-Z a-z 0-9 . _ -, at most 64)."""
        if self.node is not None:
            return self.node
        host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:64]
        return host or "node"


ADVISORY_FIELDS = ("banner", "http_server", "http_title", "tls_subject", "tls_issuer")


class AdvisoryConfig(_Model):
    """`[[advisories]]`: known-bad firmware, recognised by regexes over fingerprint fields."""

    name: Name
    severity: Annotated[Severity, BeforeValidator(parse_severity)] = Severity.WARNING
    match: dict[StrictStr, StrictStr]
    ports: PortSet | None = None
    text: StrictStr
    url: Annotated[str, BeforeValidator(parse_http_url)] | None = None

    @model_validator(mode="after")
    def _patterns_compile(self) -> AdvisoryConfig:
        # Checked here, at load: a typo in a pattern must not surface at the first scan.
        if not self.match:
            raise key_error("match", f"rule {self.name!r}: give at least one field to match")
        for field, pattern in self.match.items():
            if field not in ADVISORY_FIELDS:
                known = ", ".join(ADVISORY_FIELDS)
                raise key_error(
                    f"match.{field}", f"rule {self.name!r}: unknown field (use one of {known})"
                )
            try:
                re.compile(pattern)
            except re.error as exc:
                raise key_error(
                    f"match.{field}", f"rule {self.name!r}: invalid regular expression: {exc}"
                ) from None
        return self

    def patterns(self) -> dict[str, re.Pattern[str]]:
        """The compiled patterns by fingerprint field."""
        return {field: re.compile(pattern) for field, pattern in self.match.items()}


class _AdvisoriesFile(_Model):
    """The file `[daemon] advisories_file` names: `[[advisories]]` tables only."""

    advisories: tuple[AdvisoryConfig, ...] = ()


def parse_rfc3339(value: object) -> dt.datetime:
    """An RFC 3339 time with its UTC offset: a TOML offset date-time or a string."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"expected an RFC 3339 time like '2026-12-05T22:00:00+01:00', got {value!r}"
            ) from None
    if not isinstance(value, dt.datetime):
        raise ValueError(
            f"expected an RFC 3339 time like '2026-12-05T22:00:00+01:00', got {value!r}"
        )
    if value.tzinfo is None:
        raise ValueError(f"needs a UTC offset ('Z' or '+01:00'), got {value.isoformat()!r}")
    return value


def _cron(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a crontab expression like '0 2 * * SUN'")
    parse_cron(value)
    return value


def _zone_name(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a time zone name like 'Europe/Berlin'")
    parse_zone(value)
    return value


MaintenanceTime = Annotated[dt.datetime, BeforeValidator(parse_rfc3339)]
MaintenanceDuration = Annotated[
    float, BeforeValidator(DurationParser(60.0, 7 * 86400.0, why="shorter than one scan"))
]
_ONE_OFF = ("start", "end")
_RECURRING = ("cron", "duration", "timezone")


class MaintenanceConfig(_Model):
    """`[[maintenance]]`: a window in which events are recorded but notifications held back.

    One-off (`start` and `end`) or recurring (`cron`, `duration`, `timezone`); at its end one
    summary per target goes out with what is still true (schedule/maintenance.py).
    """

    targets: tuple[StrictStr, ...] | None = None
    start: MaintenanceTime | None = None
    end: MaintenanceTime | None = None
    cron: Annotated[str, BeforeValidator(_cron)] | None = None
    duration: MaintenanceDuration | None = None
    timezone: Annotated[str, BeforeValidator(_zone_name)] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> MaintenanceConfig:
        once = [k for k in _ONE_OFF if getattr(self, k) is not None]
        again = [k for k in _RECURRING if getattr(self, k) is not None]
        if once and again:
            raise key_error(
                again[0],
                f"a window has either {' and '.join(_ONE_OFF)} "
                f"or {', '.join(_RECURRING)}, not both (start is set)",
            )
        if not once and not again:
            raise key_error("start", "set start and end, or cron, duration and timezone")
        missing = [k for k in (_ONE_OFF if once else _RECURRING) if getattr(self, k) is None]
        if missing:
            raise key_error(missing[0], "required key is missing")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise key_error(
                "end",
                f"must be after start (start {self.start.isoformat()!r}, "
                f"end {self.end.isoformat()!r})",
            )
        if self.targets is not None and not self.targets:
            raise key_error("targets", "empty list; leave the key out for every target")
        if self.cron is not None and self.duration is not None:
            try:
                Recurring(self.cron, dt.timedelta(seconds=self.duration), self.timezone or "UTC")
            except ValueError as exc:
                raise key_error("duration", f"{exc} (cron {self.cron!r})") from None
        return self

    def window(self, index: int) -> MaintenanceWindow:
        """The window of the `index`-th `[[maintenance]]` table (key `config/<index>`)."""
        schedule: OneOff | Recurring
        if self.start is not None and self.end is not None:
            schedule = OneOff(self.start.astimezone(dt.UTC), self.end.astimezone(dt.UTC))
        else:
            assert self.cron is not None  # the validator demands cron and duration
            assert self.duration is not None
            schedule = Recurring(
                self.cron, dt.timedelta(seconds=self.duration), self.timezone or "UTC"
            )
        targets = None if self.targets is None else frozenset(self.targets)
        return MaintenanceWindow(f"config/{index}", schedule, targets)


class Config(_Model):
    """The whole configuration file."""

    daemon: DaemonConfig = Field(default_factory=dict, validate_default=True)
    http: HttpConfig = Field(default_factory=dict, validate_default=True)
    scan: ScanConfig = Field(default_factory=dict, validate_default=True)
    schedule: ScheduleConfig = Field(default_factory=dict, validate_default=True)
    store: StoreConfig = Field(default_factory=dict, validate_default=True)
    fleet: FleetConfig = Field(default_factory=dict, validate_default=True)
    targets: tuple[TargetConfig, ...] = ()
    notify: tuple[NotifyConfig, ...] = ()
    advisories: tuple[AdvisoryConfig, ...] = ()
    maintenance: tuple[MaintenanceConfig, ...] = ()

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> Config:
        if (info.context or {}).get("cross_checked"):
            return self
        problems = _cross_check(
            {
                "targets": [{"name": t.name, "address": t.address} for t in self.targets],
                "notify": [{"name": n.name, "targets": n.targets} for n in self.notify],
                "maintenance": [{"targets": m.targets} for m in self.maintenance],
            }
        )
        if problems:
            key, _, message = problems[0].partition(": ")
            raise key_error(key, message)
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _expand_ranges(cls, data: Any, handler: ModelWrapValidatorHandler[Config]) -> Config:
        # Runs around validation: the entries are checked as written (errors name their key
        # path), then every range becomes one target per address, so nothing past the config
        # ever sees a range.
        config = handler(data)
        for i, target in enumerate(config.targets):
            if not target.origin:
                target._origin = f"targets[{i}]"
        if not any(is_range(t.address) for t in config.targets):
            return config
        targets, members_of = _expand(config.targets)
        notify = tuple(
            _targets_expanded(f"notify[{i}]", n, targets, members_of)
            for i, n in enumerate(config.notify)
        )
        maintenance = tuple(
            _targets_expanded(f"maintenance[{i}]", m, targets, members_of)
            for i, m in enumerate(config.maintenance)
        )
        update = {"targets": targets, "notify": notify, "maintenance": maintenance}
        return config.model_copy(update=update)

    def maintenance_windows(self) -> tuple[MaintenanceWindow, ...]:
        """The `[[maintenance]]` windows (the API's and the CLI's are in the store)."""
        return tuple(m.window(i) for i, m in enumerate(self.maintenance))

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


def entry_key(origin: str, key: str) -> str:
    """The key path of `key` in an entry: `targets[2].address`, or `targets.csv:7: address`."""
    return f"{origin}.{key}" if origin.endswith("]") else f"{origin}: {key}"


def _expand(
    entries: tuple[TargetConfig, ...],
) -> tuple[tuple[TargetConfig, ...], dict[str, tuple[str, ...]]]:
    """The targets with each range replaced by its addresses' targets, and each range entry's
    name -> its targets' names. A name made twice is an error that names both entries."""
    taken = {t.name: t.origin for t in entries if not is_range(t.address)}
    targets: list[TargetConfig] = []
    members_of: dict[str, tuple[str, ...]] = {}
    for entry in entries:
        if not is_range(entry.address):
            targets.append(entry)
            continue
        network = parse_range(entry.address)
        try:
            check_names(entry.name, network)
        except ValueError as exc:
            raise key_error(entry_key(entry.origin, "name"), str(exc)) from None
        names = []
        for address in members(network):
            name = member_name(entry.name, address)
            if name in taken:
                raise key_error(
                    entry_key(entry.origin, "address"),
                    f"range {network} makes target {name!r}, a name {taken[name]} has already",
                )
            taken[name] = f"{entry.origin} ({network})"
            member = entry.model_copy(update={"name": name, "address": address})
            member._range = (str(network), entry.name)
            targets.append(member)
            names.append(name)
        members_of[entry.name] = tuple(names)
    return tuple(targets), members_of


_Entry = TypeVar("_Entry", "NotifyConfig", "MaintenanceConfig")


def _targets_expanded(
    where: str,
    entry: _Entry,
    targets: tuple[TargetConfig, ...],
    members_of: Mapping[str, tuple[str, ...]],
) -> _Entry:
    """A channel's or window's `targets` with a range entry's name standing for all of its
    targets (`where`: the entry's key path, for errors)."""
    if entry.targets is None:
        return entry
    known = {t.name for t in targets}
    wanted: list[str] = []
    for j, name in enumerate(entry.targets):
        if name in members_of:
            wanted += members_of[name]
        elif name in known:
            wanted.append(name)
        else:
            raise key_error(f"{where}.targets[{j}]", f"no target named {name!r}")
    return entry.model_copy(update={"targets": tuple(dict.fromkeys(wanted))})


def _cross_check(raw: Mapping[str, Any], extra: Iterable[TargetConfig] = ()) -> list[str]:
    """Checks across entries (unique names, known targets), tolerant of malformed input.

    `extra`: the targets of a targets file, which may not reuse a name of the config file.
    A channel may name a range entry or one of its targets (`NAME-ADDRESS`; the expansion
    checks those exactly).
    """
    problems: list[str] = []
    extra = list(extra)
    if raw.get("targets") in (None, [], ()) and not extra:
        problems.append("targets: at least one [[targets]] table is required")
    names: dict[str, set[object]] = {}
    for section, kind in (("targets", "target"), ("notify", "notify"), ("advisories", "advisory")):
        seen = names.setdefault(section, set())
        entries = raw.get(section)
        for i, entry in enumerate(entries if isinstance(entries, list | tuple) else ()):
            name = entry.get("name") if isinstance(entry, Mapping) else None
            if isinstance(name, str) and name in seen:
                problems.append(f"{section}[{i}].name: duplicate {kind} name {name!r}")
            seen.add(name)
    in_toml = {
        entry.get("name"): i
        for i, entry in enumerate(_entries(raw.get("targets")))
        if isinstance(entry, Mapping)
    }
    in_file: dict[str, str] = {}
    for target in extra:
        if target.name in in_toml:
            problems.append(
                f"{entry_key(target.origin, 'name')}: target name {target.name!r} is also "
                f"targets[{in_toml[target.name]}] of the config file"
            )
        elif target.name in in_file:
            problems.append(
                f"{entry_key(target.origin, 'name')}: duplicate target name {target.name!r} "
                f"(also {in_file[target.name]})"
            )
        in_file.setdefault(target.name, target.origin)
        names["targets"].add(target.name)
    ranges = [
        entry.get("name")
        for entry in [
            *_entries(raw.get("targets")),
            *({"name": t.name, "address": t.address} for t in extra),
        ]
        if isinstance(entry, Mapping)
        and isinstance(entry.get("address"), str)
        and is_range(entry["address"])
    ]
    # A channel or a maintenance window may name a range entry or one of its targets.
    for section in ("notify", "maintenance"):
        entries = raw.get(section)
        for i, entry in enumerate(entries if isinstance(entries, list | tuple) else ()):
            wanted = entry.get("targets") if isinstance(entry, Mapping) else None
            for j, name in enumerate(wanted if isinstance(wanted, list | tuple) else ()):
                if not isinstance(name, str) or name in names["targets"]:
                    continue
                if not any(isinstance(r, str) and name.startswith(f"{r}-") for r in ranges):
                    problems.append(f"{section}[{i}].targets[{j}]: no target named {name!r}")
    return problems


def _entries(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else []


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
    extra, problems = _file_targets(raw, base_dir)
    problems += _cross_check(raw, extra)
    if extra and isinstance(raw.get("targets", []), list):
        raw["targets"] = [*raw.get("targets", []), *extra]
    try:
        config = Config.model_validate(raw, context={"base_dir": base_dir, "cross_checked": True})
    except ValidationError as exc:
        raise ConfigError(_translate(exc) + problems) from None
    if problems:
        raise ConfigError(problems)
    if config.daemon.advisories_file is not None:
        config = _with_advisories_file(config, config.daemon.advisories_file)
    return config


def _with_advisories_file(config: Config, path: Path) -> Config:
    """`config` with the `[[advisories]]` of the file `[daemon] advisories_file` names added.

    Errors name the file and the rule's key path within it; a rule name used in both places
    is an error.
    """
    where = f"daemon.advisories_file ({path})"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([f"{where}: cannot read: {reason}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{where}: invalid TOML: {exc}"]) from None
    try:
        extra = _AdvisoriesFile.model_validate(raw, context={"base_dir": path.parent}).advisories
    except ValidationError as exc:
        raise ConfigError([f"{where}: {line}" for line in _translate(exc)]) from None
    names = {rule.name for rule in config.advisories}
    problems = [
        f"{where}: advisories[{i}].name: rule {rule.name!r} is also in the config file"
        for i, rule in enumerate(extra)
        if rule.name in names
    ]
    problems += _cross_check({"targets": [{}], "advisories": [{"name": r.name} for r in extra]})
    if problems:
        raise ConfigError([p if p.startswith(where) else f"{where}: {p}" for p in problems])
    return config.model_copy(update={"advisories": config.advisories + extra})


def _file_targets(raw: Mapping[str, Any], base_dir: Path) -> tuple[list[TargetConfig], list[str]]:
    """The targets of `[daemon] targets_file` (read now), and the problems with its lines.

    A key of the wrong type is left to the model's checks, which report it by its path.
    """
    daemon = raw.get("daemon")
    value = daemon.get("targets_file") if isinstance(daemon, Mapping) else None
    if not isinstance(value, str) or not value:
        return [], []
    path = Path(value) if Path(value).is_absolute() else base_dir / value
    try:
        text = read_targets_file(path)
    except (OSError, UnicodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return [], [f"daemon.targets_file: cannot read {path}: {reason}"]
    rows, problems = parse_targets_csv(text, value)
    targets: list[TargetConfig] = []
    for row in rows:
        origin = f"{value}:{row.line}"
        try:
            target = TargetConfig.model_validate(row.fields, context={"base_dir": base_dir})
        except ValidationError as exc:
            problems += [f"{origin}: {line}" for line in _translate(exc)]
            continue
        target._origin = origin
        targets.append(target)
    return targets, problems


def load_config(path: Path) -> Config:
    """Read and validate a config file. Raises ConfigError (also for a missing file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([f"{path}: cannot read config file: {reason}"]) from None
    return parse_config(text, path.absolute().parent, source=str(path))
