"""Flow placement for a group of collectors: which member a mirrored packet goes to.

Pure: no I/O. Two halves, meant to meet in the kernel (docs/dataplane.md, "Flow
placement"):

* `flow_key(frame)` and `flow_hash(key)`: a Python twin of the symmetric flow hash the
  mirror program (`vxtap.dataplane.bpf`) computes for every copy and uses for the outer
  UDP source port. Same parse, same words, same mixing, so the agent, `vxtap explain`
  and the tests can tell which member a packet goes to without a kernel.
  `tests/dataplane/test_placement.py` runs the real program on the same frames.
* `build_table(members)` and `placement(table, flow_hash)`: a table of `TABLE_SLOTS`
  slots, each owned by one member, filled by rendezvous (highest random weight)
  hashing per slot: slot j belongs to the member with the highest score(member, j).
  The kernel would index it with `flow_hash % TABLE_SLOTS`.

Why rendezvous per slot and not Maglev's fill (Eisenbud et al., NSDI 2016): a member
that leaves must move only its own flows, and one that joins must take flows only for
itself. Maglev fills its table round-robin, so one member fewer shifts the fill of the
others: with this table size, 37 of 10,000 flows moved between members that stayed
when one of 16 left (bench/placement.py). Rendezvous per slot changes only the slots
whose winner left or whose new winner joined, by construction; the price is a binomial
spread of slot shares (max/mean 1.03 at 16 members) where Maglev's shares differ by
at most one slot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

# --- the flow hash: the mirror program's, step for step ---

# The mirror program's constants (vxtap.dataplane.bpf.asm, _flow_hash), copied rather than
# imported so that this module stays free of bpf's ctypes set-up (it looks up libc at
# import); the twin test catches any difference. Golden-ratio multiplier per word, then
# murmur3's 32-bit finaliser.
_HASH_STEP: Final = 0x9E3779B1
_FMIX1: Final = 0x85EBCA6B
_FMIX2: Final = 0xC2B2AE35
_MASK32: Final = 0xFFFFFFFF
ETHERNET_HEADER: Final = 14
ETHERTYPE_IPV4: Final = 0x0800
ETHERTYPE_IPV6: Final = 0x86DD
# IP protocols whose first 4 transport bytes are ports: TCP, UDP, DCCP, SCTP, UDP-Lite.
PORT_PROTOCOLS: Final = frozenset((6, 17, 33, 132, 136))
IPV6_FRAGMENT: Final = 44
# IPv6 extension headers the program walks: hop-by-hop, routing, destination options
# (length in 8-byte units, not counting the first 8) and AH (4-byte units, minus 2).
_IPV6_EXTENSIONS_8: Final = frozenset((0, 43, 60))
IPV6_AUTHENTICATION: Final = 51
IPV6_EXTENSION_HEADERS_WALKED: Final = 6


@dataclass(frozen=True, slots=True)
class FlowKey:
    """What the program hashes of one frame; None where it stops before that part.

    `addresses`: source and destination, 4 or 16 bytes each, as in the packet.
    `protocol`: IPv4's protocol or the IPv6 next header behind the extension headers
    (None for an IPv6 fragment, or when the walk ends before the transport header).
    `ports`: source and destination port, for the protocols in `PORT_PROTOCOLS` when
    the packet is not a fragment and holds them."""

    addresses: tuple[bytes, bytes] | None
    protocol: int | None = None
    ports: tuple[int, int] | None = None


def _mix(acc: int, word: int) -> int:
    acc = ((acc ^ word) * _HASH_STEP) & _MASK32
    return acc ^ (acc >> 16)


def _address_word(address: bytes) -> int:
    """IPv4: the address as the program loads it (little-endian); IPv6: its 4 such
    words mixed into one."""
    if len(address) == 4:
        return int.from_bytes(address, "little")
    acc = 0
    for start in range(0, 16, 4):
        acc = _mix(acc, int.from_bytes(address[start : start + 4], "little"))
    return acc


def flow_hash(key: FlowKey) -> int:
    """The program's skb->hash for a frame with this key: 32 bits, never 0 (bit 0 is
    always set), the same for both directions of a flow."""
    acc = 0
    if key.addresses is not None:
        low, high = sorted(_address_word(address) for address in key.addresses)
        acc = _mix(_mix(acc, low), high)
        if key.protocol is not None:
            acc = _mix(acc, key.protocol)
            if key.ports is not None:
                # Ports as little-endian loads of their network-order bytes, put in order.
                low, high = sorted(
                    int.from_bytes(p.to_bytes(2, "big"), "little") for p in key.ports
                )
                acc = _mix(acc, (low << 16) | high)
    acc ^= acc >> 16
    acc = (acc * _FMIX1) & _MASK32
    acc ^= acc >> 13
    acc = (acc * _FMIX2) & _MASK32
    acc ^= acc >> 16
    return acc | 1


def flow_key(frame: bytes) -> FlowKey:
    """Parse an Ethernet frame exactly as the mirror program does, including where it
    gives up: a read past the frame's end keeps what was gathered so far."""
    if len(frame) < ETHERNET_HEADER:
        return FlowKey(None)
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == ETHERTYPE_IPV4:
        return _ipv4_key(frame)
    if ethertype == ETHERTYPE_IPV6:
        return _ipv6_key(frame)
    return FlowKey(None)


def _ports(frame: bytes, offset: int) -> tuple[int, int] | None:
    if len(frame) < offset + 4:
        return None
    return int.from_bytes(frame[offset : offset + 2], "big"), int.from_bytes(
        frame[offset + 2 : offset + 4], "big"
    )


def _ipv4_key(frame: bytes) -> FlowKey:
    ip = ETHERNET_HEADER
    if len(frame) < ip + 20:
        return FlowKey(None)
    addresses = frame[ip + 12 : ip + 16], frame[ip + 16 : ip + 20]
    protocol = frame[ip + 9]
    if frame[ip + 6] & 0x3F or frame[ip + 7]:  # MF or a fragment offset: no ports
        return FlowKey(addresses, protocol)
    if protocol not in PORT_PROTOCOLS:
        return FlowKey(addresses, protocol)
    # The header length is taken as it is, unchecked, like the program does.
    return FlowKey(addresses, protocol, _ports(frame, ip + (frame[ip] & 0x0F) * 4))


def _ipv6_key(frame: bytes) -> FlowKey:
    ip = ETHERNET_HEADER
    if len(frame) < ip + 40:
        return FlowKey(None)
    addresses = frame[ip + 8 : ip + 24], frame[ip + 24 : ip + 40]
    next_header = frame[ip + 6]
    offset = ip + 40
    for _ in range(IPV6_EXTENSION_HEADERS_WALKED):
        if next_header == IPV6_FRAGMENT:
            return FlowKey(addresses)
        if next_header in _IPV6_EXTENSIONS_8:
            unit, extra = 8, 1
        elif next_header == IPV6_AUTHENTICATION:
            unit, extra = 4, 2
        else:
            break
        if len(frame) < offset + 2:
            return FlowKey(addresses)
        next_header, length = frame[offset], frame[offset + 1]
        offset += (length + extra) * unit
    else:
        return FlowKey(addresses)  # still an extension header after the last one walked
    if next_header not in PORT_PROTOCOLS:
        return FlowKey(addresses, next_header)
    return FlowKey(addresses, next_header, _ports(frame, offset))


# --- the placement table ---

# 65,537 = 2^16 + 1, prime. The slot is `flow_hash % TABLE_SLOTS`; the flow hash is
# always odd, so the count must be odd too (an even one would leave every even slot
# unused). Why this size: with rendezvous per slot a member's share of slots is
# binomial, so the table's own imbalance shrinks as 1/sqrt(slots): max/mean 1.03 at 16
# members here (measured), by estimate ~1.05 at 16,381 slots and ~1.11 at 4,093. As u8
# member ordinals packed 8 to an array element it is 8,193 x 8 bytes = 64 KiB in the
# kernel; building it takes 10-34 ms for 2-16 members (bench/placement.py).
TABLE_SLOTS: Final = 65537
# A member's index is one byte of the table.
MAX_MEMBERS: Final = 256
_SCORE_SEED: Final = b"vxtap placement v1\0"
# Per slot and member, a field of 6 bytes in one big integer: the member's index (byte
# 0), its 32-bit score (bytes 1-4), and a guard byte (byte 5) for the comparison below.
_FIELD: Final = 6
_DATA_BITS: Final = 40


@dataclass(frozen=True, slots=True)
class PlacementTable:
    """`members`: distinct, sorted; `slots[j]`: the index in `members` of slot j's owner."""

    members: tuple[str, ...]
    slots: bytes

    def shares(self) -> dict[str, int]:
        """Slots per member."""
        return {member: self.slots.count(index) for index, member in enumerate(self.members)}


def _scores(member: str, index: int, slot_count: int) -> int:
    """Every slot's field for one member, as one integer (slot j in bytes 6j..6j+5).

    The score of (member, slot j) is the j-th little-endian 32-bit word of SHAKE-256
    over the member's id: the same in every process and on every host."""
    stream = hashlib.shake_256(_SCORE_SEED + member.encode()).digest(4 * slot_count)
    fields = bytearray(_FIELD * slot_count)
    fields[0::_FIELD] = bytes((index,)) * slot_count
    for byte in range(4):
        fields[1 + byte :: _FIELD] = stream[byte::4]
    return int.from_bytes(fields, "little")


def build_table(members: Iterable[str], slot_count: int = TABLE_SLOTS) -> PlacementTable:
    """Each slot goes to the member with the highest (score, index); the index (the
    member's place in sorted order) only breaks exact score ties, consistently, since
    adding or removing a member keeps the others' order. Members given in any order
    and any number of times give the same table."""
    ordered = tuple(sorted(set(members)))
    if not ordered:
        raise ValueError("a placement table needs at least one member")
    if len(ordered) > MAX_MEMBERS:
        raise ValueError(f"a placement table holds at most {MAX_MEMBERS} members")
    if slot_count < 1 or slot_count % 2 == 0:
        raise ValueError("the slot count must be odd (the flow hash always is)")
    # Per-slot maximum over members, for all slots at once: the fields of two members
    # are compared in one big-integer subtraction each (Python's integer operations run
    # in C; a Python loop over 65,537 x 16 pairs took ~10x longer). With the guard bit
    # set in every field of `best`, `best - other` cannot borrow across fields, and the
    # guard bit survives exactly where best's field >= other's.
    guard = int.from_bytes(bytes((0, 0, 0, 0, 0, 1)) * slot_count, "little")
    best = _scores(ordered[0], 0, slot_count)
    for index in range(1, len(ordered)):
        other = _scores(ordered[index], index, slot_count)
        kept = ((best | guard) - other) & guard
        keep_mask = kept - (kept >> _DATA_BITS)  # the 40 data bits of each kept field
        best = (best & keep_mask) | (other - (other & keep_mask))
    slots = best.to_bytes(_FIELD * slot_count, "little")[0::_FIELD]
    return PlacementTable(ordered, slots)


def slot_of(flow_hash: int, slot_count: int = TABLE_SLOTS) -> int:
    """The slot a flow hash indexes (what the kernel would compute)."""
    return flow_hash % slot_count


def placement(table: PlacementTable, flow_hash: int) -> str:
    """The member a flow with this hash goes to."""
    return table.members[table.slots[slot_of(flow_hash, len(table.slots))]]
