"""Firmware advisories (pure): matched once, cleared once, by rule, field and port set."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from exposuremon import advisories, detect
from exposuremon.config import AdvisoryConfig, ConfigError, parse_config
from exposuremon.model import (
    NOTIFY_AS,
    EventType,
    Fingerprint,
    Observed,
    PortRecord,
    Severity,
    TargetState,
)

T0 = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)
ROOT = Path(__file__).resolve().parents[1]
BINTEC = Fingerprint(http_server="bintec elmeg httpd", http_title="Digitalisierungsbox Premium")
UPDATED = Fingerprint(http_server="be.IP httpd", http_title="Digitalisierungsbox Premium")
TARGET = '[[targets]]\nname = "shop"\naddress = "198.51.100.7"\n'


def rule(**kw: object) -> advisories.Rule:
    """A rule built as the config builds it."""
    fields: dict[str, object] = {
        "name": "bintec",
        "severity": "critical",
        "match": {"http_server": "(?i)bintec"},
        "text": "firmware before 10.2.7 Patch 2 opens 80-89 and 440-449",
        "url": "https://example.net/advisory",
    }
    fields.update(kw)
    return advisories.Rule.from_config(AdvisoryConfig.model_validate(fields))


def with_ports(state: TargetState, **fps: Fingerprint | None) -> detect.Evaluation:
    """An evaluation whose state has one open port record per `p<port>` keyword."""
    ports = {
        int(key[1:]): PortRecord(
            port=int(key[1:]),
            state=Observed.OPEN,
            first_seen=T0,
            last_seen=T0,
            last_change=T0,
            fingerprint=fp,
        )
        for key, fp in fps.items()
    }
    return detect.Evaluation(dataclasses.replace(state, ports=ports), (), (), False)


def test_a_match_raises_one_event_then_nothing_until_it_clears() -> None:
    """advisory_matched once with the fingerprint; again nothing; then advisory_cleared once."""
    rules = (rule(),)
    first = advisories.check(with_ports(TargetState(name="shop"), p80=BINTEC), rules, T0)
    (matched,) = first.events
    assert matched.type is EventType.ADVISORY_MATCHED
    assert matched.severity is Severity.CRITICAL
    assert matched.port is None
    assert matched.details["port"] == 80
    assert matched.details["matched"] == {"http_server": "bintec elmeg httpd"}
    assert matched.details["fingerprint"]["http_title"] == "Digitalisierungsbox Premium"
    assert matched.details["url"] == "https://example.net/advisory"
    assert first.state.advisories["bintec"].fingerprint == BINTEC
    again = advisories.check(with_ports(first.state, p80=BINTEC), rules, T0)
    assert again.events == ()
    assert again.state.advisories == first.state.advisories
    cleared = advisories.check(with_ports(first.state, p80=UPDATED), rules, T0)
    (event,) = cleared.events
    assert event.type is EventType.ADVISORY_CLEARED
    assert event.severity is Severity.INFO
    assert event.details[NOTIFY_AS] == "critical"
    assert event.details["fingerprint"] == {
        "http_server": "be.IP httpd",
        "http_title": "Digitalisierungsbox Premium",
    }
    assert cleared.state.advisories == {}


def test_every_named_field_must_match() -> None:
    """Two fields in `match`: both must be present and match."""
    rules = (rule(match={"http_server": "bintec", "http_title": "Premium$"}),)
    title_only = Fingerprint(http_server="bintec", http_title="Digitalisierungsbox Smart")
    state = TargetState(name="shop")
    assert advisories.check(with_ports(state, p80=title_only), rules, T0).events == ()
    assert advisories.check(with_ports(state, p80=BINTEC), rules, T0).events != ()
    no_title = Fingerprint(http_server="bintec")
    assert advisories.check(with_ports(state, p80=no_title), rules, T0).events == ()


def test_the_port_set_limits_which_fingerprints_count() -> None:
    """A rule with `ports` ignores matching fingerprints of other ports."""
    rules = (rule(ports="80-89,440-449"),)
    state = TargetState(name="shop")
    assert advisories.check(with_ports(state, p8080=BINTEC), rules, T0).events == ()
    (event,) = advisories.check(with_ports(state, p8080=BINTEC, p443=BINTEC), rules, T0).events
    assert event.details["port"] == 443


def test_tls_issuer_and_banner_are_matched() -> None:
    """The certificate's issuer and the banner are fields like the others."""
    state = TargetState(name="shop")
    cert = Fingerprint(tls_subject="CN=box", tls_issuer="CN=bintec elmeg CA")
    assert advisories.check(
        with_ports(state, p443=cert), (rule(match={"tls_issuer": "elmeg"}),), T0
    ).events
    ssh = Fingerprint(banner="SSH-2.0-dropbear_2016.74")
    hit = advisories.check(
        with_ports(state, p22=ssh), (rule(match={"banner": "dropbear_201[0-8]"}),), T0
    )
    assert hit.events


def test_a_removed_rule_drops_its_match_without_an_event() -> None:
    """Nothing was fixed on the device: no advisory_cleared when the rule leaves the config."""
    matched = advisories.check(with_ports(TargetState(name="shop"), p80=BINTEC), (rule(),), T0)
    out = advisories.check(with_ports(matched.state, p80=BINTEC), (), T0)
    assert out.events == ()
    assert out.state.advisories == {}


def test_no_rules_and_no_matches_return_the_evaluation_itself() -> None:
    """Nothing to do: the very evaluation comes back (no work for 10,000 quiet scans)."""
    ev = with_ports(TargetState(name="shop"), p80=BINTEC)
    assert advisories.check(ev, (), T0) is ev
    assert advisories.check(ev, (rule(match={"http_server": "nothing"}),), T0) is ev


# ------------------------------------------------------------------------------------ config


def test_an_invalid_regex_is_an_error_naming_the_rule_and_field() -> None:
    """A pattern that does not compile fails the config load, naming rule and field."""
    text = TARGET + '[[advisories]]\nname = "bad"\nmatch = { http_title = "(" }\ntext = "t"\n'
    with pytest.raises(ConfigError) as err:
        parse_config(text, Path("."))
    (line,) = err.value.errors
    assert "advisories[0].match.http_title" in line
    assert "'bad'" in line
    assert "regular expression" in line


def test_an_unknown_field_is_an_error() -> None:
    """Only the fingerprint fields advisories know may be matched."""
    text = TARGET + '[[advisories]]\nname = "x"\nmatch = { server = "a" }\ntext = "t"\n'
    with pytest.raises(ConfigError, match=r"advisories\[0\]\.match\.server: rule 'x': unknown"):
        parse_config(text, Path("."))


def test_the_shipped_example_file_loads_through_advisories_file(tmp_path: Path) -> None:
    """deploy/advisories.example.toml, named by [daemon] advisories_file, adds its rules and
    its bintec rule matches the incident's Server header on the incident's ports."""
    example = ROOT / "deploy" / "advisories.example.toml"
    text = f'[daemon]\nadvisories_file = "{example}"\n' + TARGET
    config = parse_config(text, tmp_path)
    names = [r.name for r in config.advisories]
    assert "bintec-elmeg-portforward" in names
    rules = advisories.rules_of(config.advisories)
    ev = with_ports(TargetState(name="shop"), p443=BINTEC)
    assert [e.type for e in advisories.check(ev, rules, T0).events] == [EventType.ADVISORY_MATCHED]


def test_errors_in_the_advisories_file_name_the_file(tmp_path: Path) -> None:
    """A bad rule in the included file is reported with the file's path; duplicates too."""
    extra = tmp_path / "adv.toml"
    extra.write_text('[[advisories]]\nname = "x"\nmatch = { banner = "[" }\ntext = "t"\n')
    text = '[daemon]\nadvisories_file = "adv.toml"\n' + TARGET
    with pytest.raises(ConfigError, match=r"adv\.toml.*advisories\[0\]\.match\.banner: rule 'x'"):
        parse_config(text, tmp_path)
    extra.write_text('[[advisories]]\nname = "x"\nmatch = { banner = "a" }\ntext = "t"\n')
    twice = text + '[[advisories]]\nname = "x"\nmatch = { banner = "b" }\ntext = "t"\n'
    with pytest.raises(ConfigError, match=r"adv\.toml.*'x' is also in the config file"):
        parse_config(twice, tmp_path)
    missing = '[daemon]\nadvisories_file = "nowhere.toml"\n' + TARGET
    with pytest.raises(ConfigError, match=r"nowhere\.toml.*cannot read"):
        parse_config(missing, tmp_path)
