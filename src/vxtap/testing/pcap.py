"""pcap files read back by the real tcpdump and tshark: for tests."""

from __future__ import annotations

import subprocess
from pathlib import Path


def tshark(path: Path, *fields: str) -> list[list[str]]:
    """`tshark -T fields`: one row of the given fields per packet of the file."""
    argv = ["tshark", "-r", str(path), "-T", "fields"]
    for field in fields:
        argv += ["-e", field]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60)
    return [row.split("\t") for row in out.stdout.splitlines()]


def tcpdump(path: Path) -> subprocess.CompletedProcess[str]:
    """`tcpdump -nn -r`, not checked: the caller reads its exit status and stderr."""
    return subprocess.run(
        ["tcpdump", "-nn", "-r", str(path)], capture_output=True, text=True, check=False, timeout=60
    )
