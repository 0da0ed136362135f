"""Helpers of the deployment tests: running a command as a user would, outside the
repository."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "deploy.md"


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """A command outside the repository: no PYTHONPATH, another working directory."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("VXTAP_")}
    return subprocess.run(  # type: ignore[call-overload,no-any-return]
        argv, capture_output=True, text=True, timeout=300, env=env, **{"cwd": "/", **kwargs}
    )


def guide_block(heading: str, first_line: str) -> str:
    """The fenced code block of section `heading` that starts with `first_line`."""
    section = GUIDE.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    for block in re.findall(r"```\w*\n(.*?)```", section, flags=re.S):
        if block.startswith(first_line):
            return str(block)
    raise AssertionError(f"docs/deploy.md, {heading}: no block starting {first_line!r}")
