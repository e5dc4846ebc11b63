"""Maintenance windows over the API and the CLI: body rules (pure), endpoints on a real store."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from exposuremon.config.fields import TOKEN_ENV
from exposuremon.web.api import BadRequest, parse_maintenance_body, parse_window_id
from tests.cli.test_daemon_commands import run_cli
from tests.support.apibed import TOKEN, Story
from tests.web.test_api import AUTH, cli_json, get_json, serving, story  # noqa: F401

NOW = dt.datetime(2026, 12, 5, 21, 0, tzinfo=dt.UTC)
KNOWN = ("office", "branch", "lab")
RECURRING = '[[maintenance]]\ncron = "0 2 * * SUN"\nduration = "2h"\ntimezone = "Europe/Berlin"\n'


def body(**doc: Any) -> bytes:
    """A JSON body."""
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"not json", "body"),
        (b"[]", "body"),
        (body(reason="x", duration="1h", what=1), "'what'"),
        (body(duration="1h"), "reason"),
        (body(reason="  ", duration="1h"), "reason"),
        (body(reason="x"), "end"),
        (body(reason="x", duration="1h", end="2026-12-05T23:00:00Z"), "end"),
        (body(reason="x", duration="forever"), "duration"),
        (body(reason="x", duration=3600), "duration"),
        (body(reason="x", end="2026-12-05T20:00:00Z"), "end"),
        (body(reason="x", start="tonight", duration="1h"), "start"),
        (body(reason="x", duration="40d"), "duration"),
        (body(reason="x", duration="1h", targets=[]), "targets"),
        (body(reason="x", duration="1h", targets="office"), "targets"),
        (body(reason="x", duration="1h", targets=["office", "nope"]), "targets[1]"),
        (body(reason="x", duration="1h", targets=[7]), "targets[0]"),
    ],
)
def test_maintenance_body_refusals_name_the_field(raw: bytes, field: str) -> None:
    """Every bad body is a BadRequest whose message starts with the field's name."""
    with pytest.raises(BadRequest) as caught:
        parse_maintenance_body(raw, NOW, KNOWN)
    assert caught.value.field == field, str(caught.value)


def test_maintenance_body_accepted() -> None:
    """Targets deduplicated, start defaulting to now, a duration counted from the start."""
    got = parse_maintenance_body(
        body(targets=["lab", "lab", "office"], duration="90m", reason=" firmware "), NOW, KNOWN
    )
    assert got.targets == ("lab", "office")
    assert (got.start, got.end, got.reason) == (NOW, NOW + dt.timedelta(minutes=90), "firmware")
    every = parse_maintenance_body(
        body(start="2026-12-06T01:00:00+01:00", end="2026-12-06T03:00:00+01:00", reason="r"),
        NOW,
        KNOWN,
    )
    assert every.targets is None
    assert every.start == dt.datetime(2026, 12, 6, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("text", "expected"), [("3", 3), ("api/12", 12)])
def test_window_ids(text: str, expected: int) -> None:
    """A window id is N or api/N."""
    assert parse_window_id(text) == expected


@pytest.mark.parametrize("text", ["config/0", "0", "x", "api/", "-1"])
def test_window_id_refusals(text: str) -> None:
    """Config windows and non-numbers are refused naming `id`."""
    with pytest.raises(BadRequest, match=r"^id: "):
        parse_window_id(text)


async def test_windows_are_added_listed_and_ended_over_http(
    story: Story,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """POST needs the token; the window is listed by GET (and by the CLI, the same), with the
    config's recurring one; ending it early takes it out; the service is poked each time."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    bed = story.copy(tmp_path)
    bed.config_path.write_text(bed.config_path.read_text() + RECURRING)
    doc = {"targets": ["office"], "duration": "2h", "reason": "firmware update"}
    async with serving(bed) as (client, backend):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            resp = await client.post("/api/v1/maintenance", headers=headers, json=doc)
            assert resp.status == 401
        resp = await client.post("/api/v1/maintenance", headers=AUTH, json={"reason": "x"})
        assert resp.status == 400
        assert (await resp.json())["error"].startswith("end: give exactly one")
        assert backend.maintenance_pokes == 0

        resp = await client.post("/api/v1/maintenance", headers=AUTH, json=doc)
        added = await resp.json()
        assert resp.status == 201, added
        window = added["window"]
        assert {k: window[k] for k in ("source", "targets", "reason", "active", "cron")} == {
            "source": "api",
            "targets": ["office"],
            "reason": "firmware update",
            "active": True,
            "cron": None,
        }
        assert backend.maintenance_pokes == 1

        listed = await get_json(client, "/api/v1/maintenance")
        assert [w["id"] for w in listed["windows"]] == ["config/0", window["id"]]
        assert listed["windows"][0]["cron"] == "0 2 * * SUN"
        assert listed["windows"][0]["timezone"] == "Europe/Berlin"
        assert listed["in_maintenance"] == ["office"]
        from_cli = await cli_json("maintenance", "list", "-c", str(bed.config_path), "--json")
        assert from_cli["windows"] == listed["windows"]

        resp = await client.post(f"/api/v1/maintenance/{window['id']}/end")
        assert resp.status == 401
        resp = await client.post(f"/api/v1/maintenance/{window['id']}/end", headers=AUTH)
        ended = await resp.json()
        assert resp.status == 200, ended
        assert ended["window"]["active"] is False
        assert backend.maintenance_pokes == 2
        for path, status in (
            (f"/api/v1/maintenance/{window['id']}/end", 409),
            ("/api/v1/maintenance/api/999/end", 404),
            ("/api/v1/maintenance/config/0/end", 400),
        ):
            resp = await client.post(path, headers=AUTH)
            assert resp.status == status, await resp.text()
        listed = await get_json(client, "/api/v1/maintenance")
        assert [w["id"] for w in listed["windows"]] == ["config/0"]
        assert listed["in_maintenance"] == []


def test_the_cli_adds_lists_and_ends_windows(story: Story, tmp_path: Path) -> None:  # noqa: F811
    """`maintenance add` keeps a window, `list` shows it active, `end` ends it; bad input is
    refused naming the option."""
    bed = story.copy(tmp_path)
    config = str(bed.config_path)
    added = run_cli(
        "maintenance",
        "add",
        "-c",
        config,
        "--target",
        "lab",
        "--duration",
        "1h",
        "--reason",
        "new firmware",
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("api/1 ")
    assert "ACTIVE" in added.stdout
    assert "lab — new firmware" in added.stdout
    listed = run_cli("maintenance", "list", "-c", config)
    assert listed.stdout.splitlines() == added.stdout.splitlines()
    ended = run_cli("maintenance", "end", "api/1", "-c", config)
    assert ended.returncode == 0, ended.stderr
    assert ended.stdout.startswith("ended: api/1 ")
    assert run_cli("maintenance", "list", "-c", config).stdout == "no maintenance windows\n"
    for args, needle in (
        (("add", "--target", "nope", "--duration", "1h", "--reason", "x"), "--target"),
        (("add", "--duration", "1h"), "--reason"),
        (("add", "--end", "tomorrow", "--reason", "x"), "--end"),
        (("end", "config/0"), "api/N"),
        (("end", "api/1"), "already ended"),
    ):
        refused = run_cli("maintenance", args[0], "-c", config, *args[1:])
        assert refused.returncode != 0
        assert needle in refused.stderr, refused.stderr
