"""Configuration: frozen pydantic models read from TOML, with errors that name the key path.

`models` holds the models and `load_config`, `fields` the field parsers, `checks` the warnings
`check-config` prints, and `reference` generates docs/config.md
(`python -m exposuremon.config.reference`).
"""

from __future__ import annotations

from exposuremon.config.checks import check_warnings
from exposuremon.config.fields import (
    DEFAULT_FULL,
    DEFAULT_QUICK,
    NOTIFY_TYPES,
    TOKEN_ENV,
    ConfigError,
    IPAddress,
    Rate,
    parse_rate,
)
from exposuremon.config.models import (
    ADVISORY_FIELDS,
    AdvisoryConfig,
    Config,
    DaemonConfig,
    FleetConfig,
    HttpConfig,
    NotifyConfig,
    ScanConfig,
    ScanOverride,
    ScheduleConfig,
    ScheduleOverride,
    StoreConfig,
    TargetConfig,
    load_config,
    parse_config,
)

__all__ = [
    "ADVISORY_FIELDS",
    "DEFAULT_FULL",
    "DEFAULT_QUICK",
    "NOTIFY_TYPES",
    "TOKEN_ENV",
    "AdvisoryConfig",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "FleetConfig",
    "HttpConfig",
    "IPAddress",
    "NotifyConfig",
    "Rate",
    "ScanConfig",
    "ScanOverride",
    "ScheduleConfig",
    "ScheduleOverride",
    "StoreConfig",
    "TargetConfig",
    "check_warnings",
    "load_config",
    "parse_config",
    "parse_rate",
]
