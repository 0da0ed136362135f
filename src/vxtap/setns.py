"""Moving the calling thread into a named network namespace.

Its own module, without pyroute2, so the agent's data plane can use it without
importing pyroute2 (~10 MiB of the agent's memory); `vxtap.netns` uses it too.
"""

from __future__ import annotations

import ctypes

CLONE_NEWNET = 0x40000000
_LIBC = ctypes.CDLL(None, use_errno=True)


def enter_namespace(name: str) -> None:
    """setns(2) into /var/run/netns/NAME; it moves only the calling thread.

    (os.setns arrives in Python 3.12.)"""
    with open(f"/var/run/netns/{name}", "rb") as handle:
        if _LIBC.setns(handle.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into namespace {name} failed")
