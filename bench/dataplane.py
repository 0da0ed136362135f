"""Data plane benchmark: production cost and mirror completeness, side by side.

Topology (namespaces, removed at the end):
    client  eth0 10.10.0.1 --- eth0 10.10.0.2  source (iperf3 server, the mirror)
                               eth1 10.20.0.1 --- eth1 10.20.0.2  target
The target counts and drops VXLAN at its netdev ingress (a remote collector's NIC).

Modes, interleaved in every round:
  none      no mirroring
  hand      the minimal hand-written pipeline of the same fidelity: nft `dup` of TCP/UDP
            to a veth without segmentation offload, `fwd` at the peer's ingress to a
            plain VXLAN device, a small eBPF program at its egress (truncate to 96, and
            invalidate the hash: a symmetric outer source port, as vxtap gives)
  vxtap     compile_plan + Dataplane, one session mirroring all TCP/UDP inbound
            (on Linux >= 5.13 the program writes the VXLAN headers itself)
  vxtap-device  the same through the VXLAN device (`Dataplane(encapsulation="device")`,
            the path for older kernels and IPv6 targets)
  vxtap-sg  vxtap-device, then scatter-gather turned back on on vxtap's copy devices (vxtap
            before issue 15: isolates that flag's effect in the same run)
  vxtap-elb3  the session of vxtap with a target group of 3 healthy members (10.20.0.2-4,
            all on the target, all counted by the sink) instead of one port: the mirror
            program places each flow on a member (docs/dataplane.md "Flow placement");
            reports each member's share of the copies (kernel member counters and the sink
            per address)
  vxtap1k   the same session as the last of 3 on that device (two sessions of 10
            non-matching rules first), plus 997 sessions of 10 rules on other devices

Every mode also reports what the target received untruncated (outer IPv4 length above
20 + 8 + 8 + 96: an inner frame longer than the snap length) and as IP fragments; both
must be 0.

With --rules-ahead N[,N...] instead (the rules-per-filter quota, docs/control-plane.md):
  rules1    one session whose filter's first rule accepts TCP (then one for UDP)
  rulesN    the same session with N rules ahead of the accepting one, each failing only
            at its last test (TCP, both CIDRs matching, source ports matching, destination
            port not), so every TCP packet is compared with all of them
Production TCP (and the 64-byte UDP rate, which passes the TCP rules at their protocol
test) side by side, interleaved in every round.

With --program-ns, kernel.bpf_stats_enabled is 1 while the benchmark runs (restored
after) and each vxtap mode also reports the mirror program's own time per packet
(run_time_ns / run_cnt of the program at vxtap-mk1's tc ingress), per direction.

With --streams N, iperf3 runs N parallel flows (-P N) in every mode: vxtap-elb3 places
per flow, so with the default single data flow all its copies go to one member.

Run as root:  .venv/bin/python bench/dataplane.py [--rounds 3] [--seconds 3] [--modes ...]
              .venv/bin/python bench/dataplane.py --rules-ahead 100,1000 [--rounds 5]
"""

from __future__ import annotations

import argparse
import ctypes
import ipaddress
import json
import os
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vxtap.dataplane.bpf import asm, syscall
from vxtap.dataplane.kernel import Dataplane, PacketsBytes
from vxtap.dataplane.plan import compile_plan
from vxtap.model import (
    Action,
    DesiredState,
    Direction,
    EtherType,
    Filter,
    GroupMember,
    Port,
    PortRange,
    Protocol,
    Rule,
    Session,
    TargetGroup,
    TargetKind,
)
from vxtap.netns import Namespace, temporary_namespaces, veth

SOURCE = Port(id="p-src", host="source", device="eth0", ipv4=("10.10.0.2",))
TARGET = Port(id="p-tgt", host="target", device="eth1", ipv4=("10.20.0.2",))
SNAPLEN = 96


def _rule(
    fid: str, prio: int, protocol: Protocol, action: Action = Action.ACCEPT, **kw: object
) -> Rule:
    return Rule(
        id=f"{fid}-{prio}",
        filter_id=fid,
        direction=Direction.INGRESS,
        priority=prio,
        action=action,
        ethertype=EtherType.IPV4,
        protocol=protocol,
        **kw,  # type: ignore[arg-type]
    )


def one_session() -> DesiredState:
    f = Filter(id="f", name="f", rules=(_rule("f", 1, Protocol.TCP), _rule("f", 2, Protocol.UDP)))
    s = Session(
        id="s", name="s", filter_id="f", sources=(SOURCE.id,), target_id=TARGET.id, priority=3
    )
    return DesiredState(
        host="source", revision="1", ports=(SOURCE,), sessions=(s,), filters=(f,), targets=(TARGET,)
    )


# The members of vxtap-elb3's group: three addresses of the target namespace.
ELB_MEMBERS = tuple(
    Port(id=f"p-m{i}", host="target", device="eth1", ipv4=(f"10.20.0.{2 + i}",)) for i in range(3)
)


def elb_session() -> DesiredState:
    """one_session() with a group of the 3 ELB_MEMBERS, all healthy, as its target."""
    state = one_session()
    group = TargetGroup(
        id="tg",
        members=tuple(GroupMember(port_id=p.id, number=i) for i, p in enumerate(ELB_MEMBERS)),
    )
    session = state.sessions[0].model_copy(
        update={"target_id": group.id, "target_kind": TargetKind.ELB}
    )
    return state.model_copy(
        update={"sessions": (session,), "targets": ELB_MEMBERS, "groups": (group,)}
    )


def rules_ahead(count: int) -> DesiredState:
    """One session on the source; `count` TCP rules that fail only at the destination
    port come before the accepting ones (the iperf3 server listens on 5201)."""
    filler = tuple(
        _rule(
            "f",
            i + 1,
            Protocol.TCP,
            source_cidr=ipaddress.ip_network("10.10.0.0/24"),
            destination_cidr=ipaddress.ip_network("10.10.0.2/32"),
            source_ports=PortRange(start=1024, end=65535),
            destination_ports=PortRange(start=1 + i % 5000, end=1 + i % 5000),
        )
        for i in range(count)
    )
    accepting = (_rule("f", count + 1, Protocol.TCP), _rule("f", count + 2, Protocol.UDP))
    f = Filter(id="f", name="f", rules=filler + accepting)
    s = Session(
        id="s", name="s", filter_id="f", sources=(SOURCE.id,), target_id=TARGET.id, priority=3
    )
    return DesiredState(
        host="source",
        revision=f"r{count}",
        ports=(SOURCE,),
        sessions=(s,),
        filters=(f,),
        targets=(TARGET,),
    )


def thousand_sessions() -> DesiredState:
    """1,000 sessions x 10 rules; the real traffic passes 20 non-matching rules first."""
    base = one_session()
    filters, sessions, ports = list(base.filters), list(base.sessions), [SOURCE]
    for i in range(999):
        fid = f"f{i}"
        rules = tuple(
            _rule(
                fid,
                j + 1,
                Protocol.TCP,
                Action.ACCEPT if j % 2 else Action.REJECT,
                source_cidr=ipaddress.ip_network(f"172.{16 + j}.{i % 250}.0/24"),
                destination_ports=PortRange(start=1000 + j, end=2000 + j),
            )
            for j in range(10)
        )
        filters.append(Filter(id=fid, name=fid, rules=rules))
        if i < 2:  # two sessions before the real one on eth0
            sources = (SOURCE.id,)
        else:
            port = Port(
                id=f"p{i}",
                host="source",
                device=f"dummy{i}",
                ipv4=(f"10.99.{i // 250}.{i % 250 + 1}",),
            )
            ports.append(port)
            sources = (port.id,)
        sessions.append(
            Session(
                id=f"s{i}",
                name=f"s{i}",
                filter_id=fid,
                sources=sources,
                target_id=TARGET.id,
                priority=1 + i % 2,
            )
        )
    return DesiredState(
        host="source",
        revision="1k",
        ports=tuple(ports),
        sessions=tuple(sessions),
        filters=tuple(filters),
        targets=(TARGET,),
    )


def trunc_program(snaplen: int) -> bytes:
    """The hand-written pipeline's program: cut to snaplen, drop if the kernel refuses;
    invalidate the hash so the outer source port is the symmetric flow hash (same
    fidelity as vxtap: both directions of a flow share one outer port)."""
    a = asm.Assembler()
    a.movx(asm.Reg.R6, asm.Reg.R1)
    a.call(asm.Helper.SET_HASH_INVALID)
    a.movx(asm.Reg.R1, asm.Reg.R6)
    a.load32(asm.Reg.R2, asm.Reg.R1, asm.SkbField.LEN)
    a.jump(asm.Op.JLE_K, asm.Reg.R2, snaplen, "ok")
    a.mov(asm.Reg.R2, snaplen)
    a.mov(asm.Reg.R3, 0)
    a.call(asm.Helper.SKB_CHANGE_TAIL)
    a.jump(asm.Op.JEQ_K, asm.Reg.R0, 0, "ok")
    a.mov(asm.Reg.R0, asm.TC_ACT_SHOT)
    a.emit(asm.Op.EXIT)
    a.label("ok")
    a.mov(asm.Reg.R0, asm.TC_ACT_OK)
    a.emit(asm.Op.EXIT)
    return a.assemble()


HAND_NFT = """
table netdev hand {
  counter matched {}
  chain in { type filter hook ingress device "eth0" priority -500; policy accept;
    meta l4proto { tcp, udp } counter name "matched" dup to "hm0"
  }
  chain forward { type filter hook ingress device "hm1" priority 0; policy accept;
    fwd to "hvx"
  }
}
"""

# Outer IPv4 + UDP + VXLAN + the inner frame cut to SNAPLEN.
LONGEST_MIRROR = 20 + 8 + 8 + SNAPLEN
# Per member address, VXLAN counted (then dropped by the "vxlan" rule with the rest).
MEMBER_COUNTERS = "".join(f"  counter to-{p.ipv4[0]} {{}}\n" for p in ELB_MEMBERS)
MEMBER_RULES = "".join(
    f'    ip daddr {p.ipv4[0]} udp dport 4789 counter name "to-{p.ipv4[0]}"\n' for p in ELB_MEMBERS
)
SINK_NFT = f"""
table netdev sink {{
  counter vxlan {{}}
  counter fragments {{}}
  counter untruncated {{}}
{MEMBER_COUNTERS}  chain in {{ type filter hook ingress device "eth1" priority 0; policy accept;
    ip frag-off & 0x3fff != 0 counter name "fragments" drop
{MEMBER_RULES}    udp dport 4789 ip length > {LONGEST_MIRROR} counter name "untruncated"
    udp dport 4789 counter name "vxlan" drop
  }}
}}
"""


@dataclass
class Lab:
    client: Namespace
    source: Namespace
    target: Namespace
    dataplane: Dataplane

    def counter(self, ns: Namespace, table: str, name: str) -> int:
        out = ns.run(["nft", "-j", "list", "counter", "netdev", table, name]).stdout
        return int(json.loads(out)["nftables"][1]["counter"]["packets"])


def install_hand(lab: Lab) -> None:
    s = lab.source
    s.run(["ip", "link", "add", "hm0", "type", "veth", "peer", "name", "hm1"])
    s.run(
        [
            "ip",
            "link",
            "add",
            "hvx",
            "type",
            "vxlan",
            "id",
            "1",
            "dstport",
            "4789",
            "local",
            "10.10.0.2",
            "remote",
            "10.20.0.2",
            "nolearning",
        ]
    )
    for dev in ("hm0", "hm1", "hvx"):
        s.run(["ip", "link", "set", dev, "addrgenmode", "none"])
        s.run(["ip", "link", "set", dev, "up"])
    s.run(
        [
            "ethtool",
            "-K",
            "hm0",
            "tso",
            "off",
            "gso",
            "off",
            "tx-udp-segmentation",
            "off",
            "tx-gso-list",
            "off",
        ]
    )
    fd = syscall.load_program(trunc_program(SNAPLEN), "hand_trunc")
    with s.iproute() as ipr:
        idx = ipr.link_lookup(ifname="hvx")[0]
        ipr.tc("add", "clsact", idx)
        ipr.tc(
            "add-filter",
            "bpf",
            idx,
            ":1",
            fd=fd,
            name="hand",
            parent="ffff:fff3",
            classid=1,
            direct_action=True,
        )
    os.close(fd)
    s.run(["nft", "-f", "-"], input=HAND_NFT)


def remove_hand(lab: Lab) -> None:
    lab.source.run(["nft", "delete", "table", "netdev", "hand"], check=False)
    for dev in ("hm0", "hvx"):
        lab.source.run(["ip", "link", "del", dev], check=False)


def iperf(lab: Lab, seconds: int, udp: bool, streams: int = 1) -> dict[str, float]:
    argv = ["iperf3", "-c", "10.10.0.2", "-t", str(seconds), "-J", "-P", str(streams)]
    if udp:
        argv += ["-u", "-b", "0", "-l", "64"]
    out = json.loads(lab.client.run(argv, timeout=seconds + 30).stdout)
    end = out["end"]
    if udp:
        s = end["sum"]
        return {"pps": (s["packets"] - s["lost_packets"]) / s["seconds"], "bytes": s["bytes"]}
    r = end["sum_received"]
    return {"gbps": r["bits_per_second"] / 1e9, "bytes": r["bytes"]}


def mirror_program_stats(lab: Lab) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of the mirror program at vxtap-mk1's tc ingress; (0, 0)
    when there is none. Counted only while kernel.bpf_stats_enabled is 1."""
    out = lab.source.run(["tc", "-j", "filter", "show", "dev", "vxtap-mk1", "ingress"], check=False)
    if out.returncode != 0 or not out.stdout.strip():
        return 0, 0
    ids = [
        f["options"]["prog"]["id"]
        for f in json.loads(out.stdout)
        if f.get("kind") == "bpf" and "id" in (f.get("options") or {}).get("prog", {})
    ]
    if not ids:
        return 0, 0
    fd = syscall.prog_fd_by_id(int(ids[0]))
    try:
        info = bytearray(256)  # struct bpf_prog_info: run_time_ns at 192, run_cnt at 200
        buffer = (ctypes.c_char * len(info)).from_buffer(info)
        attr = bytearray(16)
        struct.pack_into("<IIQ", attr, 0, fd, len(info), ctypes.addressof(buffer))
        syscall.bpf(syscall.Cmd.OBJ_GET_INFO_BY_FD, attr)
        run_time_ns, run_cnt = struct.unpack_from("<QQ", info, 192)
        return int(run_time_ns), int(run_cnt)
    finally:
        os.close(fd)


def run_mode(lab: Lab, mode: str, seconds: int, udp: bool, streams: int = 1) -> dict[str, float]:
    sink = ("vxlan", "untruncated", "fragments", *(f"to-{p.ipv4[0]}" for p in ELB_MEMBERS))
    before = {name: lab.counter(lab.target, "sink", name) for name in sink}
    members_before = member_packets(lab)
    matched = matched_counter(lab, mode)
    before_m = matched()
    stats_before = mirror_program_stats(lab)
    dropped_before = path_drops(lab)
    result = iperf(lab, seconds, udp, streams)
    time.sleep(0.3)
    stats_after = mirror_program_stats(lab)
    result["path drops"] = path_drops(lab) - dropped_before
    members_after = member_packets(lab)
    runs = stats_after[1] - stats_before[1]
    if runs > 0:
        result["program_ns"] = (stats_after[0] - stats_before[0]) / runs
        result["program runs"] = runs  # one per copy: the program sees copies only
    for name in sink:
        result[name] = lab.counter(lab.target, "sink", name) - before[name]
    if mode == "vxtap-elb3":
        for p in ELB_MEMBERS:
            result[f"sink {p.id}"] = (
                lab.counter(lab.target, "sink", f"to-{p.ipv4[0]}") - before[f"to-{p.ipv4[0]}"]
            )
            result[f"kernel {p.id}"] = members_after.get(("s", p.id), 0) - members_before.get(
                ("s", p.id), 0
            )
    mirrored = result["vxlan"]
    result["mirrored"] = mirrored
    if mode != "none":
        if udp:
            result["complete"] = mirrored / max(1, matched() - before_m)
        else:  # per wire segment: the transfer's data segments of 1448 bytes (+ handshake)
            result["complete"] = mirrored / (result["bytes"] / 1448)
    return result


def path_drops(lab: Lab) -> int:
    """Packets the source's eth1 (the veth the copies leave by) dropped on transmit: a
    veth counts there what its peer's backlog refused."""
    out = lab.source.run(["ip", "-j", "-s", "link", "show", "eth1"]).stdout
    return int(json.loads(out)[0]["stats64"]["tx"]["dropped"])


def member_packets(lab: Lab) -> dict[object, int]:
    """The kernel's per-member copy counters, keyed (session id, member port id)."""
    return {key: c.packets for key, c in lab.dataplane.counters().members.items()}


def matched_counter(lab: Lab, mode: str) -> Callable[[], int]:
    if mode == "hand":
        return lambda: lab.counter(lab.source, "hand", "matched")
    if mode.startswith(("vxtap", "rules")):
        return lambda: lab.dataplane.counters().sessions.get("s", PacketsBytes()).packets
    return lambda: 0


def set_mode(lab: Lab, mode: str, plans: dict[str, object]) -> None:
    remove_hand(lab)
    lab.dataplane.cleanup()
    if mode == "hand":
        install_hand(lab)
    elif mode in plans:
        lab.dataplane.apply(plans[mode])  # type: ignore[arg-type]
    elif mode in ("vxtap-device", "vxtap-sg"):
        device_path = Dataplane(netns=lab.source.name, encapsulation="device")
        device_path.apply(plans["vxtap"])  # type: ignore[arg-type]
        for device in ("vxtap-mk0", "vxtap-pr0") if mode == "vxtap-sg" else ():
            lab.source.run(["ethtool", "-K", device, "sg", "on"])


def apply_times(rounds: int) -> dict[str, list[float]]:
    """1,000 sessions x 10 rules: compile, then apply fresh, unchanged, and changed."""
    big = thousand_sessions()
    changed = big.model_copy(update={"revision": "1k-b", "sessions": big.sessions[:-1]})
    names = [
        "compile",
        "first apply (creates devices)",
        "apply, unchanged",
        "apply, one session removed",
    ]
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        with temporary_namespaces("dp-bench-apply") as (ns,):
            dp = Dataplane(netns=ns.name)
            t = time.perf_counter()
            plan = compile_plan(big)
            times[names[0]].append(time.perf_counter() - t)
            other = compile_plan(changed)
            for name, p in ((names[1], plan), (names[2], plan), (names[3], other)):
                t = time.perf_counter()
                dp.apply(p)
                times[name].append(time.perf_counter() - t)
            dp.cleanup()
    return times


def print_rules_ahead(
    modes: list[str],
    results: dict[tuple[str, bool], list[dict[str, float]]],
    med: Callable[[list[float]], float],
) -> None:
    print(
        "| rules ahead of the accepting one | TCP Gbit/s (runs) | vs 1 rule "
        "| UDP 64 B kpps (runs) | vs 1 rule | TCP mirrors per wire segment |"
    )
    print("|---|---|---|---|---|---|")
    tcp = {m: med([x["gbps"] for x in results[(m, False)]]) for m in modes}
    udp = {m: med([x["pps"] for x in results[(m, True)]]) / 1e3 for m in modes}
    for m in modes:
        tcp_runs = ", ".join(f"{x['gbps']:.2f}" for x in results[(m, False)])
        udp_runs = ", ".join(f"{x['pps'] / 1e3:.0f}" for x in results[(m, True)])
        complete = med([x["complete"] for x in results[(m, False)]])
        cells = [
            "0 (one rule)" if m == "rules1" else m.removeprefix("rules"),
            f"{tcp[m]:.2f} ({tcp_runs})",
            f"{tcp[m] / tcp['rules1']:.2f}",
            f"{udp[m]:.0f} ({udp_runs})",
            f"{udp[m] / udp['rules1']:.2f}",
            f"{complete:.3f}",
        ]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument(
        "--udp-only",
        action="store_true",
        help="only the UDP packet rate of none/hand/vxtap (the noisiest figure), more rounds",
    )
    parser.add_argument(
        "--rules-ahead",
        default="",
        help="comma-separated rule counts: production with that many non-matching rules "
        "ahead of the accepting one, against one rule (and nothing else)",
    )
    parser.add_argument(
        "--modes",
        default="none,hand,vxtap,vxtap1k",
        help="comma-separated, interleaved: none, hand, vxtap, vxtap-device, vxtap-sg, vxtap1k, "
        "vxtap-elb3 "
        "(none and hand always run: the ratios are to them)",
    )
    parser.add_argument(
        "--streams",
        type=int,
        default=1,
        help="iperf3 -P: parallel flows in one client process (vxtap-elb3 places per flow, "
        "so its members' shares need several)",
    )
    parser.add_argument(
        "--no-apply-times", action="store_true", help="skip the 1,000-session apply timings"
    )
    parser.add_argument(
        "--program-ns",
        action="store_true",
        help="also report the mirror program's own ns per packet (kernel.bpf_stats_enabled)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    stats_sysctl = Path("/proc/sys/kernel/bpf_stats_enabled")
    stats_were = stats_sysctl.read_text().strip()
    if args.program_ns:
        stats_sysctl.write_text("1")
    try:
        run(args)
    finally:
        stats_sysctl.write_text(stats_were)


def run(args: argparse.Namespace) -> None:
    if args.rules_ahead:
        counts = [int(n) for n in args.rules_ahead.split(",")]
        plans = {"rules1": compile_plan(rules_ahead(0))}
        plans.update({f"rules{n}": compile_plan(rules_ahead(n)) for n in counts})
        modes = list(plans)
    else:
        plans = {
            "vxtap": compile_plan(one_session()),
            "vxtap1k": compile_plan(thousand_sessions()),
            "vxtap-elb3": compile_plan(elb_session()),
        }
        asked = [m for m in args.modes.split(",") if m not in ("none", "hand")]
        modes = ["none", "hand", "vxtap"] if args.udp_only else ["none", "hand", *asked]
    results: dict[tuple[str, bool], list[dict[str, float]]] = {}
    with temporary_namespaces("dp-bench-c", "dp-bench-s", "dp-bench-t") as (c, s, t):
        veth(c, "eth0", s, "eth0")
        veth(s, "eth1", t, "eth1")
        c.run(["ip", "addr", "add", "10.10.0.1/24", "dev", "eth0"])
        s.run(["ip", "addr", "add", "10.10.0.2/24", "dev", "eth0"])
        s.run(["ip", "addr", "add", "10.20.0.1/24", "dev", "eth1"])
        for p in ELB_MEMBERS:  # 10.20.0.2 is TARGET's address too
            t.run(["ip", "addr", "add", f"{p.ipv4[0]}/24", "dev", "eth1"])
        for p in ELB_MEMBERS:  # resolve the neighbours before the sink drops anything
            s.run(["ping", "-c", "1", p.ipv4[0]])
        t.run(["nft", "-f", "-"], input=SINK_NFT)
        server = s.popen(["iperf3", "-s"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lab = Lab(c, s, t, Dataplane(netns=s.name))
        try:
            time.sleep(0.5)
            for r in range(args.rounds):
                order = (
                    modes[r % len(modes) :] + modes[: r % len(modes)]
                )  # rotate: no mode always first
                for mode in order:
                    set_mode(lab, mode, plans)
                    for udp in (True,) if args.udp_only else (False, True):
                        results.setdefault((mode, udp), []).append(
                            run_mode(lab, mode, args.seconds, udp, args.streams)
                        )
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            server.kill()
            server.wait()
            remove_hand(lab)
            lab.dataplane.cleanup()
    med = statistics.median
    if args.rules_ahead:
        print_rules_ahead(modes, results, med)
        return
    if args.udp_only:
        udp_rates = {m: med(x["pps"] for x in results[(m, True)]) / 1e3 for m in modes}
        for m in modes:
            runs = ", ".join(f"{x['pps'] / 1e3:.0f}" for x in results[(m, True)])
            print(f"{m}: median {udp_rates[m]:.0f} kpps ({runs})")
        print(f"vxtap / hand: {udp_rates['vxtap'] / udp_rates['hand']:.2f}")
        return
    print(
        "| mode | TCP Gbit/s | vs none | vs hand | TCP mirrors per wire segment "
        "| UDP 64 B kpps | vs none | vs hand | UDP mirrored / matched "
        "| untruncated | fragmented |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    tcp = {m: med(x["gbps"] for x in results[(m, False)]) for m in modes}
    udp = {m: med(x["pps"] for x in results[(m, True)]) / 1e3 for m in modes}
    for m in modes:
        tc = "-" if m == "none" else f"{med(x['complete'] for x in results[(m, False)]):.3f}"
        uc = "-" if m == "none" else f"{med(x['complete'] for x in results[(m, True)]):.4f}"
        cells = [
            m,
            f"{tcp[m]:.2f}",
            f"{tcp[m] / tcp['none']:.2f}",
            f"{tcp[m] / tcp['hand']:.2f}",
            tc,
            f"{udp[m]:.0f}",
            f"{udp[m] / udp['none']:.2f}",
            f"{udp[m] / udp['hand']:.2f}",
            uc,
            str(sum(int(x["untruncated"]) for u in (False, True) for x in results[(m, u)])),
            str(sum(int(x["fragments"]) for u in (False, True) for x in results[(m, u)])),
        ]
        print("| " + " | ".join(cells) + " |")
    print("\nper round, TCP Gbit/s / UDP kpps (rounds rotate the mode order):")
    for m in modes:
        runs = zip(results[(m, False)], results[(m, True)], strict=True)
        print(f"  {m}: " + ", ".join(f"{t['gbps']:.2f}/{u['pps'] / 1e3:.0f}" for t, u in runs))
    for a, b, what in (
        ("vxtap-device", "vxtap-sg", "scatter-gather off vs on"),
        ("vxtap", "vxtap-device", "VXLAN in the program vs the device"),
    ):
        if a in modes and b in modes:
            ratios = f"TCP {tcp[a] / tcp[b]:.2f}, UDP {udp[a] / udp[b]:.2f}"
            print(f"\n{a} vs {b} ({what}): {ratios}")
    if args.program_ns:
        # Copies the mirror program handled (its run count: it sees copies only, one per
        # wire segment) against the copies the sink counted; the veth the copies leave
        # by counts on transmit what its peer's backlog refused.
        print("\ncopies into the mirror program vs at the sink, all runs:")
        for m in modes:
            for u in (False, True):
                mode_runs = results[(m, u)]
                if not all("program runs" in x for x in mode_runs):
                    continue
                sent = sum(int(x["program runs"]) for x in mode_runs)
                arrived = sum(int(x["mirrored"]) for x in mode_runs)
                drops = sum(int(x["path drops"]) for x in mode_runs)
                print(
                    f"  {m} {'UDP' if u else 'TCP'}: program {sent}, sink {arrived}, missing "
                    f"{sent - arrived} ({(sent - arrived) / max(1, sent):.5%}), "
                    f"veth tx drops {drops}"
                )
    if args.program_ns:
        print("\nmirror program, ns per packet (bpf_stats; median of rounds, TCP / UDP):")
        for m in modes:
            per_round = [
                [x["program_ns"] for x in results[(m, u)] if "program_ns" in x]
                for u in (False, True)
            ]
            if all(per_round):
                cells = " / ".join(f"{med(values):.0f}" for values in per_round)
                runs = " / ".join(", ".join(f"{v:.0f}" for v in values) for values in per_round)
                print(f"  {m}: {cells} ({runs})")
    if "vxtap" in modes and "vxtap-elb3" in modes:
        elb_tcp, elb_udp = tcp["vxtap-elb3"] / tcp["vxtap"], udp["vxtap-elb3"] / udp["vxtap"]
        print(
            f"\ngroup of 3 vs one port (vxtap-elb3 / vxtap): TCP {elb_tcp:.2f}, UDP {elb_udp:.2f}"
        )
        print("vxtap-elb3, each member's share of the copies (kernel counter / sink), all runs:")
        for u in (False, True):
            runs = results[("vxtap-elb3", u)]
            for source in ("kernel", "sink"):
                counts = {p.id: sum(x[f"{source} {p.id}"] for x in runs) for p in ELB_MEMBERS}
                total = max(1.0, sum(counts.values()))
                shares = ", ".join(f"{k} {v / total:.3f} ({int(v)})" for k, v in counts.items())
                print(f"  {'UDP' if u else 'TCP'} {source}: {shares}")
    if "vxtap" in modes and "vxtap1k" in modes:
        one_k_tcp, one_k_udp = tcp["vxtap1k"] / tcp["vxtap"], udp["vxtap1k"] / udp["vxtap"]
        print(f"\n1,000 sessions vs 1: TCP {one_k_tcp:.2f}, UDP {one_k_udp:.2f}")
    if args.no_apply_times:
        return
    print("\n| 1,000 sessions x 10 rules | median s | runs |")
    print("|---|---|---|")
    for name, values in apply_times(args.rounds).items():
        print(f"| {name} | {med(values):.3f} | {', '.join(f'{v:.3f}' for v in values)} |")


if __name__ == "__main__":
    main()
