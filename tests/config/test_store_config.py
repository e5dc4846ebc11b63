"""`[store]`: the database URL, from the file, env or a file of its own; a secret throughout."""

from __future__ import annotations

from pathlib import Path

import pytest

from exposuremon.config import Config, ConfigError, parse_config

BASE = Path("/srv/exposuremon")
TARGET = '[[targets]]\nname = "r1"\naddress = "192.0.2.1"\n'
PG_URL = "postgresql://exposuremon:hunter2@db.example/exposuremon?sslmode=verify-full"


def store_config(lines: str, base: Path = BASE) -> Config:
    """A config with one target and a `[store]` table of `lines`."""
    return parse_config(TARGET + "[store]\n" + lines, base)


def errors_of(lines: str) -> list[str]:
    """The error lines a `[store]` table of `lines` gets."""
    with pytest.raises(ConfigError) as info:
        store_config(lines)
    return info.value.errors


def test_without_a_store_table_the_store_is_sqlite_under_state_dir() -> None:
    """No [store] (or an empty one) means the default: no URL, SQLite under state_dir."""
    assert parse_config(TARGET, BASE).store.resolve_url() is None
    assert store_config("").store.resolve_url() is None


def test_an_inline_url_is_kept_secret() -> None:
    """An inline URL is returned as written and never shows in the config's repr or dump."""
    config = store_config(f'url = "{PG_URL}"\n')
    assert config.store.resolve_url() == PG_URL
    for shown in (repr(config), str(config), str(config.model_dump())):
        assert "hunter2" not in shown
    assert store_config('url = "sqlite:////var/lib/x.db"\n').store.resolve_url() == (
        "sqlite:////var/lib/x.db"
    )


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        (
            'url = "mysql://u:hunter2@db/x"\n',
            "store.url: must be a postgresql:// URL, or sqlite:////path/to/file.db",
        ),
        (
            'url = "postgresql+asyncpg://u:hunter2@db/x"\n',
            "store.url: write postgresql://, without a driver (the store picks its own)",
        ),
        (
            'url = "postgres://u:hunter2@db/x"\n',
            "store.url: write postgresql://, without a driver (the store picks its own)",
        ),
        (
            'url = "sqlite:///relative-hunter2.db"\n',
            "store.url: a sqlite URL needs an absolute file path: sqlite:////path/to/file.db",
        ),
        ("url = 5\n", "store.url: expected a string"),
        (
            'url_env = "U"\nurl_file = "f"\n',
            "store.url_file: set only one of url, url_env, url_file (also has url_env)",
        ),
        ('url_env = "1U"\n', "store.url_env: not an environment variable name: '1U'"),
        ('user = "x"\n', "store.user: unknown key"),
    ],
)
def test_bad_values_are_one_line_naming_the_key(lines: str, error: str) -> None:
    """Each bad [store] value is one error line naming its key, never echoing the URL."""
    assert errors_of(lines) == [error]


def test_url_env_is_read_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """url_env is read at call time; a missing or bad variable names the key, not the URL."""
    config = store_config('url_env = "EM_STORE_URL"\n')
    monkeypatch.delenv("EM_STORE_URL", raising=False)
    with pytest.raises(ConfigError) as info:
        config.store.resolve_url()
    assert info.value.errors == [
        "store.url_env: environment variable EM_STORE_URL is not set or empty"
    ]
    monkeypatch.setenv("EM_STORE_URL", "mysql://u:hunter2@db/x")
    with pytest.raises(ConfigError) as info:
        config.store.resolve_url()
    assert info.value.errors == [
        "store.url_env: the URL read from it must be a postgresql:// URL, or"
        " sqlite:////path/to/file.db"
    ]
    monkeypatch.setenv("EM_STORE_URL", f"{PG_URL}\n")
    assert config.store.resolve_url() == PG_URL


def test_url_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    """url_file is relative to the config file's directory, stripped, read when asked."""
    config = store_config('url_file = "store-url"\n', tmp_path)
    with pytest.raises(ConfigError) as info:
        config.store.resolve_url()
    assert info.value.errors == [
        f"store.url_file: cannot read {tmp_path / 'store-url'}: No such file or directory"
    ]
    (tmp_path / "store-url").write_text(f"  {PG_URL}\n")
    assert config.store.resolve_url() == PG_URL
