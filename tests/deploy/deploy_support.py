"""Helpers of the deployment tests: running a command as a user would, outside the
repository."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """A command outside the repository: no PYTHONPATH, another working directory."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("VXTAP_")}
    return subprocess.run(  # type: ignore[call-overload,no-any-return]
        argv, capture_output=True, text=True, timeout=300, env=env, **{"cwd": "/", **kwargs}
    )
