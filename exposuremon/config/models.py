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
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
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
    split_listen,
)
from exposuremon.detect import TargetPolicy
from exposuremon.model import ScanKind, Severity
from exposuremon.scan import HOT_PORTS, ScanOptions, format_ports


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
    address: Annotated[str, BeforeValidator(parse_address)]
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
            raise key_error(key, message)
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
