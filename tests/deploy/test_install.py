"""`make install` / `make uninstall` (deploy/install.sh) into temporary roots.

pip installs a wheel of this tree made here with the standard library alone (no build backend
and no index needed), with --no-deps: the dependencies come from the test environment through
PYTHONPATH whenever the installed command runs.
"""

from __future__ import annotations

import base64
import dataclasses
import grp
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from exposuremon.config.models import load_config

ROOT = Path(__file__).resolve().parents[2]
UNIT = "exposuremon.service"
GROUP = "daemon"  # a system group every Debian has: what `groupadd --system` would make
pytestmark = pytest.mark.slow


def build_wheel(out: Path) -> Path:
    """A pure-Python wheel of the package (what `pip wheel .` would make, minus the backend)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name, version = project["name"], project["version"]
    dist_info = f"{name}-{version}.dist-info"
    files: dict[str, bytes] = {}
    for path in sorted((ROOT / name).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files[path.relative_to(ROOT).as_posix()] = path.read_bytes()
    files[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        f"Requires-Python: {project['requires-python']}\n"
    ).encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    scripts = "".join(f"{k} = {v}\n" for k, v in project["scripts"].items())
    files[f"{dist_info}/entry_points.txt"] = f"[console_scripts]\n{scripts}".encode()
    record = []
    for arcname, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{arcname},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = out / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for arcname, data in files.items():
            archive.writestr(arcname, data)
    return wheel


def make(action: str, wheel: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """`make install|uninstall VAR=...` as an operator runs it; never touches systemd here."""
    env = {
        **os.environ,
        "PIP_SPEC": str(wheel),
        "PIP_ARGS": "--no-deps --no-index",
        "PIP_NO_CACHE_DIR": "1",
    }
    args = [f"{key}={value}" for key, value in settings.items()]
    return subprocess.run(
        ["make", "-s", "-C", str(ROOT), action, f"PYTHON={sys.executable}", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env=env,
    )


def install_sh(action: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """`deploy/install.sh ACTION` with settings in its environment, as a packager runs it."""
    return subprocess.run(
        ["sh", str(ROOT / "deploy/install.sh"), action],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **settings},
    )


def files_under(root: Path) -> set[str]:
    """Every file and link below `root`, relative, outside the virtual environment."""
    found = set()
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if not rel.startswith("opt/exposuremon/") and (path.is_file() or path.is_symlink()):
            found.add(rel)
    return found


def run_installed(exe: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run an installed console script with the test environment's dependencies."""
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    return subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=exe.parent,  # not this source tree, whose package would shadow the installed one
    )


@dataclasses.dataclass
class Staged:
    """A DESTDIR install, a second install over it, then an uninstall."""

    root: Path
    first: subprocess.CompletedProcess[str]
    config_stat: os.stat_result
    files_after_install: set[str]
    link: str
    unit: str
    shebang: str
    bin_scripts: dict[str, str]
    config_after_second: str
    example_after_second: str
    second: subprocess.CompletedProcess[str]
    package_after_second: bool
    uninstall: subprocess.CompletedProcess[str]
    files_after_uninstall: set[str]
    venv_after_uninstall: bool


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package as a wheel."""
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def staged(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Staged:
    """Install into DESTDIR with the default paths, edit the config, install again, uninstall."""
    root = tmp_path_factory.mktemp("destdir")
    first = make("install", wheel, DESTDIR=str(root), SERVICE_GROUP=GROUP)
    assert first.returncode == 0, first.stderr
    config_stat = (root / "etc/exposuremon/config.toml").stat()
    venv_bin = root / "opt/exposuremon/bin"
    files_after_install = files_under(root)
    link = os.readlink(root / "usr/local/bin/exposuremon")
    unit = (root / "etc/systemd/system" / UNIT).read_text()
    shebang = (venv_bin / "exposuremon").read_text().splitlines()[0]
    bin_scripts = {
        p.name: p.read_text(errors="replace")
        for p in venv_bin.iterdir()
        if p.is_file() and not p.is_symlink()
    }
    config = root / "etc/exposuremon/config.toml"
    config.write_text(config.read_text() + "\n# edited by the operator\n")
    config.chmod(0o644)  # as an install before 0640 left it
    example = root / "etc/exposuremon/config.toml.example"
    example.write_text("stale")
    second = make("install", wheel, DESTDIR=str(root))
    assert second.returncode == 0, second.stderr
    site = list((root / "opt/exposuremon/lib").glob("python3*/site-packages/exposuremon"))
    package_after_second = bool(site) and (site[0] / "service.py").is_file()
    config_after_second = config.read_text()
    example_after_second = example.read_text()
    uninstall = make("uninstall", wheel, DESTDIR=str(root))
    return Staged(
        root=root,
        first=first,
        config_stat=config_stat,
        files_after_install=files_after_install,
        link=link,
        unit=unit,
        shebang=shebang,
        bin_scripts=bin_scripts,
        config_after_second=config_after_second,
        example_after_second=example_after_second,
        second=second,
        package_after_second=package_after_second,
        uninstall=uninstall,
        files_after_uninstall=files_under(root),
        venv_after_uninstall=(root / "opt/exposuremon").exists(),
    )


def test_install_puts_unit_config_and_link_in_place(staged: Staged) -> None:
    """DESTDIR install: the unit, the config and its example, the CLI link, a venv in PREFIX."""
    assert staged.files_after_install == {
        "etc/systemd/system/exposuremon.service",
        "etc/exposuremon/config.toml",
        "etc/exposuremon/config.toml.example",
        "usr/local/bin/exposuremon",
    }
    assert staged.link == "/opt/exposuremon/bin/exposuremon"
    assert "systemctl enable --now exposuremon.service" in staged.first.stdout


def test_config_is_readable_by_root_and_the_service_group_only(staged: Staged) -> None:
    """config.toml (webhook URLs, tokens) is 0640 root:SERVICE_GROUP; the unit adds the group."""
    stat = staged.config_stat
    assert oct(stat.st_mode & 0o7777) == oct(0o640)
    assert (stat.st_uid, stat.st_gid) == (0, grp.getgrnam(GROUP).gr_gid)
    assert f"SupplementaryGroups={GROUP}" in staged.unit.splitlines()
    assert "config.toml is not owned" not in staged.first.stderr


def test_an_upgrade_keeps_a_world_readable_config_but_says_so(staged: Staged) -> None:
    """An operator's 0644 config is not changed by an upgrade; the install warns about it."""
    assert "config.toml is readable by every user" in staged.second.stderr
    assert oct((staged.root / "etc/exposuremon/config.toml").stat().st_mode & 0o777) == oct(0o644)


def test_staged_scripts_name_the_final_paths(staged: Staged) -> None:
    """Scripts in a DESTDIR venv run from PREFIX once in place: no staging path remains."""
    assert staged.shebang == "#!/opt/exposuremon/bin/python"
    assert "exposuremon" in staged.bin_scripts
    for name, text in staged.bin_scripts.items():
        assert str(staged.root) not in text, name


def test_unit_execstart_is_the_installed_command(staged: Staged) -> None:
    """ExecStart= runs the venv's exposuremon on the installed config."""
    lines = staged.unit.splitlines()
    assert "ExecStart=/opt/exposuremon/bin/exposuremon run -c /etc/exposuremon/config.toml" in lines
    source = (ROOT / "systemd" / UNIT).read_text()
    # Default paths: nothing else changes but the group the test installs with.
    assert staged.unit == source.replace(
        "\nSupplementaryGroups=exposuremon\n", f"\nSupplementaryGroups={GROUP}\n"
    )


def test_second_install_keeps_the_config_and_refreshes_the_example(staged: Staged) -> None:
    """Installing again (an upgrade) never overwrites config.toml; the example is current."""
    assert staged.config_after_second.endswith("# edited by the operator\n")
    assert staged.example_after_second.startswith("# exposuremon example configuration.")
    assert "kept /etc/exposuremon/config.toml" in staged.second.stdout
    assert staged.package_after_second


def test_uninstall_removes_what_install_put(staged: Staged) -> None:
    """Uninstall removes the venv, unit, example and link; the operator's config stays."""
    assert staged.uninstall.returncode == 0, staged.uninstall.stderr
    assert not staged.venv_after_uninstall
    assert staged.files_after_uninstall == {"etc/exposuremon/config.toml"}
    assert "kept /etc/exposuremon/config.toml" in staged.uninstall.stdout


def test_installed_config_uses_the_state_directory(staged: Staged, tmp_path: Path) -> None:
    """The installed config is the example with state_dir = /var/lib/exposuremon, and valid."""
    installed = tmp_path / "config.toml"
    installed.write_text(staged.example_after_second)
    config = load_config(installed)
    assert config.daemon.state_dir == Path("/var/lib/exposuremon")
    example = (ROOT / "config.example.toml").read_text().splitlines()
    changed = [
        (a, b)
        for a, b in zip(example, staged.example_after_second.splitlines(), strict=True)
        if a != b
    ]
    assert changed == [('state_dir = "state"', 'state_dir = "/var/lib/exposuremon"')]


def test_install_at_a_custom_prefix_runs_and_verifies(wheel: Path, tmp_path: Path) -> None:
    """PREFIX/CONF_DIR elsewhere: the unit names them, the command runs, the unit verifies."""
    prefix, conf_dir = tmp_path / "opt/exposuremon", tmp_path / "etc/exposuremon"
    paths = {
        "PREFIX": str(prefix),
        "CONF_DIR": str(conf_dir),
        "SYSTEMD_DIR": str(tmp_path / "systemd"),
        "BIN_DIR": str(tmp_path / "bin"),
    }
    done = make("install", wheel, **paths)
    assert done.returncode == 0, done.stderr
    config = conf_dir / "config.toml"
    assert oct(config.stat().st_mode & 0o777) == oct(0o640)
    if not any(g.gr_name == "exposuremon" for g in grp.getgrall()):
        # Not a live systemd host: no group is made here, and the operator is told what to do.
        assert "groupadd --system exposuremon" in done.stderr
    unit = tmp_path / "systemd" / UNIT
    assert f"ExecStart={prefix}/bin/exposuremon run -c {conf_dir}/config.toml" in (
        unit.read_text().splitlines()
    )
    assert f"EnvironmentFile=-{conf_dir}/env" in unit.read_text().splitlines()
    exe = prefix / "bin/exposuremon"
    where = run_installed(
        prefix / "bin/python", "-c", "import exposuremon; print(exposuremon.__file__)"
    )
    assert where.stdout.startswith(str(prefix)), where.stderr
    version = run_installed(exe, "--version")
    assert version.returncode == 0, version.stderr
    assert "0.1.0" in version.stdout
    checked = run_installed(exe, "check-config", "-c", str(conf_dir / "config.toml"))
    assert checked.returncode == 0, checked.stderr
    assert "ok, 1 targets" in checked.stdout
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    verify = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")


@pytest.mark.parametrize(
    ("setting", "needle"),
    [
        ({"PREFIX": "opt/exposuremon"}, "PREFIX must be an absolute path"),
        ({"CONF_DIR": "/etc/expo suremon"}, "CONF_DIR may only hold"),
        ({"PREFIX": "/"}, "PREFIX must not be /"),
        ({"PREFIX": "/opt/../usr/local"}, "must not contain . or .. components"),
        ({"PREFIX": "/usr/local"}, "PREFIX/bin is BIN_DIR"),
    ],
)
def test_bad_paths_are_refused(setting: dict[str, str], needle: str, tmp_path: Path) -> None:
    """Paths that would break the unit or the sed rewrites stop the install with a reason."""
    done = install_sh("install", DESTDIR=str(tmp_path), **setting)
    assert done.returncode == 1
    assert needle in done.stderr
    assert not any(tmp_path.iterdir())


def test_uninstall_leaves_a_prefix_it_did_not_create(tmp_path: Path) -> None:
    """A PREFIX without install.sh's marker is never deleted (PREFIX=/usr by mistake)."""
    prefix = tmp_path / "usr"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin/python3").write_text("not ours")
    done = install_sh(
        "uninstall",
        PREFIX=str(prefix),
        CONF_DIR=str(tmp_path / "etc"),
        SYSTEMD_DIR=str(tmp_path / "systemd"),
        BIN_DIR=str(tmp_path / "bin"),
    )
    assert done.returncode == 0, done.stderr
    assert (prefix / "bin/python3").read_text() == "not ours"
    assert "install.sh did not create it" in done.stdout


def test_install_refuses_a_prefix_that_holds_other_files(wheel: Path, tmp_path: Path) -> None:
    """A non-empty PREFIX that is no venv is refused: install never writes into a shared tree."""
    root = tmp_path / "root"
    other = root / "srv/shared/important.txt"
    other.parent.mkdir(parents=True)
    other.write_text("keep")
    done = make("install", wheel, DESTDIR=str(root), PREFIX="/srv/shared")
    assert done.returncode != 0
    assert "exists and is not a virtual environment" in done.stderr
    assert sorted(p.name for p in other.parent.iterdir()) == ["important.txt"]
    gone = make("uninstall", wheel, DESTDIR=str(root), PREFIX="/srv/shared")
    assert gone.returncode == 0, gone.stderr
    assert other.read_text() == "keep"


def test_a_failed_upgrade_keeps_the_installed_version(wheel: Path, tmp_path: Path) -> None:
    """An upgrade whose package cannot be installed leaves the running version in place."""
    root = tmp_path / "root"
    first = make("install", wheel, DESTDIR=str(root))
    assert first.returncode == 0, first.stderr
    exe = root / "opt/exposuremon/bin/exposuremon"
    assert exe.exists()
    failed = install_sh(
        "install",
        DESTDIR=str(root),
        PYTHON=sys.executable,
        PIP_SPEC=str(tmp_path / "missing.whl"),
        PIP_ARGS="--no-deps --no-index",
    )
    assert failed.returncode != 0
    assert exe.exists()
    assert list((root / "opt/exposuremon").glob("lib/python*/site-packages/exposuremon/"))
