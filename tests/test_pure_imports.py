"""The pure cores import nothing that does I/O, and each has its own test file.

A pure module (no I/O, deterministic) is what the design keeps testable without a
kernel, a server or a database (docs/architecture.md). Purity is easy to lose by
one import: `agent/decide.py` once imported the HTTP client for a value type. Each
module is imported alone in a fresh interpreter and `sys.modules` is checked:

- every `vxtap` module loaded must itself be one of the pure modules (or a package's
  `__init__`): a pure module may only build on pure modules;
- none of the third-party or standard modules that exist to do I/O may be loaded:
  HTTP clients and servers, the database drivers and ORM, pyroute2, metrics
  exporters, the CLI toolkits, and subprocess/ctypes/mmap/ssl, which our adapters
  use for kernel and network work. `socket` and `select` are not listed: the
  standard library imports them as a side effect (pydantic pulls them in), so
  their presence says nothing about our code.

Modules another branch of this change introduces (`vxtap.wire`, `dataplane.diff`,
`dataplane.bpf.asm`) are skipped while they do not exist.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PURE = (
    "vxtap.model",
    "vxtap.evaluate",
    "vxtap.auth",
    "vxtap.dataplane.plan",
    "vxtap.agent.decide",
    "vxtap.agent.admit",
    "vxtap.collector.decode",
    "vxtap.lab.scenario",
    "vxtap.lab.secgroups",
    "vxtap.lab.verify",
    "vxtap.wire",
    "vxtap.wire.fields",
    "vxtap.wire.requests",
    "vxtap.wire.answers",
    "vxtap.wire.query",
    "vxtap.dataplane.diff",
    "vxtap.dataplane.bpf.asm",
    "vxtap.dataplane.placement",
)
PACKAGES = {"vxtap", "vxtap.agent", "vxtap.collector", "vxtap.dataplane", "vxtap.lab"}
PACKAGES |= {"vxtap.dataplane.bpf"}  # once split, its __init__ must stay import-light
IO_MODULES = (
    "httpx",
    "httpcore",
    "h11",
    "anyio",
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "pyroute2",
    "prometheus_client",
    "numba",
    "click",
    "rich",
    "jinja2",
    "subprocess",
    "ctypes",
    "mmap",
    "ssl",
)
TESTS = Path(__file__).parent


def _loaded_after_import(module: str) -> list[str] | None:
    """The modules loaded by importing `module` alone; None if it does not exist yet."""
    code = (
        "import importlib, json, sys\n"
        "try:\n"
        f"    importlib.import_module({module!r})\n"
        "except ModuleNotFoundError as error:\n"
        f"    if not {module!r}.startswith(error.name or '?'):\n"
        "        raise\n"
        "    print('null'); raise SystemExit\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded: list[str] | None = json.loads(done.stdout)
    return loaded


@pytest.mark.parametrize("module", PURE)
def test_a_pure_module_imports_no_io(module: str) -> None:
    loaded = _loaded_after_import(module)
    if loaded is None:
        pytest.skip(f"{module} does not exist on this branch yet")
    impure_ours = [m for m in loaded if m.startswith("vxtap") and m not in (*PURE, *PACKAGES)]
    io = [m for m in loaded if m.split(".")[0] in IO_MODULES]
    assert (impure_ours, io) == ([], [])


@pytest.mark.parametrize("module", PURE)
def test_a_pure_module_has_its_own_test_file(module: str) -> None:
    """tests/ mirrors src/vxtap/: vxtap.a.b is tested in tests/a/test_b.py."""
    if _loaded_after_import(module) is None:
        pytest.skip(f"{module} does not exist on this branch yet")
    *package, name = module.split(".")[1:]
    if name == "__init__" or module in PACKAGES or module == "vxtap.wire":
        pytest.skip("a package: its modules have the test files")
    assert (TESTS.joinpath(*package) / f"test_{name}.py").is_file()


def test_the_check_can_fail() -> None:
    """An adapter is caught: the kernel adapter loads subprocess and the plan."""
    loaded = _loaded_after_import("vxtap.dataplane.kernel")
    assert loaded is not None and "subprocess" in loaded
