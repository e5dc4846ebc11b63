"""A real Prometheus for tests: the Debian `prometheus` binary on 127.0.0.1, always stopped.

    with running_prometheus(tmp_path, scrape=["127.0.0.1:9810"], rule_files=[rules]) as prom:
        prom.wait_for(lambda: prom.query('up{job="exposuremon"} == 1'), 10, "first scrape")
        firing = prom.alerts(state="firing")

Scrapes and rule evaluations run every `interval` seconds (1 s by default). The config is
written as JSON, which YAML (and so Prometheus) reads as it is. The HTTP API is used through
urllib: tests that use this are synchronous and the daemon they scrape is a subprocess.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tests.support.daemon import stop_process

T = TypeVar("T")

PROMETHEUS = "prometheus"
PROMTOOL = "promtool"
READY_DEADLINE = 30.0  # seconds for Prometheus to open its TSDB and answer /-/ready
HTTP_TIMEOUT = 10.0


class PromError(Exception):
    """The Prometheus HTTP API answered with an error (bad query, bad parameter)."""

    def __init__(self, path: str, error_type: str, error: str) -> None:
        super().__init__(f"{path}: {error_type}: {error}")
        self.error_type = error_type
        self.error = error


def missing_binaries() -> str | None:
    """Why a real Prometheus cannot run here (None when it can)."""
    absent = [name for name in (PROMETHEUS, PROMTOOL) if shutil.which(name) is None]
    if absent:
        return f"{' and '.join(absent)} not installed (Debian package prometheus; make sysdeps)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Prometheus:
    """A started Prometheus process and a small client of its HTTP API."""

    def __init__(self, workdir: Path, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.workdir = workdir
        self.url = f"http://127.0.0.1:{port}"
        self.proc = proc
        self.log_path = workdir / "prometheus.log"

    def log(self) -> str:
        """What Prometheus logged so far (for failure messages)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str, **params: Any) -> Any:
        """GET an API path; the `data` member of a success, else PromError."""
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        url = f"{self.url}{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:  # 400/422/503 carry a JSON error body
            try:
                body = json.load(exc)
            except ValueError:
                raise PromError(path, str(exc.code), exc.reason) from None
            finally:
                exc.close()
        if body.get("status") != "success":
            raise PromError(path, body.get("errorType", "?"), body.get("error", "?"))
        return body.get("data")

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query (at `at`, unix seconds, or now): the result vector or matrix."""
        data = self.get("/api/v1/query", query=expr, time=at)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def query_range(
        self, expr: str, start: float, end: float, step: float = 1.0
    ) -> list[dict[str, Any]]:
        """Range query: one series per label set, each with its `values`."""
        data = self.get("/api/v1/query_range", query=expr, start=start, end=end, step=step)
        return list(data["result"])

    def series(self, match: str, start: float | None = None) -> list[dict[str, str]]:
        """Label sets of the series a selector matches."""
        return list(self.get("/api/v1/series", **{"match[]": match, "start": start}))

    def label_values(self, label: str, match: str | None = None) -> list[str]:
        """Values of one label, optionally among the series of a selector."""
        path = f"/api/v1/label/{urllib.parse.quote(label)}/values"
        return list(self.get(path, **{"match[]": match}))

    def alerts(self, state: str | None = None) -> list[dict[str, Any]]:
        """Active alerts (pending and firing), optionally of one state."""
        found = list(self.get("/api/v1/alerts")["alerts"])
        return [a for a in found if state is None or a["state"] == state]

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule (flattened over groups), as parsed by Prometheus."""
        groups = self.get("/api/v1/rules")["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets with their health and last error."""
        return list(self.get("/api/v1/targets", state="active")["activeTargets"])

    def wait_for(self, check: Callable[[], T], deadline: float, what: str) -> T:
        """Poll `check` every 0.2 s until it returns something truthy; fail after `deadline` s."""
        end = time.monotonic() + deadline
        while True:
            value = check()
            if value:
                return value
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > end:
                raise AssertionError(f"not within {deadline}s: {what}\n{self.log()[-2000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL); safe to call twice."""
        stop_process(self.proc)


def write_config(
    path: Path,
    *,
    scrape: Sequence[str],
    job: str,
    rule_files: Sequence[Path],
    interval: float,
) -> None:
    """A Prometheus config (JSON is YAML) scraping `scrape` as `job` and loading the rules."""
    every = f"{int(interval * 1000)}ms"
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": every,
            "scrape_timeout": every,
            "evaluation_interval": every,
        },
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [],
    }
    if scrape:
        config["scrape_configs"].append(
            {"job_name": job, "static_configs": [{"targets": list(scrape)}]}
        )
    path.write_text(json.dumps(config, indent=2))


@contextlib.contextmanager
def running_prometheus(
    workdir: Path,
    *,
    scrape: Sequence[str] = (),
    job: str = "exposuremon",
    rule_files: Sequence[Path] = (),
    interval: float = 1.0,
    extra_args: Sequence[str] = (),
) -> Iterator[Prometheus]:
    """A ready Prometheus on a free loopback port with its TSDB in `workdir`; always stopped."""
    reason = missing_binaries()
    if reason:
        raise RuntimeError(reason)
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.json"
    write_config(config, scrape=scrape, job=job, rule_files=rule_files, interval=interval)
    last_error = ""
    for _ in range(3):  # another process may take the free port before Prometheus binds it
        port = free_port()
        argv = [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1d",
            "--log.level=warn",
            *extra_args,
        ]
        log = (workdir / "prometheus.log").open("ab")
        with log:
            proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        prom = Prometheus(workdir, port, proc)
        try:
            if _wait_ready(prom):
                yield prom
                return
            last_error = prom.log()[-2000:]
        finally:
            prom.stop()
    raise RuntimeError(f"prometheus did not become ready:\n{last_error}")


def _wait_ready(prom: Prometheus) -> bool:
    """True once /-/ready answers 200; False if the process died (e.g. the port was taken)."""
    end = time.monotonic() + READY_DEADLINE
    while time.monotonic() < end:
        if prom.proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"prometheus not ready within {READY_DEADLINE}s:\n{prom.log()[-2000:]}")


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool; the completed process (stdout and stderr captured as text)."""
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


# -- Grafana dashboards -------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?:(.*),\s*)?(\w+)\)\s*$", re.S)


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel of a dashboard, including those nested in collapsed rows."""
    found: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and annotation query of a dashboard."""
    exprs: list[tuple[str, str]] = []
    for panel in dashboard_panels(dashboard):
        for target in panel.get("targets", []):
            where = f"panel {panel.get('id')} {panel.get('title')!r} {target.get('refId')}"
            exprs.append((where, str(target.get("expr", ""))))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            exprs.append((f"annotation {annotation.get('name')!r}", str(annotation["expr"])))
    return exprs


def dashboard_variable_queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(name, label, selector or None) of every `label_values(...)` query variable."""
    found: list[tuple[str, str, str | None]] = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query)
        match = _LABEL_VALUES.match(text)
        if match is None:
            raise ValueError(f"variable {variable.get('name')}: not label_values(): {text!r}")
        found.append((str(variable["name"]), match.group(2), match.group(1)))
    return found


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace Grafana variables ($name, ${name}, ${name:format}); unknown ones are an error."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"no value for Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(one, expr)
