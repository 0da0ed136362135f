"""Named network namespaces: create, run commands in, wire together, remove.

Used by the lab (its servers are namespaces) and by every test that needs a
kernel. Creation is idempotent and removal never raises for a namespace that is
already gone, so a crashed run can always be cleaned up by running again.
All names carry the `vxtap-` prefix, which is how leftovers are found.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from pyroute2 import IPRoute, netns

from vxtap.setns import enter_namespace

PREFIX = "vxtap-"
T = TypeVar("T")


@dataclass(frozen=True)
class Namespace:
    name: str

    def __post_init__(self) -> None:
        if not self.name.startswith(PREFIX):
            raise ValueError(f"namespace {self.name!r} must start with {PREFIX!r}")

    @classmethod
    def create(cls, name: str) -> Namespace:
        ns = cls(name)
        if name not in netns.listnetns():
            netns.create(name)
        ns.run(["ip", "link", "set", "lo", "up"])
        return ns

    def delete(self) -> None:
        """Remove the namespace, killing any process still running in it."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        if self.name in netns.listnetns():
            netns.remove(self.name)

    def pids(self) -> list[int]:
        out = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, check=False
        )
        return [int(p) for p in out.stdout.split()]

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        input: str | bytes | None = None,
        timeout: float | None = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace and return its text output."""
        text_input = input.decode() if isinstance(input, bytes) else input
        return subprocess.run(
            self.exec_argv(argv),
            capture_output=True,
            text=True,
            check=check,
            input=text_input,
            timeout=timeout,
        )

    def popen(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.exec_argv(argv), **kwargs)  # type: ignore[call-overload,no-any-return]

    def iproute(self) -> IPRoute:
        return IPRoute(netns=self.name)


def unique_name(role: str) -> str:
    """A fresh `vxtap-<role>-<random>` name, short enough for an interface too."""
    return f"{PREFIX}{role}-{secrets.token_hex(3)}"


def veth(a: Namespace, a_if: str, b: Namespace, b_if: str) -> None:
    """A veth pair with one end in each namespace, both ends up."""
    with IPRoute() as ipr:
        tmp_a, tmp_b = f"vxt{secrets.token_hex(4)}", f"vxt{secrets.token_hex(4)}"
        ipr.link("add", ifname=tmp_a, kind="veth", peer=tmp_b)
        for tmp, ns, final in ((tmp_a, a, a_if), (tmp_b, b, b_if)):
            idx = ipr.link_lookup(ifname=tmp)[0]
            ipr.link("set", index=idx, net_ns_fd=ns.name)
            with ns.iproute() as nsr:
                nidx = nsr.link_lookup(ifname=tmp)[0]
                nsr.link("set", index=nidx, ifname=final, state="up")


def leftover_namespaces() -> list[str]:
    return sorted(n for n in netns.listnetns() if n.startswith(PREFIX))


@contextlib.contextmanager
def temporary_namespaces(*roles: str) -> Iterator[list[Namespace]]:
    """Fresh namespaces that are removed afterwards, also when the body fails."""
    created: list[Namespace] = []
    try:
        for role in roles:
            created.append(Namespace.create(unique_name(role)))
        yield created
    finally:
        for ns in created:
            ns.delete()


class NamespaceThread:
    """Runs calls on one thread that lives in namespace `ns`.

    Sockets it opens (httpx, pyroute2) and processes it starts (nft, tc) are in
    `ns` too, so a test can drive in-process code against a namespace without
    `ip netns exec` and a fresh interpreter per call.
    """

    def __init__(self, ns: Namespace) -> None:
        self._pool = ThreadPoolExecutor(1, initializer=enter_namespace, initargs=(ns.name,))

    def __call__(self, function: Callable[..., T], *args: object) -> T:
        return self._pool.submit(function, *args).result()

    def close(self) -> None:
        self._pool.shutdown()
