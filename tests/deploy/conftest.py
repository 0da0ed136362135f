"""The package as a user installs it: the wheel and sdist built from this tree once per
run, and fresh virtual environments outside the repository, filled from a wheelhouse
built once per run too (`pip wheel`, from the index pip is configured with)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.deploy import REPO, run


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)])
    assert built.returncode == 0, built.stdout + built.stderr
    return out


@pytest.fixture(scope="session")
def wheel(dist: Path) -> Path:
    (found,) = dist.glob("vxtap-*.whl")
    return found


@pytest.fixture(scope="session")
def wheelhouse(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    house = tmp_path_factory.mktemp("wheelhouse")
    got = run(
        [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(house),
         f"vxtap[all] @ {wheel.as_uri()}"]
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    return house


@pytest.fixture(scope="session")
def install(wheel: Path, wheelhouse: Path) -> Iterator[Callable[[str | None], Path]]:
    """A fresh virtual environment with the wheel and one extra (or none): its bin/.
    In a directory other users can read: an agent runs from it as user nobody. Made once
    per extra and run: the tests only run what is installed, none installs into it."""
    where = Path(tempfile.mkdtemp(prefix="vxtap-venvs-"))
    where.chmod(0o755)
    made_for: dict[str | None, Path] = {}

    def make(extra: str | None) -> Path:
        if extra in made_for:
            return made_for[extra]
        venv = where / f"venv-{extra or 'base'}"
        made = run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
        assert made.returncode == 0, made.stderr
        requirement = f"vxtap{f'[{extra}]' if extra else ''} @ {wheel.as_uri()}"
        got = run(
            [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
             "-q", "--no-index", "--find-links", str(wheelhouse), requirement]
        )  # fmt: skip
        assert got.returncode == 0, got.stderr
        made_for[extra] = venv / "bin"
        return made_for[extra]

    try:
        yield make
    finally:
        shutil.rmtree(where)
