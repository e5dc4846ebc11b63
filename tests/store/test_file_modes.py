"""The state directory and the database files are owner-only whatever the umask."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

# A child process: the umask is process-wide, and pytest's own files must not inherit it.
OPEN_AND_WRITE = """
import asyncio, os, sys
from pathlib import Path
from exposuremon.store import Store

async def main() -> None:
    store = await Store.open(Path(sys.argv[1]))
    try:
        await store.prune(__import__("datetime").datetime.now(__import__("datetime").UTC))
        for name in ("exposuremon.db", "exposuremon.db-wal", "exposuremon.db-shm"):
            print(name, oct(os.stat(Path(sys.argv[1]) / name).st_mode & 0o777))
    finally:
        await store.close()

os.umask(int(sys.argv[2], 8))
asyncio.run(main())
"""


def open_store_under_umask(state_dir: Path, umask: int) -> dict[str, int]:
    """Open (and write to) a new store in a child with `umask`; the modes it saw while open."""
    proc = subprocess.run(
        [sys.executable, "-c", OPEN_AND_WRITE, str(state_dir), f"{umask:o}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {
        name: int(mode, 8)
        for name, mode in (line.split() for line in proc.stdout.split("\n") if line)
    }


def test_umask_022_still_gives_owner_only_files(tmp_path: Path) -> None:
    """Under umask 022 the new state dir is 0700 and the database, WAL and SHM files 0600."""
    state_dir = tmp_path / "deep" / "state"
    modes = open_store_under_umask(state_dir, 0o022)
    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o700
    assert modes == {
        "exposuremon.db": 0o600,
        "exposuremon.db-wal": 0o600,
        "exposuremon.db-shm": 0o600,
    }


def test_umask_000_still_gives_owner_only_files(tmp_path: Path) -> None:
    """Even with no umask at all, nothing under the state dir is readable by others."""
    state_dir = tmp_path / "state"
    modes = open_store_under_umask(state_dir, 0o000)
    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o700
    assert set(modes.values()) == {0o600}


def test_an_existing_state_dir_keeps_its_mode(tmp_path: Path) -> None:
    """A directory the operator made (e.g. systemd's StateDirectoryMode=0750) is not changed."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    os.chmod(state_dir, 0o750)
    modes = open_store_under_umask(state_dir, 0o022)
    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o750
    assert modes["exposuremon.db"] == 0o600
