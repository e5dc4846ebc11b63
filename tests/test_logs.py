"""Logging that fits journald and log shippers: one event per line, no colour off a terminal."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from exposuremon.logs import configure_logging, get_logger, redact_secrets, under_journald

ANSI = re.compile(r"\x1b\[")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Each test configures logging for the process; put the previous set-up back after."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


def emit_everything() -> None:
    """One event of each kind the daemon logs: fields, a secret, an exception, a library."""
    log = get_logger()
    log.debug("scan started", target="office", kind="sentinel", ports=60)
    log.info("finding_opened", target="office", port=443, severity="critical")
    log.warning("delivery failed", channel="ops", url="https://hooks.example/T0/B1/secret")
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        log.exception("scan job crashed", target="office")
    logging.getLogger("aiohttp.server").error("library trouble %s", "here")


def test_json_lines_carry_fields_and_no_secret() -> None:
    """JSON: every line one object with target/port as fields; URLs redacted; level filter."""
    out = io.StringIO()
    configure_logging("json", "info", stream=out, environ={})
    emit_everything()
    lines = out.getvalue().splitlines()
    docs = [json.loads(line) for line in lines]
    assert [d["event"] for d in docs] == [
        "finding_opened",
        "delivery failed",
        "scan job crashed",
        "library trouble here",
    ]  # debug filtered out at level info
    assert docs[0]["target"] == "office"
    assert docs[0]["port"] == 443
    assert docs[0]["level"] == "info"
    assert "timestamp" in docs[0]
    assert docs[1]["url"] == "<redacted>"
    assert "hooks.example" not in out.getvalue()
    assert "ValueError: bad\nthing" in docs[2]["exception"]
    assert docs[3]["logger"] == "aiohttp.server"


def test_plain_lines_off_a_terminal() -> None:
    """Console format into a file or pipe: no colour, one line per event, key=value fields."""
    out = io.StringIO()
    configure_logging("console", "debug", stream=out, environ={})
    emit_everything()
    text = out.getvalue()
    assert not ANSI.search(text)
    lines = text.splitlines()
    assert len(lines) == 5  # the traceback stays on its event's line
    assert "target=office" in lines[1]
    assert "port=443" in lines[1]
    assert "finding_opened" in lines[1]
    assert re.match(r"^\d{4}-\d\d-\d\dT", lines[0])  # our own timestamp: nobody else adds one
    assert "Traceback" in lines[3]
    assert "\\n" in lines[3]
    assert "url=<redacted>" in lines[2]
    assert "aiohttp.server" in lines[4]


def test_journald_gets_priorities_and_no_timestamp() -> None:
    """Under journald each line starts with its syslog priority and carries no own timestamp."""
    read_fd, write_fd = os.pipe()
    with os.fdopen(write_fd, "w") as stream, os.fdopen(read_fd) as reader:
        st = os.fstat(write_fd)
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert under_journald(stream, env)
        configure_logging("console", "debug", stream=stream, environ=env)
        emit_everything()
        stream.flush()
        stream.close()
        lines = reader.read().splitlines()
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>", "<3>"]
    assert not any(re.search(r"\d{4}-\d\d-\d\dT\d\d:", line) for line in lines)
    assert not ANSI.search("".join(lines))


def test_journal_stream_of_another_file_is_ignored() -> None:
    """$JOURNAL_STREAM inherited from a parent whose stderr went to journald does not count."""
    assert not under_journald(io.StringIO(), {"JOURNAL_STREAM": "8:12345"})
    read_fd, write_fd = os.pipe()
    with os.fdopen(write_fd, "w") as stream:
        os.close(read_fd)
        assert not under_journald(stream, {"JOURNAL_STREAM": "1:1"})
        assert not under_journald(stream, {})


def test_colour_only_on_a_terminal_and_not_with_no_color() -> None:
    """A terminal gets colour unless $NO_COLOR is set."""
    primary, secondary = os.openpty()
    with os.fdopen(secondary, "w") as tty, os.fdopen(primary, "rb", buffering=0) as master:
        configure_logging("console", "info", stream=tty, environ={})
        get_logger().info("hello", target="office")
        tty.flush()
        assert ANSI.search(master.read(4096).decode())
        configure_logging("console", "info", stream=tty, environ={"NO_COLOR": "1"})
        get_logger().info("hello", target="office")
        tty.flush()
        assert not ANSI.search(master.read(4096).decode())


@pytest.mark.parametrize(
    "key", ["url", "webhook_url", "token", "api_token", "secret", "Authorization", "password"]
)
def test_redact_secrets(key: str) -> None:
    """Any key naming a secret is redacted; public_url is not a secret."""
    event: dict[str, Any] = {key: "s3cr3t", "public_url": "https://status.example", "port": 1}
    out = redact_secrets(None, "info", event)
    assert out[key] == "<redacted>"
    assert out["public_url"] == "https://status.example"
    assert out["port"] == 1


def test_skipped_runs_are_not_logged_per_job() -> None:
    """APScheduler's per-job "skipped" and "missed" lines are dropped (the service counts them
    and logs one summary a minute); its other warnings still come through."""
    out = io.StringIO()
    configure_logging("json", "info", stream=out, environ={})
    scheduler = logging.getLogger("apscheduler.scheduler")
    scheduler.warning(
        'Execution of job "%s" skipped: maximum number of running instances reached (%d)',
        "t/quick",
        1,
    )
    logging.getLogger("apscheduler.executors.default").warning(
        'Run time of job "%s" was missed by %s', "t/full", "0:00:05"
    )
    scheduler.warning("Error getting due jobs from job store %r: %s", "default", "boom")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == [
        "Error getting due jobs from job store 'default': boom"
    ]
