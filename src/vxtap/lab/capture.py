"""Decoding what a target captured: tshark reads the pcap tcpdump wrote.

The lab checks vxtap with decoders that are not vxtap's own: tcpdump prints
the capture the user reads (the seed's `tcpdump -i eth0 udp port 4789 -nne`),
and tshark's dissectors turn the same pcap into fields the expectations are
checked against. Only the parsing of tshark's field output lives here (pure);
running it is one subprocess call.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from vxtap.lab.runtime import LabError
from vxtap.lab.verify import Mirrored
from vxtap.model import IP_PROTOCOL_NUMBER, Protocol

# Each field appears once per occurrence in the frame, outer header first.
FIELDS = (
    "ip.src",
    "ip.dst",
    "vxlan.vni",
    "ip.proto",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.len",
    "udp.srcport",
    "udp.dstport",
    "udp.length",
    "ipv6.src",
    "ipv6.dst",
    "frame.cap_len",
)
# Ethernet + IPv4 + UDP + VXLAN in front of the inner frame (the lab's underlay is IPv4).
OUTER_HEADERS = 14 + 20 + 8 + 8
_PROTOCOL_BY_NUMBER = {number: proto for proto, number in IP_PROTOCOL_NUMBER.items()}


def tshark_argv(pcap: Path) -> list[str]:
    argv = ["tshark", "-r", str(pcap), "-n", "-T", "fields"]
    argv += ["-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,"]
    for field in FIELDS:
        argv += ["-e", field]
    return argv


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def parse_fields(text: str, target: str, *, inner_vni: int | None = None) -> list[Mirrored]:
    """tshark's tab-separated fields (one line per frame) -> decoded mirrors.

    Frames that are not VXLAN (no vni) are skipped: tcpdump's filter already
    kept only UDP 4789, so such a frame would be a non-VXLAN datagram, which
    tshark then shows as plain UDP. With `inner_vni` the frames are already
    decapsulated (the collector's pcap of one VNI): no outer headers."""
    packets: list[Mirrored] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cols = (line.split("\t") + [""] * len(FIELDS))[: len(FIELDS)]
        row = dict(zip(FIELDS, cols, strict=True))
        if inner_vni is not None:
            # Pretend an empty outer header, so one parser serves both.
            row = {
                **row,
                "ip.src": f",{row['ip.src']}" if row["ip.src"] else "",
                "ip.dst": f",{row['ip.dst']}" if row["ip.dst"] else "",
                "ip.proto": f"17,{row['ip.proto']}" if row["ip.proto"] else "",
                "udp.srcport": f"0,{row['udp.srcport']}" if row["udp.srcport"] else "",
                "udp.dstport": f"0,{row['udp.dstport']}" if row["udp.dstport"] else "",
                "udp.length": f"0,{row['udp.length']}" if row["udp.length"] else "",
                "vxlan.vni": str(inner_vni),
            }
        vnis = _ints(row["vxlan.vni"])
        ip_src, ip_dst = row["ip.src"].split(","), row["ip.dst"].split(",")
        if not vnis or (inner_vni is None and not ip_src[0]):
            continue
        protos = _ints(row["ip.proto"])
        udp_sports, udp_dports = _ints(row["udp.srcport"]), _ints(row["udp.dstport"])
        udp_lengths = _ints(row["udp.length"])
        protocol: Protocol | None = None
        src = dst = None
        sport = dport = payload = None
        if len(ip_src) > 1:  # inner IPv4
            src, dst = ip_src[1], ip_dst[1]
            protocol = _PROTOCOL_BY_NUMBER.get(protos[1]) if len(protos) > 1 else None
        elif row["ipv6.src"]:
            src, dst = row["ipv6.src"].split(",")[0], row["ipv6.dst"].split(",")[0]
        if protocol is Protocol.TCP and row["tcp.srcport"]:
            sport, dport = _ints(row["tcp.srcport"])[0], _ints(row["tcp.dstport"])[0]
            payload = _ints(row["tcp.len"])[0] if row["tcp.len"] else None
        elif protocol is Protocol.UDP and len(udp_sports) > 1:
            sport, dport = udp_sports[1], udp_dports[1]
            payload = udp_lengths[1] - 8 if len(udp_lengths) > 1 else None
        packets.append(
            Mirrored(
                target=target,
                outer_src=ip_src[0],
                outer_dst=ip_dst[0],
                vni=vnis[0],
                protocol=protocol,
                src=src,
                dst=dst,
                sport=sport,
                dport=dport,
                payload_length=payload,
                frame_length=_frame_length(row["frame.cap_len"], inner_vni is not None),
            )
        )
    return packets


def _frame_length(cap_len: str, decapsulated: bool) -> int | None:
    if not cap_len.isdigit():
        return None
    return int(cap_len) if decapsulated else int(cap_len) - OUTER_HEADERS


def decode_pcap(pcap: Path, target: str, *, inner_vni: int | None = None) -> list[Mirrored]:
    if not pcap.exists() or pcap.stat().st_size == 0:
        return []
    try:
        out = subprocess.run(
            tshark_argv(pcap), capture_output=True, text=True, check=True, timeout=60
        )
    except FileNotFoundError:
        raise LabError("tshark is not installed (apt-get install tshark)") from None
    except subprocess.CalledProcessError as error:
        raise LabError(f"tshark could not read {pcap}: {error.stderr.strip()}") from None
    return parse_fields(out.stdout, target, inner_vni=inner_vni)


def decode_collector_dir(directory: Path, target: str) -> list[Mirrored]:
    """The collector's pcap series (`vni<N>-...pcap`, inner frames), decoded."""
    packets: list[Mirrored] = []
    for pcap in sorted(directory.glob("vni*.pcap")):
        vni = pcap.name.removeprefix("vni").split("-", 1)[0]
        if vni.isdigit():
            packets += decode_pcap(pcap, target, inner_vni=int(vni))
    return packets


def flow_key(packet: Mirrored) -> tuple[object, ...]:
    """What tcpdump's and the collector's view of one mirror must agree on."""
    return (
        packet.vni,
        packet.protocol,
        packet.src,
        packet.dst,
        packet.sport,
        packet.dport,
        packet.payload_length,
        packet.frame_length,
    )
