"""The pure modules import nothing that does I/O: no HTTP client or server, no database.

Checked in a fresh interpreter, so that what another test imported cannot hide a leak.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PURE = ["vxtap.wire.fields", "vxtap.wire.requests", "vxtap.wire.answers", "vxtap.wire.query",
        "vxtap.model", "vxtap.agent.decide"]  # fmt: skip
IO = ("httpx", "sqlalchemy", "fastapi", "starlette", "uvicorn", "psycopg", "pyroute2",
      "vxtap.client", "vxtap.store", "vxtap.api")  # fmt: skip


@pytest.mark.parametrize("module", PURE)
def test_a_pure_module_imports_no_io(module: str) -> None:
    code = f"import sys, json\n__import__({module!r})\nprint(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
    )
    leaked = [m for m in loaded if m.split(".")[0] in IO or m.startswith(IO)]
    assert leaked == []
