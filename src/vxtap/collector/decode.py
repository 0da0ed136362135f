"""Mirrored datagrams as values: outer IP/UDP, VXLAN (RFC 7348), the inner frame.

Pure: bytes in, values and text out. Two levels, because they run at very
different rates:

- `classify()` is the per-packet fast path used for every datagram (counters,
  pcap): it finds the VNI, where the inner frame is, and its original length,
  touching only a handful of header bytes. It works on any buffer that supports
  indexing and slicing (bytes, mmap), at an offset, so the receiver hands it the
  kernel's ring memory without copying.
- `decode()` builds a full `DecodedPacket` (MACs, IP, TCP/UDP/ICMP fields) for the
  human line (`render_line`, in the spirit of `tcpdump -nne`) and `--json`
  (`to_json`).

Inner lengths: a mirror may be cut to the session's packet_length. The original
frame length is still known from the inner IP header (14 + IPv4 total length, or
14 + 40 + IPv6 payload length, 4 more with a VLAN tag); that is what pcap records
as orig_len and what the printed line reports.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

VXLAN_FLAGS = 0x08  # only the I flag: what every vxtap source (and RFC 7348) sends
ETH_HEADER_LEN = 14
NO_VNI = -1  # counters key for datagrams too broken to carry a VNI

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_ARP = 0x0806
ETHERTYPE_VLAN = (0x8100, 0x88A8)
ETHERTYPE_NAMES = {ETHERTYPE_IPV4: "IPv4", ETHERTYPE_IPV6: "IPv6", ETHERTYPE_ARP: "ARP"}


class Kind(IntEnum):
    """What the collector does with a datagram."""

    OK = 0  # stored and shown
    TRUNCATED = 1  # a cut copy: stored with its original length, marked
    BAD_INNER = (
        2  # inner frame is broken (e.g. cut inside the IP header): stored, counted malformed
    )
    MALFORMED = 3  # not a usable VXLAN datagram: counted and shown, not stored


class Buffer(Protocol):
    """bytes, bytearray, memoryview or mmap."""

    def __getitem__(self, index: Any) -> Any: ...

    def __len__(self) -> int: ...


# (kind, vni, outer source address bytes, inner offset, inner end, original inner length, reason)
Classified = tuple[Kind, int, bytes, int, int, int, str | None]


def classify(buf: Buffer, base: int, length: int) -> Classified:
    """Classify the outer IP datagram at buf[base:base+length].

    Offsets returned (inner, end) are relative to base. `length` may exceed the
    outer IP length (Ethernet padding of short frames): the IP length decides
    where the datagram ends.
    """
    if length < 1:
        return Kind.MALFORMED, NO_VNI, b"", 0, 0, 0, "empty datagram"
    version = buf[base] >> 4
    if version == 4:
        if length < 20:
            return Kind.MALFORMED, NO_VNI, b"", 0, 0, 0, f"outer IPv4 header cut at {length} bytes"
        src = bytes(buf[base + 12 : base + 16])
        udp = (buf[base] & 0x0F) * 4
        end = buf[base + 2] << 8 | buf[base + 3]
        if udp < 20:
            return Kind.MALFORMED, NO_VNI, src, 0, 0, 0, f"outer IPv4 header length {udp}"
        if buf[base + 6] & 0x3F or buf[base + 7]:
            return Kind.MALFORMED, NO_VNI, src, 0, 0, 0, "outer IPv4 datagram is fragmented"
    elif version == 6:
        if length < 40:
            return Kind.MALFORMED, NO_VNI, b"", 0, 0, 0, f"outer IPv6 header cut at {length} bytes"
        src = bytes(buf[base + 8 : base + 24])
        udp = 40
        end = 40 + (buf[base + 4] << 8 | buf[base + 5])
    else:
        return Kind.MALFORMED, NO_VNI, b"", 0, 0, 0, f"outer IP version {version}"
    if end > length:
        return Kind.MALFORMED, NO_VNI, src, 0, 0, 0, f"outer datagram cut: {length} of {end} bytes"
    vxlan = udp + 8
    if end < vxlan + 8:
        size = max(end - vxlan, 0)
        return Kind.MALFORMED, NO_VNI, src, 0, 0, 0, f"no VXLAN header: UDP payload of {size} bytes"
    flags = buf[base + vxlan]
    if flags != VXLAN_FLAGS:
        reason = f"VXLAN flags 0x{flags:02x}, expected 0x08 (not VXLAN, or a VXLAN variant)"
        return Kind.MALFORMED, NO_VNI, src, 0, 0, 0, reason
    v = base + vxlan + 4
    vni = buf[v] << 16 | buf[v + 1] << 8 | buf[v + 2]
    inner = vxlan + 8
    captured = end - inner
    if captured < ETH_HEADER_LEN:
        reason = f"inner frame of {captured} bytes is shorter than an Ethernet header"
        return Kind.MALFORMED, vni, src, inner, end, captured, reason
    e = base + inner
    ethertype = buf[e + 12] << 8 | buf[e + 13]
    l3 = ETH_HEADER_LEN
    if ethertype in ETHERTYPE_VLAN and captured >= 18:
        ethertype = buf[e + 16] << 8 | buf[e + 17]
        l3 = 18
    if ethertype == ETHERTYPE_IPV4:
        if captured < l3 + 4:
            return Kind.BAD_INNER, vni, src, inner, end, captured, "inner IPv4 header cut"
        if buf[e + l3] >> 4 != 4:
            reason = f"inner IPv4 header has version {buf[e + l3] >> 4}"
            return Kind.BAD_INNER, vni, src, inner, end, captured, reason
        total = buf[e + l3 + 2] << 8 | buf[e + l3 + 3]
        if total < 20:
            reason = f"inner IPv4 total length {total}"
            return Kind.BAD_INNER, vni, src, inner, end, captured, reason
        expected = l3 + total
    elif ethertype == ETHERTYPE_IPV6:
        if captured < l3 + 6:
            return Kind.BAD_INNER, vni, src, inner, end, captured, "inner IPv6 header cut"
        if buf[e + l3] >> 4 != 6:
            reason = f"inner IPv6 header has version {buf[e + l3] >> 4}"
            return Kind.BAD_INNER, vni, src, inner, end, captured, reason
        expected = l3 + 40 + (buf[e + l3 + 4] << 8 | buf[e + l3 + 5])
    else:
        return Kind.OK, vni, src, inner, end, captured, None
    if expected > captured:
        return Kind.TRUNCATED, vni, src, inner, end, expected, None
    # Shorter than captured: Ethernet padding of a short frame, which is part of the frame.
    return Kind.OK, vni, src, inner, end, captured, None


# ---------------------------------------------------------------- full decode


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def _addr(b: bytes) -> str:
    return str(ipaddress.ip_address(b))


@dataclass(frozen=True, slots=True)
class Ethernet:
    src: str
    dst: str
    ethertype: int
    vlan: int | None


@dataclass(frozen=True, slots=True)
class IP:
    version: int
    src: str
    dst: str
    protocol: int  # IPv6: the next header
    ttl: int  # IPv6: hop limit
    length: int  # whole IP packet, from the header (also when the copy is cut)
    header_length: int


@dataclass(frozen=True, slots=True)
class TCP:
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    payload_length: int  # from the IP header, also when the copy is cut
    options: tuple[str, ...] = ()  # as tcpdump writes them: "nop", "TS val 1 ecr 2", ...

    @property
    def flag_text(self) -> str:
        # tcpdump's letters and order.
        letters = "".join(c for bit, c in _TCP_FLAGS if self.flags & bit)
        return letters or "none"


_TCP_FLAGS: tuple[tuple[int, str], ...] = (
    (0x01, "F"), (0x02, "S"), (0x04, "R"), (0x08, "P"), (0x10, "."), (0x20, "U"), (0x40, "E"),
    (0x80, "W"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class UDP:
    sport: int
    dport: int
    payload_length: int


@dataclass(frozen=True, slots=True)
class ICMP:
    version: int  # 4 = ICMP, 6 = ICMPv6
    type: int
    code: int
    ident: int | None  # echo request/reply only
    sequence: int | None
    length: int  # ICMP message length from the IP header

    @property
    def type_text(self) -> str:
        names = _ICMP4_TYPES if self.version == 4 else _ICMP6_TYPES
        return names.get(self.type, f"type {self.type}")


_ICMP4_TYPES = {0: "echo reply", 3: "unreachable", 8: "echo request", 11: "time exceeded"}
_ICMP6_TYPES = {
    1: "destination unreachable",
    3: "time exceeded",
    128: "echo request",
    129: "echo reply",
    133: "router solicitation",
    134: "router advertisement",
    135: "neighbor solicitation",
    136: "neighbor advertisement",
}


@dataclass(frozen=True, slots=True)
class ARP:
    operation: int
    sender_mac: str
    sender_ip: str
    target_ip: str


@dataclass(frozen=True, slots=True)
class DecodedPacket:
    """One received datagram, decoded as far as it goes."""

    time_ns: int
    outer_src: str
    outer_dst: str
    outer_sport: int
    outer_dport: int
    kind: Kind
    vni: int | None
    flags: int | None
    captured: int  # inner bytes received
    length: int  # original inner frame length
    problem: str | None
    eth: Ethernet | None = None
    ip: IP | None = None
    l4: TCP | UDP | ICMP | ARP | None = None
    l4_cut: bool = False  # the copy ends inside the transport header
    cut_ports: tuple[int, int] | None = None  # ...but after the TCP/UDP ports

    @property
    def truncated(self) -> bool:
        return self.kind is Kind.TRUNCATED


def decode(datagram: bytes, time_ns: int) -> DecodedPacket:
    """Decode an outer IP datagram (as received on the wire) completely."""
    kind, vni, src, inner, end, orig, problem = classify(datagram, 0, len(datagram))
    outer_src = _addr(src) if len(src) in (4, 16) else "?"
    outer_dst, sport, dport = "?", 0, 0
    version = datagram[0] >> 4 if datagram else 0
    udp = (datagram[0] & 0x0F) * 4 if version == 4 else 40
    if version == 4 and len(datagram) >= 20:
        outer_dst = _addr(datagram[16:20])
    elif version == 6 and len(datagram) >= 40:
        outer_dst = _addr(datagram[24:40])
    if len(datagram) >= udp + 4:
        sport = int.from_bytes(datagram[udp : udp + 2], "big")
        dport = int.from_bytes(datagram[udp + 2 : udp + 4], "big")
    base = DecodedPacket(
        time_ns=time_ns,
        outer_src=outer_src,
        outer_dst=outer_dst,
        outer_sport=sport,
        outer_dport=dport,
        kind=kind,
        vni=None if vni == NO_VNI else vni,
        flags=datagram[udp + 8] if len(datagram) > udp + 8 else None,
        captured=max(end - inner, 0),
        length=orig,
        problem=problem,
    )
    if kind is Kind.MALFORMED:
        return base
    return _decode_frame(base, datagram[inner:end])


def _decode_frame(p: DecodedPacket, f: bytes) -> DecodedPacket:
    eth = Ethernet(_mac(f[6:12]), _mac(f[0:6]), f[12] << 8 | f[13], None)
    l3 = ETH_HEADER_LEN
    if eth.ethertype in ETHERTYPE_VLAN and len(f) >= 18:
        vlan = (f[14] << 8 | f[15]) & 0x0FFF
        eth = Ethernet(eth.src, eth.dst, f[16] << 8 | f[17], vlan)
        l3 = 18
    fields: dict[str, Any] = {"eth": eth}
    ip: IP | None = None
    if p.kind is not Kind.BAD_INNER:
        if eth.ethertype == ETHERTYPE_IPV4 and len(f) >= l3 + 20:
            ihl = (f[l3] & 0x0F) * 4
            total = f[l3 + 2] << 8 | f[l3 + 3]
            src, dst = _addr(f[l3 + 12 : l3 + 16]), _addr(f[l3 + 16 : l3 + 20])
            ip = IP(4, src, dst, f[l3 + 9], f[l3 + 8], total, ihl)
        elif eth.ethertype == ETHERTYPE_IPV6 and len(f) >= l3 + 40:
            plen = f[l3 + 4] << 8 | f[l3 + 5]
            src, dst = _addr(f[l3 + 8 : l3 + 24]), _addr(f[l3 + 24 : l3 + 40])
            ip = IP(6, src, dst, f[l3 + 6], f[l3 + 7], 40 + plen, 40)
        elif eth.ethertype == ETHERTYPE_ARP and len(f) >= l3 + 28:
            a = l3
            fields["l4"] = ARP(
                f[a + 6] << 8 | f[a + 7], _mac(f[a + 8 : a + 14]), _addr(f[a + 14 : a + 18]),
                _addr(f[a + 24 : a + 28]),
            )  # fmt: skip
    if ip is not None:
        fields["ip"] = ip
        l4, cut = _decode_l4(ip, f, l3 + ip.header_length)
        fields["l4"] = l4
        fields["l4_cut"] = cut
        t = l3 + ip.header_length
        if cut and ip.protocol in (6, 17) and len(f) >= t + 4:
            fields["cut_ports"] = (f[t] << 8 | f[t + 1], f[t + 2] << 8 | f[t + 3])
    return _replace(p, fields)


def _replace(p: DecodedPacket, fields: dict[str, Any]) -> DecodedPacket:
    values = {name: getattr(p, name) for name in DecodedPacket.__dataclass_fields__}
    values.update(fields)
    return DecodedPacket(**values)


def _decode_l4(ip: IP, f: bytes, t: int) -> tuple[TCP | UDP | ICMP | None, bool]:
    avail = len(f) - t
    payload = ip.length - ip.header_length  # transport length per the IP header
    if ip.protocol == 6:
        if avail < 20:
            return None, True
        hlen = (f[t + 12] >> 4) * 4
        tcp = TCP(
            sport=f[t] << 8 | f[t + 1],
            dport=f[t + 2] << 8 | f[t + 3],
            seq=int.from_bytes(f[t + 4 : t + 8], "big"),
            ack=int.from_bytes(f[t + 8 : t + 12], "big"),
            flags=f[t + 13],
            window=f[t + 14] << 8 | f[t + 15],
            payload_length=max(payload - hlen, 0),
            options=_tcp_options(f[t + 20 : t + hlen]) if hlen > 20 else (),
        )
        return tcp, False
    if ip.protocol == 17:
        if avail < 8:
            return None, True
        return UDP(f[t] << 8 | f[t + 1], f[t + 2] << 8 | f[t + 3], max(payload - 8, 0)), False
    if (ip.protocol == 1 and ip.version == 4) or (ip.protocol == 58 and ip.version == 6):
        if avail < 4:
            return None, True
        echo = (0, 8) if ip.version == 4 else (128, 129)
        ident = seq = None
        if f[t] in echo and avail >= 8:
            ident, seq = f[t + 4] << 8 | f[t + 5], f[t + 6] << 8 | f[t + 7]
        return ICMP(ip.version, f[t], f[t + 1], ident, seq, payload), False
    return None, False


def _tcp_options(raw: bytes) -> tuple[str, ...]:
    """TCP options in tcpdump's words; a cut option list ends in "|" (like "[|tcp]")."""
    out: list[str] = []
    i = 0
    while i < len(raw):
        kind = raw[i]
        if kind == 0:
            out.append("eol")
            break
        if kind == 1:
            out.append("nop")
            i += 1
            continue
        if i + 1 >= len(raw) or raw[i + 1] < 2 or i + raw[i + 1] > len(raw):
            out.append("|")
            break
        size = raw[i + 1]
        body = raw[i + 2 : i + size]
        if kind == 2 and size == 4:
            out.append(f"mss {int.from_bytes(body, 'big')}")
        elif kind == 3 and size == 3:
            out.append(f"wscale {body[0]}")
        elif kind == 4:
            out.append("sackOK")
        elif kind == 5:
            edges = [int.from_bytes(body[j : j + 4], "big") for j in range(0, len(body) - 3, 4)]
            blocks = " ".join(f"{{{a}:{b}}}" for a, b in zip(edges[::2], edges[1::2], strict=False))
            out.append(f"sack {len(edges) // 2} {blocks}".rstrip())
        elif kind == 8 and size == 10:
            val, ecr = int.from_bytes(body[0:4], "big"), int.from_bytes(body[4:8], "big")
            out.append(f"TS val {val} ecr {ecr}")
        else:
            out.append(f"unknown-{kind}")
        i += size
    return tuple(out)


# ---------------------------------------------------------------- rendering


def _clock(time_ns: int) -> str:
    seconds, ns = divmod(time_ns, 1_000_000_000)
    return time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{ns // 1000:06d}"


def _endpoint(addr: str, port: int) -> str:
    return f"{addr}.{port}"  # tcpdump writes the port after a dot, for IPv6 too


def render_line(p: DecodedPacket) -> str:
    """One line per datagram, like `tcpdump -nne` shows it on the target (the seed)."""
    head = f"{_clock(p.time_ns)} {_endpoint(p.outer_src, p.outer_sport)} > "
    head += f"{_endpoint(p.outer_dst, p.outer_dport)}: "
    if p.vni is None:
        return head + f"MALFORMED: {p.problem}, length {p.captured}"
    head += f"VXLAN, flags [I] (0x{VXLAN_FLAGS:02x}), vni {p.vni}: "
    if p.eth is None:
        return head + f"MALFORMED: {p.problem}"
    eth = p.eth
    name = ETHERTYPE_NAMES.get(eth.ethertype, "Unknown")
    vlan = f"vlan {eth.vlan}, " if eth.vlan is not None else ""
    text = f"{eth.src} > {eth.dst}, {vlan}ethertype {name} (0x{eth.ethertype:04x}), "
    text += f"length {p.length}: {_render_l3(p)}"
    if p.kind is Kind.TRUNCATED:
        text += f" [truncated copy: {p.captured} of {p.length} bytes]"
    elif p.kind is Kind.BAD_INNER:
        text += f" [malformed: {p.problem}]"
    return head + text


def _render_l3(p: DecodedPacket) -> str:
    ip, l4 = p.ip, p.l4
    if isinstance(l4, ARP):
        op = {1: "Request", 2: "Reply"}.get(l4.operation, f"op {l4.operation}")
        if l4.operation == 2:
            return f"ARP, Reply {l4.sender_ip} is-at {l4.sender_mac}, length 28"
        return f"ARP, {op} who-has {l4.target_ip} tell {l4.sender_ip}, length 28"
    if ip is None:
        return f"length {p.length}" if p.kind is not Kind.BAD_INNER else "[|ip]"
    if isinstance(l4, TCP):
        seq = f"{l4.seq}:{l4.seq + l4.payload_length}" if l4.payload_length else f"{l4.seq}"
        ack = f", ack {l4.ack}" if l4.flags & 0x10 else ""
        options = f", options [{','.join(l4.options)}]" if l4.options else ""
        return (
            f"{_endpoint(ip.src, l4.sport)} > {_endpoint(ip.dst, l4.dport)}: "
            f"Flags [{l4.flag_text}], seq {seq}{ack}, win {l4.window}{options}, "
            f"length {l4.payload_length}"
        )
    if isinstance(l4, UDP):
        return (
            f"{_endpoint(ip.src, l4.sport)} > {_endpoint(ip.dst, l4.dport)}: "
            f"UDP, length {l4.payload_length}"
        )
    if isinstance(l4, ICMP):
        echo = f", id {l4.ident}, seq {l4.sequence}" if l4.ident is not None else ""
        proto = "ICMP " if l4.version == 4 else "ICMP6, "
        return f"{ip.src} > {ip.dst}: {proto}{l4.type_text}{echo}, length {l4.length}"
    names = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp6"}
    if p.l4_cut:
        cut = f"[|{names.get(ip.protocol, 'ip')}]"
        if p.cut_ports is not None:  # tcpdump's spacing, so the lines compare equal
            sport, dport = p.cut_ports
            return f"{_endpoint(ip.src, sport)} > {_endpoint(ip.dst, dport)}:  {cut}"
        return f"{ip.src} > {ip.dst}: {cut}"
    return f"{ip.src} > {ip.dst}: ip-proto-{ip.protocol} {ip.length - ip.header_length}"


def to_json(p: DecodedPacket) -> dict[str, Any]:
    """The --json object for one datagram (one per line)."""
    seconds, ns = divmod(p.time_ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ns:09d}Z"
    out: dict[str, Any] = {
        "time": stamp,
        "outer": {
            "src": p.outer_src,
            "dst": p.outer_dst,
            "sport": p.outer_sport,
            "dport": p.outer_dport,
        },
        "vni": p.vni,
        "flags": p.flags,
        "length": p.length,
        "captured": p.captured,
        "truncated": p.truncated,
        "malformed": p.problem if p.kind in (Kind.MALFORMED, Kind.BAD_INNER) else None,
    }
    if p.eth is not None:
        out["eth"] = {
            "src": p.eth.src,
            "dst": p.eth.dst,
            "ethertype": f"0x{p.eth.ethertype:04x}",
            "vlan": p.eth.vlan,
        }
    if p.ip is not None:
        ip = p.ip
        out["ip"] = {"version": ip.version, "src": ip.src, "dst": ip.dst}
        out["ip"] |= {"protocol": ip.protocol, "ttl": ip.ttl, "length": ip.length}
    l4 = p.l4
    if isinstance(l4, TCP):
        out["tcp"] = {
            "sport": l4.sport,
            "dport": l4.dport,
            "flags": l4.flag_text,
            "seq": l4.seq,
            "ack": l4.ack,
            "window": l4.window,
            "options": list(l4.options),
            "payload_length": l4.payload_length,
        }
    elif isinstance(l4, UDP):
        out["udp"] = {"sport": l4.sport, "dport": l4.dport, "payload_length": l4.payload_length}
    elif isinstance(l4, ICMP):
        out["icmp" if l4.version == 4 else "icmp6"] = {
            "type": l4.type,
            "code": l4.code,
            "name": l4.type_text,
            "id": l4.ident,
            "seq": l4.sequence,
            "length": l4.length,
        }
    elif isinstance(l4, ARP):
        out["arp"] = {
            "operation": l4.operation,
            "sender_mac": l4.sender_mac,
            "sender_ip": l4.sender_ip,
            "target_ip": l4.target_ip,
        }
    return out


def format_source(src: bytes) -> str:
    """A counters key's outer source address as text."""
    return _addr(src) if len(src) in (4, 16) else "unknown"
