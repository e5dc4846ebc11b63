"""A throwaway PostgreSQL cluster for the tests and the store benchmark.

Made from the Debian packages' server binaries (`/usr/lib/postgresql/<version>/bin`, which a
fresh machine gets from `deploy/sysdeps.sh`): `initdb` as the `postgres` user into a temporary
directory, a server listening on a Unix socket in that directory only (`listen_addresses=''`,
so nothing is reachable over the network and clusters of parallel runs never collide),
started and stopped with `pg_ctl`. Needs root (to run the server as `postgres`). Each test gets
its own database, made with CREATE DATABASE and dropped after it.

A cluster left behind by a run killed with SIGKILL is stopped and removed by the next run
(`cleanup_stale`): its directory is named after the process that made it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PG_USER = "postgres"
START_TIMEOUT = 60.0  # seconds for the server to accept connections (a loaded CI box)
COMMAND_TIMEOUT = 60.0
DIR_PREFIX = "exposuremon-pg-"
_DIR_RE = re.compile(rf"^{DIR_PREFIX}(\d+)-")


def server_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin directory, or None when none is installed."""
    found = []
    for candidate in Path("/usr/lib/postgresql").glob("*/bin"):
        if (candidate / "postgres").is_file() and candidate.parent.name.isdigit():
            found.append((int(candidate.parent.name), candidate))
    return max(found)[1] if found else None


def missing_requirements() -> str | None:
    """Why a cluster cannot be made here (for pytest.skip), or None when it can."""
    if os.geteuid() != 0:
        return "not running as root (the server runs as the postgres user)"
    if server_bin() is None:
        return "no PostgreSQL server under /usr/lib/postgresql/*/bin (deploy/sysdeps.sh)"
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        return f"no {PG_USER!r} user"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run(argv: list[str], *, as_postgres: bool = False) -> str:
    if as_postgres:
        argv = ["runuser", "-u", PG_USER, "--", *argv]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


class Cluster:
    """One running cluster; `url(db)` names a database in it, `create`/`drop` manage them."""

    def __init__(self, root: Path, bin_dir: Path) -> None:
        self.root = root
        self.bin = bin_dir
        self.data = root / "data"
        self.socket_dir = root / "run"
        self._names = itertools.count(1)

    def url(self, database: str = "postgres") -> str:
        """A `postgresql://` URL of `database` over the cluster's Unix socket, as superuser."""
        return f"postgresql://{PG_USER}@/{database}?host={self.socket_dir}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser; returns psql's unaligned output."""
        return _run(
            [
                str(self.bin / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.socket_dir),
                "-U",
                PG_USER,
                "-d",
                database,
                "-c",
                sql,
            ]
        )

    def create_database(self) -> str:
        """A new empty database; returns its name."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        self.psql(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever still uses it."""
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A fresh database's URL for the duration of the block; dropped afterwards."""
        name = self.create_database()
        try:
            yield self.url(name)
        finally:
            self.drop_database(name)

    def start(self) -> None:
        """initdb as postgres, then start the server on the socket; returns once it accepts."""
        owner = pwd.getpwnam(PG_USER)
        for directory in (self.root, self.socket_dir):
            directory.mkdir(mode=0o700, exist_ok=True)
            os.chown(directory, owner.pw_uid, owner.pw_gid)
        _run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                PG_USER,
                "--auth=trust",  # only reachable through a socket in a root-only directory
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",  # a throwaway cluster: no fsync of the new files
            ],
            as_postgres=True,
        )
        options = (
            f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}' "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        # pg_ctl -w polls the server until it accepts connections, bounded by -t.
        _run(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.root / "server.log"),
                "-o",
                options,
                "-w",
                "-t",
                str(int(START_TIMEOUT)),
                "start",
            ],
            as_postgres=True,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Poll pg_isready until it answers or the deadline passes."""
        deadline = time.monotonic() + START_TIMEOUT
        argv = [str(self.bin / "pg_isready"), "-q", "-h", str(self.socket_dir), "-t", "5"]
        while True:
            # pg_isready itself waits up to -t seconds for an answer: this loop never spins.
            if subprocess.run(argv, timeout=COMMAND_TIMEOUT, check=False).returncode == 0:
                return
            if time.monotonic() > deadline:
                log = (self.root / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"PostgreSQL did not start within {START_TIMEOUT}s:\n{log}")

    def stop(self) -> None:
        """Stop the server (immediately: nothing in it is worth a checkpoint) and remove it."""
        try:
            if (self.data / "postmaster.pid").exists():
                _run(
                    [
                        str(self.bin / "pg_ctl"),
                        "-D",
                        str(self.data),
                        "-m",
                        "immediate",
                        "-w",
                        "stop",
                    ],
                    as_postgres=True,
                )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def cleanup_stale(tmp: Path | None = None) -> None:
    """Stop and remove the clusters of earlier runs whose process is gone (killed runs)."""
    bin_dir = server_bin()
    for root in Path(tmp or tempfile.gettempdir()).glob(f"{DIR_PREFIX}*"):
        match = _DIR_RE.match(root.name)
        if match is None or _alive(int(match.group(1))) or bin_dir is None:
            continue
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired, OSError):
            Cluster(root, bin_dir).stop()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def running_cluster() -> Iterator[Cluster]:
    """A started cluster for the duration of the block; always stopped and removed after."""
    bin_dir = server_bin()
    if bin_dir is None:
        raise RuntimeError("no PostgreSQL server under /usr/lib/postgresql/*/bin")
    cleanup_stale()
    root = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-"))
    cluster = Cluster(root, bin_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
