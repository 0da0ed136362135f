"""The `lan` fixture: see tests/support/dataplane_lan.py."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.dataplane_lan import SINK, Lan
from vxtap.dataplane.kernel import Dataplane
from vxtap.netns import Namespace, veth


@pytest.fixture(params=["program", "device"])
def lan(
    make_namespace: Callable[[str], Namespace], request: pytest.FixtureRequest
) -> Iterator[Lan]:
    """Every data plane test runs on both encapsulation paths (docs/dataplane.md)."""
    switch = make_namespace("dp-sw")
    hosts = {role: make_namespace(f"dp-{role}") for role in ("test", "src", "tgt")}
    switch.run(["ip", "link", "add", "br0", "type", "bridge"])
    switch.run(["ip", "link", "set", "br0", "up"])
    for role, last in (("test", "161"), ("src", "230"), ("tgt", "164")):
        ns = hosts[role]
        veth(ns, "eth0", switch, f"p-{role}")
        switch.run(["ip", "link", "set", f"p-{role}", "master", "br0"])
        ns.run(["ip", "addr", "add", f"192.168.0.{last}/24", "dev", "eth0"])
        ns.run(["ip", "addr", "add", f"fd00::{last}/64", "dev", "eth0", "nodad"])
    hosts["tgt"].run(["nft", "-f", "-"], input=SINK)
    dataplane = Dataplane(netns=hosts["src"].name, encapsulation=request.param)
    with tempfile.TemporaryDirectory(prefix="vxtap-dp-") as workdir:
        try:
            yield Lan(switch, hosts["test"], hosts["src"], hosts["tgt"], dataplane, Path(workdir))
        finally:
            # Removing the namespace would remove all of it too; cleanup() is tested, and
            # must leave nothing even after a failed test.
            with contextlib.suppress(Exception):
                dataplane.cleanup()
