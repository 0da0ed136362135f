"""A `Run` that answers from output recorded on a real kernel, and records the commands.

The files in recorded/ came from a namespace after `Dataplane.apply` (ip_link.txt,
ethtool_mk0/1.txt, tc_mk1.txt), from a fresh veth (ethtool_fresh_mk0.txt), and from a
namespace with a 9000-byte device and a route with its own MTU (ip_link_routes.txt,
routes.txt), on Linux 6.x with iproute2 6.x and ethtool 6.x.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

RECORDED = Path(__file__).parent / "recorded"


def recorded(name: str) -> str:
    return (RECORDED / name).read_text()


class Recorded:
    """Answers each command with its recorded output ("" when none was recorded), or
    fails the commands listed in `refused` with that stderr."""

    def __init__(
        self, answers: Mapping[str, str] | None = None, refused: Mapping[str, str] | None = None
    ) -> None:
        self.answers = dict(answers or {})
        self.refused = dict(refused or {})
        self.commands: list[str] = []
        self.stdins: list[str | None] = []

    def __call__(
        self, argv: Sequence[str], stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        command = " ".join(argv)
        self.commands.append(command)
        self.stdins.append(stdin)
        if command in self.refused:
            return subprocess.CompletedProcess(list(argv), 1, "", self.refused[command])
        return subprocess.CompletedProcess(list(argv), 0, self.answers.get(command, ""), "")
