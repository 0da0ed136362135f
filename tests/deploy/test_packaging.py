"""The package as a user installs it (fixtures in conftest.py): the wheel and sdist
build, every file ships, the base install (the agent's) is light and names a missing
extra, migrations run from the installed wheel, and `vxtap install-units` writes units
that name the installed executable and pass `systemd-analyze verify`."""

from __future__ import annotations

import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from support.deploy import REPO, guide_block, run
from vxtap.store.db import code_schema_revision

UNITS = ("vxtap-server.service", "vxtap-agent.service", "vxtap-collect.service")
TEMPLATE_INSTANCE = "vxtap-collect@eth1.service"


def test_the_wheel_ships_every_file_of_the_package(wheel: Path) -> None:
    source = {
        str(path.relative_to(REPO / "src"))
        for path in (REPO / "src" / "vxtap").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("vxtap/")}
    assert shipped == source
    for data in (
        "vxtap/store/migrations/env.py",
        "vxtap/store/migrations/versions/0002_project_changes.py",
        "vxtap/systemd/vxtap-collect@.service",
        "vxtap/systemd/agent.toml",
        "vxtap/py.typed",
    ):
        assert data in shipped  # fmt: skip


def test_the_sdist_has_what_builds_and_tests_it(dist: Path) -> None:
    (sdist,) = dist.glob("vxtap-*.tar.gz")
    listing = run(["tar", "-tzf", str(sdist)]).stdout.splitlines()
    for member in (
        "pyproject.toml",
        "src/vxtap/store/migrations/versions/0001_initial.py",
        "src/vxtap/systemd/vxtap-agent.service",
        "tests/deploy/test_packaging.py",
        "Makefile",
    ):
        assert any(line.endswith(member) for line in listing), member  # fmt: skip


# What only the server or only the collector needs; the agent must not load any of it.
HEAVY = (
    "fastapi",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "numba",
    "numpy",
    "llvmlite",
    "cryptography",
)
AGENT_IMPORTS = """
import sys
import vxtap, vxtap.cli, vxtap.cli.agent, vxtap.agent.daemon, vxtap.agent.interfaces
import vxtap.dataplane.kernel, vxtap.dataplane.plan, vxtap.cli.units, vxtap.cli.filters
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:]))
server_or_collector = sorted(m for m in sys.modules if m.startswith(
    ("vxtap.api", "vxtap.store", "vxtap.collector", "vxtap.lab")))
print(vxtap.__file__, heavy, server_or_collector)
"""


def test_the_base_install_is_the_agents_and_names_missing_extras(
    install: Callable[[str | None], Path],
) -> None:
    bin_dir = install(None)
    installed = run([str(bin_dir / "python"), "-m", "pip", "list"]).stdout.lower()
    assert not any(f"\n{name} " in installed for name in HEAVY), installed
    out = run([str(bin_dir / "python"), "-c", AGENT_IMPORTS, *HEAVY])
    assert out.returncode == 0, out.stderr
    location, heavy, modules = out.stdout.split(" ", 2)
    assert location.startswith(str(bin_dir.parent)) and (heavy, modules) == ("[]", "[]\n")
    for command, extra, names in [
        ("server", "server", "fastapi, uvicorn, sqlalchemy, alembic"),
        ("db", "server", "fastapi, uvicorn, sqlalchemy, alembic"),
        ("collect", "collector", "numba, numpy"),
        ("lab", "all", "fastapi, uvicorn, sqlalchemy, alembic, numba, numpy, cryptography"),
    ]:
        refused = run([str(bin_dir / "vxtap"), command, "--help"])
        assert (refused.returncode, refused.stdout, refused.stderr) == (
            1, "",
            f"error: 'vxtap {command}' needs the {extra} extra ({names} not installed): "
            f"pip install 'vxtap[{extra}]'\n",
        )  # fmt: skip
    agent = run([str(bin_dir / "vxtap"), "agent"])
    assert agent.stderr == "error: --endpoint URL is required (or set VXTAP_ENDPOINT)\n"


def test_migrations_run_from_the_installed_server_extra(
    install: Callable[[str | None], Path], tmp_path: Path
) -> None:
    bin_dir = install("server")
    url = f"sqlite:///{tmp_path / 'vxtap.db'}"
    upgraded = run([str(bin_dir / "vxtap"), "db", "upgrade", "--db", url])
    assert upgraded.returncode == 0, upgraded.stderr
    head = code_schema_revision()
    assert upgraded.stdout == f"schema upgraded from empty to {head}\n"
    status = run([str(bin_dir / "vxtap"), "db", "status", "--db", url])
    assert status.stdout == f"current {head} (this vxtap: {head})\n"
    collect = run([str(bin_dir / "vxtap"), "collect"])
    assert "needs the collector extra" in collect.stderr


@pytest.fixture
def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd (scripts/setup.sh)")
    return found


def verify(systemd_analyze: str, unit: Path) -> str:
    """systemd-analyze's complaints about a unit (it exits 0 on unknown keys and bad
    values, so its output is what counts)."""
    out = run([systemd_analyze, "verify", "--man=no", str(unit)], cwd=unit.parent)
    return (out.stdout + out.stderr).strip() or ("" if out.returncode == 0 else "failed")


def exposure(systemd_analyze: str, unit: Path) -> float:
    out = run([systemd_analyze, "security", "--offline=true", "--no-pager", str(unit)])
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", out.stdout)
    assert match is not None, out.stdout + out.stderr
    return float(match.group(1))


def test_installed_units_name_the_installed_executable_and_verify(
    install: Callable[[str | None], Path], tmp_path: Path, systemd_analyze: str
) -> None:
    bin_dir = install(None)
    units, config = tmp_path / "units", tmp_path / "etc-vxtap"
    done = run([str(bin_dir / "vxtap"), "install-units", "--dest", str(units),
                "--config-dir", str(config)])  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in units.iterdir()) == sorted([*UNITS, "vxtap-collect@.service"])
    assert sorted(p.name for p in config.iterdir()) == ["agent.toml", "collect.toml", "server.toml"]
    for unit in [*UNITS, "vxtap-collect@.service"]:
        text = (units / unit).read_text()
        (exec_start,) = [line for line in text.splitlines() if line.startswith("ExecStart=")]
        assert exec_start.split()[0] == f"ExecStart={bin_dir / 'vxtap'}"
        assert "NoNewPrivileges=yes" in text and "ProtectSystem=strict" in text
    for unit in [*UNITS, TEMPLATE_INSTANCE]:
        assert verify(systemd_analyze, units / unit) == "", unit
    # systemd's own rating of the hardening (0 best, 10 worst), kept where it is.
    for unit, worst in (("vxtap-server.service", 2.0), ("vxtap-agent.service", 3.0),
                        ("vxtap-collect.service", 2.5)):  # fmt: skip
        assert exposure(systemd_analyze, units / unit) <= worst, unit
    # The server's TLS drop-in of docs/deploy.md, as the guide writes it.
    drop_in = guide_block("The control plane", "# /etc/systemd/system/vxtap-server.service.d/")
    (units / "vxtap-server.service.d").mkdir()
    (units / "vxtap-server.service.d" / "tls.conf").write_text(drop_in)
    assert verify(systemd_analyze, units / "vxtap-server.service") == ""
    (units / "vxtap-server.service.d" / "tls.conf").write_text(drop_in.replace("Load", "Lod"))
    assert "Unknown key 'LodCredential'" in verify(systemd_analyze, units / "vxtap-server.service")
    # The check bites: a misspelt hardening line is reported.
    broken = tmp_path / "broken" / "vxtap-agent.service"
    broken.parent.mkdir()
    broken.write_text((units / "vxtap-agent.service").read_text().replace(
        "NoNewPrivileges=", "NoNewPrivilege="))  # fmt: skip
    assert "Unknown key 'NoNewPrivilege'" in verify(systemd_analyze, broken)


def test_the_example_configs_are_valid_for_their_commands(tmp_path: Path) -> None:
    """What install-units writes to /etc/vxtap is accepted by the command it configures."""
    from vxtap.cli._config import read_config
    from vxtap.cli.agent import agent
    from vxtap.cli.collect import collect
    from vxtap.cli.server import server

    for name, command in (("server", server), ("agent", agent), ("collect", collect)):
        path = REPO / "src" / "vxtap" / "systemd" / f"{name}.toml"
        settings = read_config(path, command)
        with command.make_context(name, ["--config", str(path)]) as ctx:
            for param, value in settings.items():
                assert ctx.params[param] is not None, (name, param, value)
