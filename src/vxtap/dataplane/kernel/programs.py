"""The mirror programs at tc (clsact, a bpf filter per hook) and the tunnel map they hold.

Filters are read with `tc -j` (pyroute2 0.9.7 does not decode TCA_BPF_ID) and attached
by one hand-written RTM_NEWTFILTER (`netlink.replace_bpf_filter`). The map is found
again through the attached program (prog id -> map id), so no bpffs pin is needed and
removing the devices removes every trace.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vxtap.dataplane import diff
from vxtap.dataplane.bpf import asm, syscall
from vxtap.dataplane.kernel import netlink
from vxtap.dataplane.kernel.shell import DataplaneError, Run, checked
from vxtap.dataplane.kernel.snapshot import NOTHING, Changed, Filter, Hook, Link, TunnelMap

TC_INGRESS_PARENT = 0xFFFFFFF2
TC_EGRESS_PARENT = 0xFFFFFFF3


def read_filters(run: Run, device: str, hook: str) -> tuple[Filter, ...]:
    """(name, prog id) of the bpf filters at a device's tc ingress or egress."""
    out = run(["tc", "-j", "filter", "show", "dev", device, hook])
    if out.returncode != 0 or not out.stdout.strip():
        return ()
    found: list[Filter] = []
    for f in json.loads(out.stdout):
        options = f.get("options") or {}
        prog = options.get("prog") or {}
        if f.get("kind") == "bpf" and "id" in prog:
            found.append((options.get("bpf_name", ""), int(prog["id"])))
    return tuple(found)


def tunnel_map_id(
    links: Mapping[str, Link], filters: Mapping[Hook, Sequence[Filter]]
) -> int | None:
    """The id of the tunnel map the attached mirror programs use, if any."""
    for device, hook, kind in diff.PROGRAMS:
        if device not in links or kind is not asm.ProgramKind.MIRROR:
            continue
        for name, prog_id in filters.get((device, hook), ()):
            if not name.startswith("vxtap-"):
                continue
            try:
                prog_fd = syscall.prog_fd_by_id(prog_id)
            except OSError:
                continue
            try:
                map_ids = syscall.prog_map_ids(prog_fd)
            finally:
                os.close(prog_fd)
            if map_ids:
                return map_ids[0]
    return None


def read_tunnel_map(
    links: Mapping[str, Link], filters: Mapping[Hook, Sequence[Filter]]
) -> TunnelMap | None:
    """The tunnel map the attached mirror programs use, with its entries."""
    map_id = tunnel_map_id(links, filters)
    if map_id is None:
        return None
    map_fd = syscall.map_fd_by_id(map_id)
    try:
        return TunnelMap(map_id, syscall.map_value_size(map_fd), dict(syscall.map_items(map_fd)))
    finally:
        os.close(map_fd)


@dataclass(frozen=True)
class Attached:
    """What `fix` leaves: the tunnel map the programs use (an fd the caller closes), its
    entries before the apply writes them, and what `fix` changed."""

    map_fd: int
    entries: Mapping[int, bytes]
    changed: Changed


def fix(
    run: Run,
    netns: str | None,
    links: Mapping[str, Link],
    filters: Mapping[Hook, Sequence[Filter]],
    tunnel_map: TunnelMap | None,
) -> Attached:
    """Attach each program where it belongs, keeping the tunnel map in use unless it has
    an older layout (its programs are then replaced)."""
    if tunnel_map is not None and tunnel_map.value_size == asm.VALUE_SIZE:
        map_fd, entries = syscall.map_fd_by_id(tunnel_map.map_id), tunnel_map.entries
    else:
        map_fd, entries = syscall.create_tunnel_map(), {}
    changed = NOTHING
    try:
        for device, hook, kind in diff.PROGRAMS:
            present = filters.get((device, hook), ())
            if diff.attached(present, kind):
                continue
            changed |= Changed(filters=frozenset({(device, hook)}))
            attach(run, netns, links[device].index, device, hook, kind, map_fd, present)
    except BaseException:
        os.close(map_fd)
        raise
    return Attached(map_fd, entries, changed)


def attach(
    run: Run,
    netns: str | None,
    index: int,
    device: str,
    hook: str,
    kind: asm.ProgramKind,
    map_fd: int,
    present: Sequence[Filter],
) -> None:
    wanted = diff.program_name(kind)
    parent = TC_INGRESS_PARENT if hook == "ingress" else TC_EGRESS_PARENT
    run(["tc", "qdisc", "add", "dev", device, "clsact"])  # fails when present
    if len(present) > 1 or any(not name.startswith("vxtap-") for name, _ in present):
        checked(run, ["tc", "filter", "del", "dev", device, hook])
    scratch_fd = syscall.create_scratch_map()  # the program holds it; no one else needs it
    try:
        code = asm.program(kind, map_fd, scratch_fd)
        prog_fd = syscall.load_program(code, f"vxtap_{kind.value}")
    finally:
        os.close(scratch_fd)
    try:
        # Replaced in place (same preference and handle): an upgraded program
        # takes over without a moment with no program.
        netlink.replace_bpf_filter(netns, index, parent, prog_fd, wanted)
    except OSError as error:
        raise DataplaneError(
            f"attaching program {wanted} at tc {hook} of {device}: {error.strerror}"
        ) from None
    finally:
        os.close(prog_fd)
