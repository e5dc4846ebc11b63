"""Shared pytest fixtures. Each part of the project keeps its fixtures under its own header."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support import postgres
from tests.support.databases import POSTGRESQL, SQLITE, Backend
from tests.support.testbed import Router, cleanup_stale, make_router, missing_requirements

# Subprocesses (the `exposuremon` console script, `python -c`) import the package of this
# checkout, not the one the venv's editable install points at: a second worktree sharing the
# venv would otherwise test another branch's code in every subprocess.
_ROOT = str(Path(__file__).resolve().parents[1])
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_ROOT, os.environ.get("PYTHONPATH", "")) if p
)

# Hypothesis: pure functions here take microseconds, so its default 200 ms deadline per example
# would only ever trip on a loaded CI machine; keep a deadline, but one that measures the code.
settings.register_profile("exposuremon", deadline=2000)
settings.load_profile("exposuremon")

# ============================================================================================
# Network test bed (tests/support/testbed.py): "routers" in network namespaces. Needs root, `ip`,
# `nft` and `openssl`; otherwise the fixtures skip with the reason. Mark such tests
# @pytest.mark.netns.
# ============================================================================================


@pytest.fixture(scope="session")
def testbed_available() -> None:
    """Skip unless network namespaces can be built; clean up after crashed earlier runs."""
    reason = missing_requirements()
    if reason:
        pytest.skip(f"needs root to create network namespaces: {reason}")
    # A run killed with SIGKILL cannot clean up after itself; the next run does.
    cleanup_stale()


@pytest.fixture
def router_factory(testbed_available: None) -> Iterator[Callable[..., Router]]:
    """Make routers with `router_factory(rtt=0.04)`; all are closed at teardown."""
    routers: list[Router] = []

    def factory(rtt: float = 0.0) -> Router:
        router = make_router(rtt)
        routers.append(router)
        return router

    yield factory
    errors: list[Exception] = []
    for router in routers:
        try:
            router.close()
        except Exception as exc:  # close the rest before reporting
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def router(router_factory: Callable[..., Router]) -> Router:
    """One router, direct path only, default policy reject, nothing listening."""
    return router_factory()


# ============================================================================================
# PostgreSQL (tests/support/postgres.py): one throwaway cluster per session, a fresh database
# per test. Needs root and the Debian server packages (deploy/sysdeps.sh); otherwise the
# fixtures skip with the reason. CI runs as root: there they never skip.
# ============================================================================================


def _throwaway_cluster() -> Iterator[postgres.Cluster]:
    reason = postgres.missing_requirements()
    if reason:
        pytest.skip(f"needs a throwaway PostgreSQL cluster: {reason}")
    with postgres.running_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[postgres.Cluster]:
    """The session's cluster on a Unix socket in a temp dir; stopped and removed at the end."""
    yield from _throwaway_cluster()


@pytest.fixture
def own_cluster() -> Iterator[postgres.Cluster]:
    """A cluster of this test alone, for a test that stops and starts its server."""
    yield from _throwaway_cluster()


@pytest.fixture
def pg_url(pg_cluster: postgres.Cluster) -> Iterator[str]:
    """The `postgresql://` URL of a new empty database, dropped after the test."""
    with pg_cluster.database() as url:
        yield url


@pytest.fixture(params=[SQLITE, POSTGRESQL])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """An empty database of each dialect: a state directory that does not exist yet, or a new
    PostgreSQL database."""
    if request.param == POSTGRESQL:
        return Backend.postgresql(request.getfixturevalue("pg_url"))
    return Backend.sqlite(tmp_path / "state")
