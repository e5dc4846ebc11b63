"""deploy/: the Prometheus rules and config, the Alertmanager config and the Grafana dashboard.

promtool and amtool check and test them; a real Prometheus (no targets) loads the rules and
parses every dashboard query. tests/e2e/test_prometheus.py runs them against the daemon.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.prom import (
    PromError,
    Prometheus,
    dashboard_exprs,
    dashboard_panels,
    dashboard_variable_queries,
    missing_binaries,
    promtool,
    running_prometheus,
    substitute,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
ALERTMANAGER_TEMPLATES = DEPLOY / "alertmanager" / "exposuremon.tmpl"
DASHBOARD = DEPLOY / "grafana" / "exposuremon.json"
README = DEPLOY / "README.md"

REQUIRED_ALERTS = {
    "ExposuremonPortReopened",
    "ExposuremonPortFlapping",
    "ExposuremonUnexpectedPortOpen",
    "ExposuremonTargetDown",
    "ExposuremonScanStale",
    "ExposuremonNotificationsFailing",
    "ExposuremonDown",
    "ExposuremonVantageDown",
    "ExposuremonVantageDegraded",
    "ExposuremonShardsUnheld",
}
# The documented base of every runbook_url, for operators to replace (deploy/README.md).
RUNBOOK_BASE = "https://runbooks.example.net/exposuremon/"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Values for Grafana's variables when a dashboard query is run by hand.
GRAFANA_VALUES = {
    "job": ".*",
    "instance": ".*",
    "target": ".*",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
}

needs_prometheus = pytest.mark.skipif(
    missing_binaries() is not None, reason=missing_binaries() or ""
)
needs_amtool = pytest.mark.skipif(
    shutil.which("amtool") is None,
    reason="amtool not installed (Debian package prometheus-alertmanager; make sysdeps)",
)


def load_dashboard() -> dict[str, Any]:
    """The dashboard JSON."""
    return dict(json.loads(DASHBOARD.read_text()))


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown text."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if match:
            text = re.sub(r"[^\w\- ]", "", match.group(1).lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


@pytest.fixture(scope="module")
def empty_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A Prometheus with the shipped rules loaded and nothing to scrape."""
    if missing_binaries():
        pytest.skip(missing_binaries() or "")
    with running_prometheus(tmp_path_factory.mktemp("prom"), rule_files=[RULES]) as prom:
        yield prom


# -- promtool -----------------------------------------------------------------------------------


@needs_prometheus
def test_rules_pass_promtool_check() -> None:
    """`promtool check rules` accepts alerts.yml."""
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr


@needs_prometheus
def test_rule_unit_tests_pass() -> None:
    """`promtool test rules alerts_test.yml` passes."""
    done = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    """Each alert of alerts.yml has a unit test where it fires and one where it does not."""
    names = set(re.findall(r"^\s*- alert:\s*(\w+)\s*$", RULES.read_text(), re.M))
    assert names >= REQUIRED_ALERTS
    text = RULE_TESTS.read_text()
    cases = re.findall(r"^\s*alertname:\s*(\w+)\s*\n\s*exp_alerts:[ \t]*(\S*)", text, re.M)
    # Every alertname line is followed by its exp_alerts: the pattern saw them all.
    assert len(cases) == len(re.findall(r"^\s*alertname:", text, re.M))
    firing = {name for name, expected in cases if expected != "[]"}
    silent = {name for name, expected in cases if expected == "[]"}
    assert names - firing == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested silent"
    assert {name for name, _ in cases} <= names, "tests of alerts that do not exist"


@needs_prometheus
def test_prometheus_config_is_valid() -> None:
    """`promtool check config` accepts the example prometheus.yml and the rules it loads."""
    done = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "alerts.yml" in done.stdout  # the rule file was found and checked too
    assert "job_name: exposuremon" in PROMETHEUS_CONFIG.read_text()


# -- the rules as Prometheus loads them ---------------------------------------------------------


def test_rules_have_labels_annotations_and_runbooks(empty_prometheus: Prometheus) -> None:
    """Every alert has a severity, summary, description and a runbook anchor in the README."""
    rules = {r["name"]: r for r in empty_prometheus.rules() if r["type"] == "alerting"}
    assert set(rules) >= REQUIRED_ALERTS
    anchors = github_anchors(README.read_text())
    readme = README.read_text()
    for name, rule in rules.items():
        # Written in every rule, so routing never depends on what a series happens to carry.
        severity = rule["labels"]["severity"]
        if name == "ExposuremonUnexpectedPortOpen":  # the finding's, defaulting to warning
            assert severity == "{{ with $labels.severity }}{{ . }}{{ else }}warning{{ end }}"
        else:
            assert severity in ("critical", "warning"), name
        annotations = rule["annotations"]
        assert annotations.get("summary"), name
        assert annotations.get("description"), name
        # Absolute, so it opens from a chat message; the base is documented, to be replaced.
        url = annotations.get("runbook_url", "")
        assert url == f"{RUNBOOK_BASE}deploy/README.md#{name.lower()}", name
        assert name.lower() in anchors, f"no runbook section for {name} in deploy/README.md"
    assert RUNBOOK_BASE in readme
    assert rules["ExposuremonPortReopened"]["labels"]["severity"] == "critical"
    assert rules["ExposuremonDown"]["labels"]["severity"] == "critical"


def test_rules_assume_no_job_name(empty_prometheus: Prometheus) -> None:
    """No rule selects by job: a scrape job of any name gets every alert, ExposuremonDown too."""
    rules = {r["name"]: r["query"] for r in empty_prometheus.rules() if r["type"] == "alerting"}
    for name, query in rules.items():
        assert not re.search(r"\bjob\s*=~?\s*\"", query), f"{name} hard-codes a job name"
    # An exposuremon is recognised by its own metric instead.
    assert "exposuremon_build_info" in rules["ExposuremonDown"]


def test_rules_evaluate_without_error(empty_prometheus: Prometheus) -> None:
    """Each rule's expression evaluates in Prometheus (health ok, no error) on an empty TSDB."""

    def evaluated() -> list[dict[str, Any]]:
        rules = empty_prometheus.rules()
        done = all(not r["lastEvaluation"].startswith("0001") for r in rules)
        return rules if done else []

    for rule in empty_prometheus.wait_for(evaluated, 10, "every rule evaluated once"):
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))


# -- Alertmanager -------------------------------------------------------------------------------


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["amtool", *args], capture_output=True, text=True, timeout=60, check=False
    )


@needs_amtool
def test_alertmanager_config_is_valid(tmp_path: Path) -> None:
    """`amtool check-config` accepts alertmanager.yml with its message templates loaded."""
    installed = "/etc/alertmanager/templates/exposuremon.tmpl"
    text = ALERTMANAGER_CONFIG.read_text()
    assert installed in text
    # The templates path is where an installation puts them; point it at the repository.
    config = tmp_path / "alertmanager.yml"
    config.write_text(text.replace(installed, str(ALERTMANAGER_TEMPLATES)))
    done = _amtool("check-config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 templates" in done.stdout
    # The webhook URL is a secret: read from a file, never written in the config.
    assert re.search(r"^\s*api_url:", text, re.M) is None
    assert "api_url_file:" in text


@needs_amtool
@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        ({"alertname": "ExposuremonPortReopened", "severity": "critical", "target": "r"},
         "chat-critical"),
        ({"alertname": "ExposuremonUnexpectedPortOpen", "severity": "critical", "target": "r",
          "port": "443"}, "chat-critical"),
        ({"alertname": "ExposuremonUnexpectedPortOpen", "severity": "warning", "target": "r",
          "port": "5000"}, "chat"),
        ({"alertname": "ExposuremonTargetDown", "severity": "warning", "target": "r"}, "chat"),
        ({"alertname": "ExposuremonScanStale", "severity": "warning", "target": "r"}, "chat"),
        ({"alertname": "ExposuremonNotificationsFailing", "severity": "warning"}, "chat"),
        ({"alertname": "ExposuremonDown", "severity": "critical", "job": "exposuremon"},
         "chat-critical"),
    ],
)  # fmt: skip
def test_alertmanager_routes(labels: dict[str, str], receiver: str) -> None:
    """Critical alerts go to the fast critical receiver, the rest to the chat receiver."""
    args = [f"{key}={value}" for key, value in labels.items()]
    done = _amtool(
        "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
        f"--verify.receivers={receiver}", *args,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_alertmanager_groups_by_target() -> None:
    """The top-level route groups by target, so one router's alerts come as one message."""
    text = ALERTMANAGER_CONFIG.read_text()
    top = re.search(r"^route:\n((?:  .*\n|\n)*)", text, re.M)
    assert top is not None
    assert re.search(r"^  group_by: \[target\]$", top.group(1), re.M)


@needs_amtool
def test_alertmanager_templates_render() -> None:
    """The message templates render (amtool's example alerts)."""
    text = '{{ template "exposuremon.title" . }}|{{ template "exposuremon.text" . }}'
    done = _amtool(
        "template", "render", f"--template.glob={ALERTMANAGER_TEMPLATES}",
        f"--template.text={text}",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "exposuremon" in done.stdout


# -- Grafana ------------------------------------------------------------------------------------


def test_dashboard_is_importable() -> None:
    """Valid dashboard JSON: no fixed id, a uid, a data source variable, panels on the grid."""
    dashboard = load_dashboard()
    assert dashboard["id"] is None  # import assigns one
    assert dashboard["uid"]
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dashboard_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], int] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = panel["id"]


def test_dashboard_uses_the_datasource_variable() -> None:
    """Every panel, target, query variable and annotation uses the ${datasource} variable."""
    dashboard = load_dashboard()
    for panel in dashboard_panels(dashboard):
        if panel["type"] == "row":
            assert not panel.get("targets"), panel["title"]
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"panel {panel['title']} has no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, (panel["title"], target["refId"])
            assert target["expr"].strip(), (panel["title"], target["refId"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]
    for annotation in dashboard["annotations"]["list"]:
        assert annotation["datasource"] == DATASOURCE, annotation["name"]
    assert "${datasource}" not in json.dumps(dashboard["templating"]["list"][0])


def test_dashboard_filters_by_its_variables() -> None:
    """Queries of per-target metrics honour $target, every query $instance, ALERTS $job too."""
    per_target = re.compile(
        r"exposuremon_(port_open|port_unexpected|unexpected_open_ports|target_up|findings"
        r"|findings_reopened_total|reboots_suspected_total|last_scan_success_timestamp_seconds"
        r"|schedule_interval_seconds)\{([^}]*)\}"
    )
    exprs = dashboard_exprs(load_dashboard())
    assert any("ALERTS{" in expr for _, expr in exprs)
    for where, expr in exprs:
        assert 'instance=~"$instance"' in expr, where
        for selector in re.findall(r"ALERTS\{([^}]*)\}", expr):  # the firing-alerts table
            assert 'job=~"$job"' in selector, where
            assert 'instance=~"$instance"' in selector, where
        for match in per_target.finditer(expr):
            assert 'target=~"$target"' in match.group(2), (where, match.group(0))


def test_dashboard_queries_parse(empty_prometheus: Prometheus) -> None:
    """Every panel and annotation query, with Grafana's variables filled in, is valid PromQL."""
    errors = []
    for where, expr in dashboard_exprs(load_dashboard()):
        try:
            empty_prometheus.query(substitute(expr, GRAFANA_VALUES))
        except PromError as exc:
            errors.append(f"{where}: {exc}")
    assert not errors, "\n".join(errors)


def test_dashboard_variable_queries_parse(empty_prometheus: Prometheus) -> None:
    """Every label_values() variable's selector is a valid series selector."""
    variables = dashboard_variable_queries(load_dashboard())
    assert {name for name, _, _ in variables} == {"job", "instance", "target"}
    for _name, label, selector in variables:
        assert selector, "label_values() without a metric would list every series"
        assert re.fullmatch(r"\w+", label)
        empty_prometheus.series(substitute(selector, GRAFANA_VALUES))
