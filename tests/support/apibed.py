"""Helpers for the HTTP API tests: the store story of test_commands served by `make_app`.

`StoreBackend` is the API's `Backend` over a real store and config: reads and acks are the real
thing (`acks.ack_finding`); only `scan_now` records the request instead of scheduling a scan,
since these stores belong to documentation addresses that must never be scanned. The service's
own implementation is tested against loopback targets in test_api.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import shutil
from pathlib import Path

from exposuremon import acks
from exposuremon.config.models import Config, load_config
from exposuremon.model import Finding
from exposuremon.store.database import Store
from tests.cli.test_daemon_commands import CONFIG, fill

TOKEN = "s3cret-token-for-tests"


@dataclasses.dataclass
class StoreBackend:
    """`api.Backend` over a real store; `scans` lists the targets whose scan was requested."""

    store: Store
    config: Config
    scans: list[str] = dataclasses.field(default_factory=list)
    ready: str | None = None
    maintenance_pokes: int = 0

    async def scan_now(self, target: str) -> bool:
        """Record the request; False for a target that is not configured."""
        if not any(t.name == target for t in self.config.targets):
            return False
        self.scans.append(target)
        return True

    async def ack(self, finding_id: int, until: dt.datetime, reason: str) -> Finding:
        """The same acknowledgement the CLI and the service make."""
        return await acks.ack_finding(
            self.store, finding_id, until, reason, dt.datetime.now(dt.UTC)
        )

    def vantage_health(self) -> tuple[str, bool] | None:
        """Not judged here."""
        return None

    def not_ready(self) -> str | None:
        """None, unless a test sets a reason."""
        return self.ready

    def connection_rate(self, target: str) -> float | None:
        """No rate limit seen (these tests do not scan)."""
        return None

    def maintenance_changed(self) -> None:
        """Count the pokes (the service looks at its windows at once)."""
        self.maintenance_pokes += 1


@dataclasses.dataclass(frozen=True)
class Story:
    """A filled state dir with its config file, and the findings' ids by label."""

    config_path: Path
    state_dir: Path
    ids: dict[str, int]
    scans: dict[str, dt.datetime]

    def copy(self, to: Path, http: str = "") -> Story:
        """A private copy (the story is built once); `http` is extra `[http]` config text."""
        shutil.copytree(self.state_dir, to / "state")
        config_path = to / "config.toml"
        head = f"[http]\n{http}\n" if http else ""
        config_path.write_text(head + CONFIG.replace('"state"', f'"{to / "state"}"'))
        return dataclasses.replace(self, config_path=config_path, state_dir=to / "state")

    def config(self) -> Config:
        """The story's config, loaded."""
        return load_config(self.config_path)


def build_story(directory: Path) -> Story:
    """test_commands' story (office, branch, lab), filled by real detection."""
    ids, at = asyncio.run(fill(directory / "state"))
    config_path = directory / "config.toml"
    config_path.write_text(CONFIG.replace('"state"', f'"{directory / "state"}"'))
    return Story(config_path, directory / "state", ids, at)
