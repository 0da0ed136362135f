"""How the kernel modules run iproute2, ethtool, tc and nft, and the error they raise.

Every command goes through a `Run`: by default a subprocess in the `Dataplane`'s network
namespace; a test passes recorded output instead, so the ensure logic of `devices` and
`nftables` is tested without root next to the namespace tests.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Protocol


class DataplaneError(RuntimeError):
    """The kernel refused a change, or does not show what was applied."""


class Run(Protocol):
    def __call__(
        self, argv: Sequence[str], stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]: ...


def namespace_runner(netns: str | None) -> Run:
    """Run commands in network namespace `netns` (None: the current one)."""

    def run(argv: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
        return subprocess.run(
            full, input=stdin, capture_output=True, text=True, check=False, timeout=60
        )

    return run


def checked(run: Run, argv: Sequence[str], stdin: str | None = None) -> str:
    """Run a command that must succeed; its output."""
    out = run(argv, stdin)
    if out.returncode != 0:
        raise DataplaneError(f"{' '.join(argv)}: {out.stderr.strip()}")
    return out.stdout
