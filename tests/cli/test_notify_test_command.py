"""`exposuremon notify-test`: a marked test message per channel, the exact error per failure."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.support.receivers import KINDS, SECRET, Answer, Receiver

EXE = [str(Path(sys.executable).with_name("exposuremon"))]


def write(tmp_path: Path, channels: list[tuple[str, str, str]]) -> Path:
    """A config with one loopback target and the given (name, type, url_env) channels."""
    lines = [
        "[daemon]",
        f'state_dir = "{tmp_path / "state"}"',
        "[http]",
        'public_url = "https://mon.example.test"',
        "[[targets]]",
        'name = "lo"',
        'address = "127.0.0.1"',
    ]
    for name, kind, env in channels:
        lines += ["[[notify]]", f'name = "{name}"', f'type = "{kind}"', f'url_env = "{env}"']
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def run(config: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run the command as a child (it runs its own event loop); exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        *EXE,
        "notify-test",
        "-c",
        str(config),
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_every_channel_gets_a_marked_test_message(tmp_path: Path) -> None:
    """Each channel type receives one test message that says it is a test; exit 0."""
    receivers = [Receiver(kind) for kind in KINDS]
    env = {}
    channels = []
    try:
        for receiver in receivers:
            url = await receiver.start()
            env[f"URL_{receiver.kind.upper()}"] = url
            channels.append((f"ch-{receiver.kind}", receiver.kind, f"URL_{receiver.kind.upper()}"))
        code, out, err = await run(write(tmp_path, channels), env)
    finally:
        for receiver in receivers:
            await receiver.close()
    assert code == 0, err
    for receiver in receivers:
        assert f"ch-{receiver.kind} ({receiver.kind}): ok" in out
        [request] = receiver.requests
        assert request.accepted
        assert "test" in request.body.decode().lower()
    assert SECRET not in out + err


async def test_a_failing_channel_is_named_with_its_error(tmp_path: Path) -> None:
    """A 404 and a refused connection are reported per channel, secret-free; exit 1."""
    good, gone = Receiver("slack"), Receiver("discord", default=Answer(status=404))
    refused = Receiver("webhook")
    try:
        env = {"GOOD": await good.start(), "GONE": await gone.start()}
        env["DOWN"] = await refused.start()
        await refused.stop()  # nothing listens there now: connection refused
        config = write(
            tmp_path,
            [("good", "slack", "GOOD"), ("gone", "discord", "GONE"), ("down", "webhook", "DOWN")],
        )
        code, out, err = await run(config, env)
        only_code, only_out, _ = await run(config, env, "--channel", "good")
        bad_code, _, bad_err = await run(config, env, "--channel", "nope")
    finally:
        for receiver in (good, gone, refused):
            await receiver.close()
    assert code == 1
    assert "good (slack): ok" in out
    assert "gone (discord): FAILED:" in out
    assert "404" in out.split("gone (discord): FAILED:")[1].splitlines()[0]
    assert "down (webhook): FAILED:" in out
    assert SECRET not in out + err
    assert only_code == 0
    assert only_out.strip() == "good (slack): ok"
    assert bad_code == 2
    assert "--channel: no channel named 'nope'" in bad_err
    assert len(good.requests) == 2  # once for all channels, once for --channel good
