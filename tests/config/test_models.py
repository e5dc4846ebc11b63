"""Configuration: TOML -> frozen models, key-path errors, secrets, warnings, the example file."""

from __future__ import annotations

import ipaddress
import re
import typing
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from exposuremon.config.checks import check_warnings, host_addresses
from exposuremon.config.fields import DEFAULT_FULL, TOKEN_ENV, ConfigError, Rate
from exposuremon.config.models import (
    Config,
    load_config,
    parse_config,
)
from exposuremon.model import ScanKind, Severity
from exposuremon.scan.ports import HOT_PORTS, TOP1000_PORTS, format_ports

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"
BASE = Path("/srv/exposuremon")
TARGET = '[[targets]]\nname = "r1"\naddress = "192.0.2.1"\n'

FULL = """
[daemon]
state_dir = "/var/lib/exposuremon"
log_format = "json"
log_level = "DEBUG"
retention = "30d"

[http]
listen = "0.0.0.0:8080"
token_file = "token"
public_url = "https://mon.example.net/"

[scan]
concurrency = 200
rate = 50
timeout_min = "50ms"
timeout_max = "2s"
timeout_initial = "1s"
retries = 3
max_concurrent_scans = 4
confirm = false
fingerprint = false
fingerprint_timeout = "5s"
resolve_after = 4
anomaly_share = 0.8
anomaly_min_ports = 100

[schedule]
sentinel = "1m"
quick = "30m"
full = "48h"
jitter = "20%"

[[targets]]
name = "office"
address = "Router.Example.NET"
expected_open = [443, "8080-8082"]
ignore = "22"
ports_quick = "hot"
ports_full = "1-1024"
[targets.schedule]
sentinel = "10s"
[targets.scan]
rate = 5.5
concurrency = 16
resolve_after = 1

[[targets]]
name = "surgery"
address = "[2001:DB8::7]"

[[notify]]
name = "ops"
type = "webhook"
url_file = "hook-url"
secret_env = "HOOK_SECRET"
min_severity = "critical"
targets = ["surgery"]
"""


def errors_of(text: str) -> list[str]:
    """The error lines parse_config reports for `text`."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, BASE)
    return info.value.errors


def test_full_config_round_trip() -> None:
    """Every key of a full config lands in the model, parsed into seconds, sets and paths."""
    config = parse_config(FULL, BASE)
    assert config.daemon.state_dir == Path("/var/lib/exposuremon")
    assert (config.daemon.log_format, config.daemon.log_level) == ("json", "debug")
    assert config.daemon.retention == 30 * 86400
    assert (config.http.host, config.http.port) == ("0.0.0.0", 8080)
    assert config.http.token_file == BASE / "token"
    assert config.http.public_url == "https://mon.example.net"
    scan = config.scan
    assert (scan.concurrency, scan.rate, scan.retries, scan.max_concurrent_scans) == (200, 50, 3, 4)
    assert (scan.timeout_min, scan.timeout_max, scan.timeout_initial) == (0.05, 2.0, 1.0)
    assert (scan.confirm, scan.fingerprint, scan.fingerprint_timeout) == (False, False, 5.0)
    assert (scan.resolve_after, scan.anomaly_share, scan.anomaly_min_ports) == (4, 0.8, 100)
    assert config.schedule.model_dump() == {
        "sentinel": 60.0,
        "quick": 1800.0,
        "full": 172800.0,
        "jitter": 0.2,
    }
    office, surgery = config.targets
    assert office.address == "router.example.net"
    assert office.ip is None
    assert office.expected_open == {443, 8080, 8081, 8082}
    assert office.ignore == {22}
    assert office.ports_quick == HOT_PORTS
    assert office.ports_full == set(range(1, 1025))
    assert surgery.address == "2001:db8::7"
    assert surgery.ip == ipaddress.ip_address("2001:db8::7")
    (ops,) = config.notify
    assert ops.type == "webhook"
    assert ops.url is None
    assert ops.url_file == BASE / "hook-url"
    assert ops.min_severity is Severity.CRITICAL
    assert ops.targets == ("surgery",)
    assert config.target("surgery") is surgery
    with pytest.raises(KeyError):
        config.target("nope")


def test_defaults() -> None:
    """A config with only a target gets every documented default."""
    config = parse_config(TARGET, BASE)
    assert config.daemon.state_dir == BASE / "state"
    assert (config.daemon.log_format, config.daemon.log_level) == ("console", "info")
    assert config.daemon.retention == 90 * 86400
    assert config.http.listen == "127.0.0.1:9810"
    assert config.http.token_file is None
    assert config.http.public_url is None
    assert config.scan.model_dump() == {
        "concurrency": 1024,
        "rate": None,
        "timeout_min": 0.1,
        "timeout_max": 1.25,
        "timeout_initial": 0.5,
        "retries": 1,
        "max_concurrent_scans": 16,
        "confirm": True,
        "fingerprint": True,
        "fingerprint_timeout": 3.0,
        "resolve_after": 2,
        "anomaly_share": 0.5,
        "anomaly_min_ports": 50,
        "flap_threshold": 4,
        "flap_window": 600.0,
        "flap_settle": 5,
    }
    assert config.advisories == ()
    assert config.daemon.advisories_file is None
    assert config.schedule.model_dump() == {
        "sentinel": 30.0,
        "quick": 900.0,
        "full": 86400.0,
        "jitter": 0.1,
    }
    (target,) = config.targets
    assert target.expected_open == frozenset()
    assert target.ignore == frozenset()
    assert target.ports_quick == TOP1000_PORTS | HOT_PORTS
    assert target.ports_full == set(range(1, 65536))
    assert config.notify == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            TARGET
            + TARGET.replace("r1", "r2")
            + TARGET.replace("r1", "r3")
            + 'expected_open = "443,70000"\n',
            "targets[2].expected_open: bad port spec token '70000': port 70000 out of range "
            "(1-65535)",
        ),
        (
            TARGET + "expected_open = [443, 70000]\n",
            "targets[0].expected_open[1]: bad port spec token '70000': port 70000 out of range "
            "(1-65535)",
        ),
        (
            TARGET + 'ignore = [443, "80-x"]\n',
            "targets[0].ignore[1]: bad port spec token '80-x': 'x' is not a port number",
        ),
        (
            TARGET + "ignore = [true]\n",
            "targets[0].ignore[0]: expected a port number or a spec string",
        ),
        (
            TARGET + 'ports_full = ""\n',
            "targets[0].ports_full: empty port spec",
        ),
        (
            '[schedule]\nsentinel = "soon"\n' + TARGET,
            "schedule.sentinel: not a duration: 'soon' (use a number with ms, s, m, h or d, "
            "e.g. '30s')",
        ),
        (
            '[schedule]\nquick = "0s"\n' + TARGET,
            "schedule.quick: must be at least 1s (quick scans would run back to back), got '0s'",
        ),
        (
            '[schedule]\njitter = "60%"\n' + TARGET,
            "schedule.jitter: must be between 0 and 0.5 (50%), got '60%'",
        ),
        (
            "[schedule]\njitter = true\n" + TARGET,
            "schedule.jitter: expected a fraction like 0.1 or a percentage like '10%'",
        ),
        (
            TARGET.replace("r1", "office") + TARGET.replace("r1", "office"),
            "targets[1].name: duplicate target name 'office'",
        ),
        ('[daemon]\ncolour = "blue"\n' + TARGET, "daemon.colour: unknown key"),
        ("colour = 1\n" + TARGET, "colour: unknown key"),
        (TARGET + "[targets.schedule]\nhourly = 1\n", "targets[0].schedule.hourly: unknown key"),
        ('[[targets]]\nname = "r1"\n', "targets[0].address: required key is missing"),
        ("", "targets: at least one [[targets]] table is required"),
        ("targets = []", "targets: at least one [[targets]] table is required"),
        ("targets = 5", "targets: expected a list"),
        ("daemon = 5\n" + TARGET, "daemon: expected a table"),
        (
            '[daemon]\nlog_format = "xml"\n' + TARGET,
            "daemon.log_format: must be 'console' or 'json' (got 'xml')",
        ),
        (
            "[scan]\nconcurrency = 0\n" + TARGET,
            "scan.concurrency: must be greater than or equal to 1 (got 0)",
        ),
        ('[scan]\nconcurrency = "1024"\n' + TARGET, "scan.concurrency: expected an integer"),
        ("[scan]\nconfirm = 1\n" + TARGET, "scan.confirm: expected true or false"),
        (
            "[scan]\nrate = 0\n" + TARGET,
            "scan.rate: must be at least 1 (slower scans never finish: a sentinel takes a minute), "
            "got 0",
        ),
        (
            "[scan]\nanomaly_share = 1.5\n" + TARGET,
            "scan.anomaly_share: must be a share in (0, 1], got 1.5",
        ),
        (
            '[scan]\ntimeout_initial = "2s"\n' + TARGET,
            "scan.timeout_initial: must lie between timeout_min (0.1s) and timeout_max (1.25s)",
        ),
        (
            '[http]\nlisten = "::1:9810"\n' + TARGET,
            "http.listen: put IPv6 addresses in brackets, e.g. '[::1]:9810', got '::1:9810'",
        ),
        (
            '[http]\nlisten = "127.0.0.1:99999"\n' + TARGET,
            "http.listen: port must be 0-65535, got '99999'",
        ),
        (
            '[http]\npublic_url = "mon.example.net"\n' + TARGET,
            "http.public_url: must be an http:// or https:// URL",
        ),
        (
            TARGET.replace('"r1"', '"my router"'),
            "targets[0].name: must be 1-64 characters of A-Z a-z 0-9 . _ -, got 'my router'",
        ),
        (
            TARGET.replace("192.0.2.1", "https://router.example.net:8443"),
            "targets[0].address: not an IP address or hostname: "
            "'https://router.example.net:8443' (write it without scheme, port or path)",
        ),
        (
            TARGET.replace("192.0.2.1", "999.1.1.1"),
            "targets[0].address: not an IP address or hostname: '999.1.1.1' "
            "(write it without scheme, port or path)",
        ),
        (
            TARGET + 'expected_open = "443,80-81"\nignore = [80, 22]\n',
            "targets[0].ignore: ports 80 are also in expected_open",
        ),
        (
            TARGET + '[[notify]]\nname = "n"\ntype = "slak"\nurl_env = "U"\n',
            "notify[0].type: must be 'slack', 'discord', 'msteams', 'googlechat', 'ntfy' or "
            "'webhook' (got 'slak')",
        ),
        (
            TARGET + '[[notify]]\nname = "n"\ntype = "slack"\n',
            "notify[0].url: one of url, url_env or url_file is required",
        ),
        (
            TARGET + '[[notify]]\nname = "n"\ntype = "slack"\nurl_env = "U"\nurl_file = "f"\n',
            "notify[0].url_file: set only one of url, url_env, url_file (also has url_env)",
        ),
        (
            TARGET + '[[notify]]\nname = "n"\ntype = "ntfy"\nurl_env = "U"\nsecret_env = "S"\n',
            "notify[0].secret_env: only type 'webhook' signs its requests",
        ),
        (
            TARGET + '[[notify]]\nname = "n"\ntype = "slack"\nurl_env = "U"\ntargets = []\n',
            "notify[0].targets: empty list; leave the key out to notify for every target",
        ),
        (
            TARGET + '[[notify]]\nname = "n"\ntype = "slack"\nurl_env = "1U"\n',
            "notify[0].url_env: not an environment variable name: '1U'",
        ),
        (
            TARGET + '[[notify]]\nname = "n"\ntype = "slack"\nurl_env = "U"\n'
            'min_severity = "loud"\n',
            "notify[0].min_severity: unknown severity 'loud' (use info, warning or critical)",
        ),
        (
            TARGET + '[[notify]]\nname = "n"\ntype = "slack"\nurl_env = "U"\n'
            'targets = ["r1", "r9"]\n',
            "notify[0].targets[1]: no target named 'r9'",
        ),
        (
            TARGET + '[[notify]]\nname = "n"\ntype = "slack"\nurl_env = "U"\n' * 2,
            "notify[1].name: duplicate notify name 'n'",
        ),
        (
            "[daemon]\nstate_dir = 3\n" + TARGET,
            "daemon.state_dir: expected a non-empty path string",
        ),
    ],
)
def test_error_messages(text: str, expected: str) -> None:
    """Each invalid input yields exactly one `key.path: problem` line."""
    assert errors_of(text) == [expected]


def test_all_errors_reported_at_once() -> None:
    """Problems in several sections come back together, in one ConfigError."""
    text = (
        '[daemon]\ncolour = 1\n[schedule]\nsentinel = "soon"\n'
        + TARGET.replace("r1", "office")
        + TARGET.replace("r1", "office")
        + 'expected_open = "70000"\n'
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, BASE)
    assert [line.partition(":")[0] for line in info.value.errors] == [
        "daemon.colour",
        "schedule.sentinel",
        "targets[1].expected_open",
        "targets[1].name",
    ]
    assert str(info.value) == "\n".join(info.value.errors)
    assert "pydantic" not in str(info.value)


def test_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    """A TOML syntax error names the file, line and column."""
    path = tmp_path / "bad.toml"
    path.write_text('[daemon]\nlog_level = = "info"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [f"{path}: invalid TOML: Invalid value (at line 2, column 13)"]


def test_missing_file(tmp_path: Path) -> None:
    """A missing config file is a ConfigError naming the path."""
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [f"{path}: cannot read config file: No such file or directory"]


def test_load_config_resolves_relative_paths(tmp_path: Path) -> None:
    """Relative paths are relative to the config file's directory, absolute ones are kept."""
    path = tmp_path / "etc" / "exposuremon.toml"
    path.parent.mkdir()
    path.write_text('[http]\ntoken_file = "/run/token"\n' + TARGET)
    config = load_config(path)
    assert config.daemon.state_dir == tmp_path / "etc" / "state"
    assert config.http.token_file == Path("/run/token")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ('"443,8080-8082"', {443, 8080, 8081, 8082}),
        ('[443, "8080-8082"]', {443, 8080, 8081, 8082}),
        ("443", {443}),
        ('"hot"', set(HOT_PORTS)),
        ("[]", set()),
    ],
)
def test_port_specs(spec: str, expected: set[int]) -> None:
    """Port specs may be a string, a bare port, or a list of ports and spec strings."""
    config = parse_config(TARGET + f"expected_open = {spec}\n", BASE)
    assert config.targets[0].expected_open == expected


def test_scan_port_sets() -> None:
    """Sentinel and quick sets always hold expected, seen-open and hot ports; full adds expected."""
    config = parse_config(
        TARGET + 'expected_open = [65000]\nports_quick = "1-10"\nports_full = "1-100"\n', BASE
    )
    target = config.targets[0]
    assert target.sentinel_ports([5000]) == HOT_PORTS | {65000, 5000}
    assert target.quick_ports([5000]) == HOT_PORTS | {65000, 5000} | set(range(1, 11))
    assert target.full_ports() == set(range(1, 101)) | {65000}
    assert target.ports_for(ScanKind.SENTINEL) == target.sentinel_ports()
    assert target.ports_for(ScanKind.QUICK, [7]) == target.quick_ports([7])
    assert target.ports_for(ScanKind.FULL) == target.full_ports()


def test_default_port_sets_are_shared() -> None:
    """Targets share one parsed `1-65535` set, so thousands of targets do not cost 4 MB each."""
    config = parse_config(TARGET + TARGET.replace("r1", "r2") + 'ports_full = "1-65535"\n', BASE)
    first, second = config.targets
    assert first.ports_full is DEFAULT_FULL
    assert second.ports_full is DEFAULT_FULL
    assert first.full_ports() is DEFAULT_FULL
    assert "65535" not in repr(config)


def test_per_target_overrides() -> None:
    """`[targets.schedule]` and `[targets.scan]` override the global sections for that target."""
    config = parse_config(FULL, BASE)
    office, surgery = config.targets
    assert config.schedule_for(office).model_dump() == {
        "sentinel": 10.0,
        "quick": 1800.0,
        "full": 172800.0,
        "jitter": 0.2,
    }
    assert config.schedule_for(surgery) == config.schedule
    assert config.schedule_for(office).interval(ScanKind.SENTINEL) == 10.0
    assert config.schedule_for(office).interval(ScanKind.FULL) == 172800.0
    scan = config.scan_for(office)
    assert (scan.rate, scan.concurrency, scan.resolve_after, scan.retries) == (5.5, 16, 1, 3)
    assert config.scan_for(surgery) == config.scan
    assert office.effective_scan(config.scan) == scan
    office_scan, surgery_scan = (
        office.effective_scan(config.scan),
        surgery.effective_scan(config.scan),
    )
    assert office_scan.scan_options().concurrency == 16
    assert (office_scan.scan_options().rate, surgery_scan.scan_options().rate) == (5.5, 50)
    assert surgery_scan.scan_options().concurrency == 200
    policy = office.policy(config.scan)
    assert (policy.expected_open, policy.ignore) == (office.expected_open, office.ignore)
    assert (policy.resolve_after, policy.anomaly_share, policy.anomaly_min_ports) == (1, 0.8, 100)
    assert surgery.policy(config.scan).resolve_after == 4
    options = scan.scan_options()
    assert (options.concurrency, options.rate, options.retries) == (16, 5.5, 3)
    assert (options.timeout_min, options.timeout_initial, options.timeout_max) == (0.05, 1.0, 2.0)


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("[::1]:9810", "::1", 9810),
        ("[::]:80", "::", 80),
        ("0.0.0.0:9810", "0.0.0.0", 9810),
        ("localhost:1", "localhost", 1),
        ("127.0.0.1:0", "127.0.0.1", 0),
    ],
)
def test_listen(listen: str, host: str, port: int) -> None:
    """`listen` splits into host and port; IPv6 hosts are written in brackets."""
    config = parse_config(f'[http]\nlisten = "{listen}"\n' + TARGET, BASE)
    assert (config.http.listen, config.http.host, config.http.port) == (listen, host, port)


def test_api_token_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The token comes from the env var first, else the stripped file, read at call time."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    token_file = tmp_path / "token"
    config = parse_config('[http]\ntoken_file = "token"\n' + TARGET, tmp_path)
    with pytest.raises(ConfigError) as info:
        config.http.api_token()
    assert info.value.errors == [
        f"http.token_file: cannot read {token_file}: No such file or directory"
    ]
    token_file.write_text("  \n")
    with pytest.raises(ConfigError, match=r"^http.token_file: .* is empty$"):
        config.http.api_token()
    token_file.write_text("s3cret-from-file\n")
    assert config.http.api_token() == "s3cret-from-file"
    monkeypatch.setenv(TOKEN_ENV, "s3cret-from-env")
    assert config.http.api_token() == "s3cret-from-env"
    assert "s3cret" not in repr(config)
    assert "s3cret" not in str(config)
    assert parse_config(TARGET, BASE).http.api_token() == "s3cret-from-env"
    monkeypatch.delenv(TOKEN_ENV)
    assert parse_config(TARGET, BASE).http.api_token() is None


def notify_config(lines: str) -> Config:
    """A config with one target and one notify channel described by `lines`."""
    return parse_config(TARGET + '[[notify]]\nname = "ops"\n' + lines, BASE)


def test_url_is_a_secret() -> None:
    """Inline webhook URLs never show up in reprs or in error messages."""
    url = "https://hooks.example/services/T000/B000/XXXXSECRET"
    config = notify_config(f'type = "slack"\nurl = "{url}"\n')
    assert config.notify[0].resolve_url() == url
    assert "XXXXSECRET" not in repr(config)
    assert "XXXXSECRET" not in str(config)
    assert "XXXXSECRET" not in str(config.model_dump())
    errors = errors_of(TARGET + '[[notify]]\nname = "n"\ntype = "slack"\nurl = "ftp://XXSECRET"\n')
    assert errors == ["notify[0].url: must be an http:// or https:// URL"]
    errors = errors_of(TARGET + '[[notify]]\nname = "n"\ntype = "slack"\nurl = 5\n')
    assert errors == ["notify[0].url: expected a string"]


def test_resolve_url_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """url_env is read at call time; a missing variable names the channel, not the URL."""
    config = notify_config('type = "discord"\nurl_env = "OPS_URL"\n')
    monkeypatch.delenv("OPS_URL", raising=False)
    with pytest.raises(ConfigError) as info:
        config.notify[0].resolve_url()
    assert info.value.errors == [
        "notify 'ops'.url_env: environment variable OPS_URL is not set or empty"
    ]
    monkeypatch.setenv("OPS_URL", "not-a-url-SECRET")
    with pytest.raises(ConfigError) as info:
        config.notify[0].resolve_url()
    assert info.value.errors == ["notify 'ops'.url_env: the URL read from it must be http(s)://"]
    monkeypatch.setenv("OPS_URL", "https://discord.example/api/webhooks/1/x\n")
    assert config.notify[0].resolve_url() == "https://discord.example/api/webhooks/1/x"


def test_resolve_url_and_secret_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """url_file and secret_file are read (stripped) at call time, relative to the config."""
    config = parse_config(
        TARGET + '[[notify]]\nname = "hook"\ntype = "webhook"\nurl_file = "url"\n'
        'secret_file = "secret"\n',
        tmp_path,
    )
    channel = config.notify[0]
    with pytest.raises(ConfigError) as info:
        channel.resolve_url()
    assert info.value.errors == [
        f"notify 'hook'.url_file: cannot read {tmp_path / 'url'}: No such file or directory"
    ]
    (tmp_path / "url").write_text("https://hooks.example/in\n")
    (tmp_path / "secret").write_text("hmac-key\n")
    assert channel.resolve_url() == "https://hooks.example/in"
    assert channel.resolve_secret() == "hmac-key"
    monkeypatch.delenv("NO_SUCH", raising=False)
    unsigned = notify_config('type = "webhook"\nurl_env = "NO_SUCH"\n').notify[0]
    assert unsigned.resolve_secret() is None


def test_notify_routing() -> None:
    """A channel takes events at or above min_severity, for its targets only."""
    everything = notify_config('type = "ntfy"\nurl_env = "U"\nmin_severity = "INFO"\n').notify[0]
    assert everything.wants("r1", Severity.INFO)
    scoped = notify_config('type = "ntfy"\nurl_env = "U"\ntargets = ["r1"]\n').notify[0]
    assert scoped.min_severity is Severity.WARNING
    assert not scoped.wants("r1", Severity.INFO)
    assert scoped.wants("r1", Severity.CRITICAL)
    assert not scoped.wants("r2", Severity.CRITICAL)


def test_models_are_frozen() -> None:
    """Config models cannot be changed after loading."""
    config = parse_config(TARGET, BASE)
    with pytest.raises(ValidationError):
        config.scan.concurrency = 1


def test_direct_construction_checks_references() -> None:
    """Building a Config in code runs the same cross checks as parsing."""
    target = {"name": "r1", "address": "192.0.2.1"}
    with pytest.raises(ValidationError, match="duplicate target name 'r1'"):
        Config.model_validate({"targets": [target, target]})


def test_example_loads_and_monitors_localhost() -> None:
    """config.example.toml is valid, watches 127.0.0.1, and ships no active notify channel."""
    config = load_config(EXAMPLE)
    (target,) = config.targets
    assert (target.name, target.address) == ("localhost", "127.0.0.1")
    assert config.daemon.state_dir == EXAMPLE.parent / "state"
    assert config.http.listen == "127.0.0.1:9810"
    assert config.notify == ()
    assert config.model_dump() == parse_config(TARGET, EXAMPLE.parent).model_dump() | {
        "targets": config.model_dump()["targets"]
    }


def test_example_warns_about_loopback() -> None:
    """check_warnings flags the example's loopback target as the inside view."""
    config = load_config(EXAMPLE)
    for own in (None, ()):
        warnings = check_warnings(config, own_addresses=own)
        assert len(warnings) == 1
        assert warnings[0].startswith("targets[0].address: 127.0.0.1 is ")
        assert "hairpin NAT" in warnings[0]


def _models(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    """Every model reachable from `model`, with the TOML table it documents."""
    found = [(prefix, model)]
    for name, field in model.model_fields.items():
        for arg in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                found += _models(arg, f"{prefix}.{name}".lstrip("."))
    return found


def test_example_documents_every_key() -> None:
    """Every key of every model appears in config.example.toml (commented or not)."""
    text = EXAMPLE.read_text()
    for table, model in _models(Config):
        for name, field in model.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                header = rf"^[#\s]*\[{re.escape(f'{table}.{name}'.lstrip('.'))}\]"
            elif table == "" and name in ("targets", "notify", "advisories", "maintenance"):
                header = rf"^[#\s]*\[\[{name}\]\]"
            else:
                header = rf"^[#\s]*{name} = "
            assert re.search(header, text, re.MULTILINE), f"{table}.{name} is not documented"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("10.1.2.3", "10.1.2.3 is a private address"),
        ("fe80::1", "fe80::1 is a link-local address"),
        ("100.64.0.1", "100.64.0.1 is not a globally routable address"),
        ("::1", "::1 is a loopback address"),
        ("localhost", "localhost is a local name"),
        ("nas.home.arpa", "nas.home.arpa is a local name"),
        ("1.2.3.4", "1.2.3.4 is one of this host's own addresses"),
    ],
)
def test_warnings_for_inside_addresses(address: str, reason: str) -> None:
    """Own, loopback, private, link-local and local-name targets draw the hairpin warning."""
    config = parse_config(TARGET.replace("192.0.2.1", address), BASE)
    own = [ipaddress.ip_address("1.2.3.4")]
    warnings = check_warnings(config, own_addresses=own)
    assert warnings == [f"targets[0].address: {reason}; " + warnings[0].split("; ", 1)[1]]
    assert "hairpin NAT" in warnings[0]


def test_no_warning_for_public_targets() -> None:
    """Public addresses and hostnames (not resolved) draw no warning."""
    text = TARGET.replace("192.0.2.1", "1.2.3.4") + TARGET.replace("192.0.2.1", "gw.example.net")
    config = parse_config(text.replace('"r1"\naddress = "gw', '"r2"\naddress = "gw'), BASE)
    assert check_warnings(config, own_addresses=()) == []


def test_warnings_for_exposed_listener_and_missing_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A non-loopback listener and secrets unavailable here are warnings, not errors."""
    monkeypatch.delenv("OPS_URL", raising=False)
    text = (
        '[http]\nlisten = "[::]:9810"\ntoken_file = "/nonexistent/token"\n'
        + TARGET.replace("192.0.2.1", "1.2.3.4")
        + '[[notify]]\nname = "ops"\ntype = "slack"\nurl_env = "OPS_URL"\n'
    )
    warnings = check_warnings(parse_config(text, BASE), own_addresses=())
    assert [w.partition(":")[0] for w in warnings] == [
        "notify[0].url_env",
        "http.token_file",
        "http.listen",
        "http.allowed_hosts",
    ]


def test_host_addresses_include_loopback() -> None:
    """This host's addresses always include the loopback addresses."""
    assert {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")} <= host_addresses()


port_sets = st.frozensets(st.integers(min_value=1, max_value=65535), max_size=40)


@given(ports=port_sets)
def test_port_sets_round_trip_as_list(ports: frozenset[int]) -> None:
    """Any set of ports written as a TOML list parses back to the same set."""
    config = parse_config(TARGET + f"ignore = {sorted(ports)}\n", BASE)
    assert config.targets[0].ignore == ports


@given(ports=port_sets.filter(bool))
def test_port_sets_round_trip_as_spec(ports: frozenset[int]) -> None:
    """Any non-empty set of ports written with format_ports() parses back to the same set."""
    config = parse_config(TARGET + f'expected_open = "{format_ports(ports)}"\n', BASE)
    assert config.targets[0].expected_open == ports


def test_notify_delivery_keys() -> None:
    """rate, retry_horizon, remind_every and remind_max parse; defaults: type rate, 24h, off, 3."""
    plain = notify_config('type = "discord"\nurl_env = "U"\n').notify[0]
    assert (plain.rate, plain.retry_horizon, plain.remind_every, plain.remind_max) == (
        None,
        86400.0,
        None,
        3,
    )
    tuned = notify_config(
        'type = "slack"\nurl_env = "U"\nrate = "30/1m"\nretry_horizon = "2h"\n'
        'remind_every = "4h"\nremind_max = 5\n'
    ).notify[0]
    assert (tuned.rate, tuned.retry_horizon, tuned.remind_every, tuned.remind_max) == (
        Rate(30, 60),
        7200.0,
        14400.0,
        5,
    )
    assert tuned.model_dump()["rate"] == "30/60s"
    assert errors_of(
        TARGET + '[[notify]]\nname = "n"\ntype = "slack"\nurl_env = "U"\nrate = "x"\n'
    ) == ["notify[0].rate: not a rate: 'x' (use a number per second, or e.g. '5/2s', '30/1m')"]
    assert errors_of(
        TARGET + '[[notify]]\nname = "n"\ntype = "slack"\nurl_env = "U"\nremind_max = 0\n'
    ) == ["notify[0].remind_max: must be greater than or equal to 1 (got 0)"]
