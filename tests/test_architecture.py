"""The tree keeps its architecture: each package is used through its door, SQL stays in store/."""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "exposuremon"
# The parts with a door (`__init__` exports); the top-level modules are the core.
PACKAGES = ("cli", "config", "fleet", "metrics", "notify", "scan", "schedule", "store", "web")
SQL_LIBRARIES = ("sqlalchemy", "alembic")


def module_name(path: Path) -> str:
    """`exposuremon/store/schema.py` -> `exposuremon.store.schema`."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str | None:
    """The part a module belongs to (`store` for `exposuremon.store.schema`), None for the core."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in PACKAGES else None


def imports(source: str) -> Iterator[tuple[str, tuple[str, ...]]]:
    """Every (module, names) a source imports, at any depth (inside functions too)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, tuple(alias.name for alias in node.names)


def door_violations(module: str, source: str, exports: dict[str, frozenset[str]]) -> list[str]:
    """What `module` imports past another package's door, or SQL outside store/."""
    own = package_of(module)
    found = []
    for imported, names in imports(source):
        parts = imported.split(".")
        if parts[0] in SQL_LIBRARIES and own != "store":
            found.append(f"{module} imports {imported}: only exposuremon.store speaks SQL")
        if parts[0] != "exposuremon" or len(parts) < 2 or parts[1] not in PACKAGES:
            continue
        if parts[1] == own:
            continue
        if len(parts) > 2:
            found.append(f"{module} imports {imported}: use the door exposuremon.{parts[1]}")
            continue
        for name in names:
            if name not in exports[parts[1]]:
                found.append(f"{module} imports {name} from exposuremon.{parts[1]}, not exported")
    return found


def all_exports() -> dict[str, frozenset[str]]:
    """Each package's `__all__`."""
    return {
        name: frozenset(importlib.import_module(f"exposuremon.{name}").__all__) for name in PACKAGES
    }


def modules() -> list[Path]:
    """Every module of the package."""
    return sorted(PACKAGE.rglob("*.py"))


def test_no_import_crosses_a_door() -> None:
    """No module reaches past another package's `__init__`, and only store/ imports SQL."""
    exports = all_exports()
    found = [
        problem
        for path in modules()
        for problem in door_violations(module_name(path), path.read_text(), exports)
    ]
    assert found == []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("exposuremon.service", "from exposuremon.store.schema import targets\n"),
        ("exposuremon.web.api", "from exposuremon.store import schema\n"),
        ("exposuremon.metrics.collectors", "import sqlalchemy as sa\n"),
        ("exposuremon.notify.notifier", "def f():\n    from exposuremon.store.outbox import x\n"),
    ],
)
def test_the_check_catches_a_crossing(module: str, source: str) -> None:
    """A private import, a name the door does not export, or SQL outside store/ is reported."""
    assert door_violations(module, source, all_exports()) != []


def test_a_package_may_use_its_own_modules() -> None:
    """Inside a package, its private modules are fair game."""
    source = "from exposuremon.store.schema import targets\nimport sqlalchemy\n"
    assert door_violations("exposuremon.store.database", source, all_exports()) == []


@pytest.mark.parametrize("name", PACKAGES)
def test_every_door_exports_what_it_names(name: str) -> None:
    """Each `__init__` defines every name in its `__all__`, and imports nothing else."""
    package = importlib.import_module(f"exposuremon.{name}")
    assert all(hasattr(package, exported) for exported in package.__all__)
    init = PACKAGE / name / "__init__.py"
    imported = {n for _, names in imports(init.read_text()) for n in names} - {"annotations"}
    assert imported <= set(package.__all__)


def test_the_top_level_is_the_core() -> None:
    """The package's top level holds the core modules and the packages, nothing else."""
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert top == {
        "acks",
        "advisories",
        "detect",
        "flap",
        "logs",
        "model",
        "pipeline",
        "service",
        "systemd",
        "vantage",
        "units",
    }
    assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()} == set(PACKAGES)
