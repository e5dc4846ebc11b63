"""docs/config.md is generated from the config models and the example's comments, and current."""

from __future__ import annotations

import math
import typing
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from exposuremon.config.fields import duration_text
from exposuremon.config.models import Config
from exposuremon.config.reference import (
    EXAMPLE,
    example_descriptions,
    render,
    undocumented,
)
from exposuremon.units import parse_duration

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_committed_reference_is_current() -> None:
    """docs/config.md equals the generated text: regenerate it with `make docs`."""
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/config.md is out of date: run `make docs` "
        "(python -m exposuremon.config.reference > docs/config.md)"
    )


def test_every_key_has_a_description() -> None:
    """Each key of every section has a comment in config.example.toml that the doc shows."""
    assert undocumented() == [], "add a comment above these keys in config.example.toml"


def test_every_model_key_is_in_the_reference() -> None:
    """Every table of the config models has a section, every other field a row in it."""
    text = render()
    pending: list[tuple[str, type[BaseModel]]] = [("", Config)]
    for _ in range(20):  # bounded walk of the model tree
        if not pending:
            break
        table, model = pending.pop()
        for name, field in model.model_fields.items():
            inner = [field.annotation, *typing.get_args(field.annotation)]
            nested = [a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)]
            if nested:
                path = f"{table}.{name}".lstrip(".")
                assert f"## `[{path}]`" in text or f"## `[[{path}]]`" in text, path
                pending.append((path, nested[0]))
            else:
                assert f"| `{name}` |" in text, f"{table}.{name}"
    assert not pending


def test_descriptions_from_comment_blocks() -> None:
    """A key takes the comment block above it; following keys share it; defaults are cut."""
    text = """
[scan]
# Politeness limit per target.
# Default: not set
# rate = 500.0
# Bounds of the timeout. Defaults: "100ms", "1.25s"
timeout_min = "100ms"
timeout_max = "1.25s"

# [[notify]]
# # Unique name. Required.
# name = "ops"
"""
    found = example_descriptions(text)
    assert found == {
        "scan.rate": "Politeness limit per target.",
        "scan.timeout_min": "Bounds of the timeout.",
        "scan.timeout_max": "Bounds of the timeout.",
        "notify.name": "Unique name. Required.",
    }


def test_the_real_example_yields_descriptions() -> None:
    """The shipped example gives the reference a text for its keys."""
    found = example_descriptions(EXAMPLE.read_text(encoding="utf-8"))
    assert found["daemon.state_dir"].startswith("Where the SQLite database lives.")
    assert "Default" not in found["daemon.state_dir"]


@given(st.integers(min_value=1, max_value=400 * 86400 * 1000))
def test_duration_text_round_trips(millis: int) -> None:
    """A default written as a duration parses back to the same number of seconds."""
    seconds = millis / 1000
    assert math.isclose(parse_duration(duration_text(seconds)), seconds, rel_tol=1e-9)
