"""Compile the desired state into a kernel plan. Pure: no I/O, deterministic, fast.

The kernel pipeline (docs/dataplane.md explains each choice):

    source device ingress/egress
      -> nft netdev base chain "in_<device>"/"out_<device>" (one per device and direction)
         -> jump to one chain per (session, source), in session priority order
            -> the filter's rules of that direction in rule priority order, each with a
               named counter: accept = goto the mirror chain, reject = return (next session)
         -> mirror chain: give the copy the session key, `dup` it, restore the original
              mark 0      : mark := key, dup to vxtap-mk0, mark := 0
              priority 0  : priority := key, dup to vxtap-pr0, priority := 0
                            (a program at vxtap-pr0's tc egress moves the key to the mark)
              otherwise   : counted as unmirrorable (both fields in use; see docs)
    vxtap-mk0/vxtap-pr0 are veth ends without segmentation offload, so the kernel cuts
    each copy into wire-sized packets; at the peers' (vxtap-mk1/vxtap-pr1) tc ingress the
    eBPF program looks the key up in the tunnel map, truncates, sets the tunnel key and
    redirects to the collect_md VXLAN device vxtap-vx0.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from vxtap.dataplane import placement
from vxtap.dataplane.bpf.asm import CHUNK_KEY_FLAG, MEMBER_KEY_FLAG
from vxtap.model import (
    IP_PROTOCOL_NUMBER,
    VXLAN_PORT,
    Action,
    DesiredState,
    Direction,
    EtherType,
    GroupMember,
    IPNetwork,
    Port,
    Protocol,
    Rule,
    Session,
    TargetGroup,
    TargetKind,
)

TABLE = "vxtap"
FAMILY = "netdev"
# Every device vxtap creates starts with this, so the agent never registers them as ports.
OWN_DEVICE_PREFIX = "vxtap-"
VXLAN_DEVICE = "vxtap-vx0"
# dup targets (segmentation offload off) and their peers (the eBPF program at tc ingress).
MARK_COPY_DEVICE = "vxtap-mk0"
MARK_COPY_PEER = "vxtap-mk1"
PRIORITY_COPY_DEVICE = "vxtap-pr0"
PRIORITY_COPY_PEER = "vxtap-pr1"
DEVICES = (VXLAN_DEVICE, MARK_COPY_DEVICE, MARK_COPY_PEER, PRIORITY_COPY_DEVICE, PRIORITY_COPY_PEER)
# The adapter marks the table with an empty chain named after the plan's digest and the
# ifindexes `dup` bound to: `nft list chains` (cheap) then tells whether it is current.
MARKER_PREFIX = "plan_"
# Ingress: see the packet first, as it arrived. Egress: last, as it leaves.
INGRESS_HOOK_PRIORITY = -500
EGRESS_HOOK_PRIORITY = 500
# What VXLAN adds inside the underlay's IP MTU: outer IP + UDP + VXLAN (the outer
# Ethernet header is not counted by the MTU). The inner frame, its Ethernet header
# included, is the outer UDP payload: it fits when it is at most MTU - overhead.
VXLAN_OVERHEAD_IPV4 = 20 + 8 + 8
VXLAN_OVERHEAD_IPV6 = 40 + 8 + 8
# IPv4 fragment offset bits: a packet with a non-zero offset is a non-first fragment.
IPV4_FRAGMENT_OFFSET_MASK = 0x1FFF
MAX_KEY = 0x7FFF_FFFF
# Group sessions (docs/elb.md, "Placement in the kernel"): keys of the tunnel map above
# MAX_KEY (the program's layout, bpf.asm). A member entry's key is MEMBER_KEY_FLAG |
# index << 8 | its number, with one index per (session, source); a placement table's
# chunks are CHUNK_KEY_FLAG | table << 11 | chunk.
MEMBER_INDEXES = 1 << 22
CHUNK_KEY_SHIFT = 11
TABLE_IDS = 1 << 19

_L4PROTO_NAME = {Protocol.TCP: "tcp", Protocol.UDP: "udp", Protocol.ICMP: "icmp"}
_L4PROTO_NAME[Protocol.ICMPV6] = "ipv6-icmp"
assert set(_L4PROTO_NAME) == set(IP_PROTOCOL_NUMBER)

CounterKind = Literal["rule", "mirrored", "unmirrorable"]


@dataclass(frozen=True, slots=True)
class Tunnel:
    """Where one (session, source) pair's copies go: one entry of the eBPF tunnel map."""

    key: int
    session_id: str
    source_port_id: str
    vni: int
    remote: str
    local: str | None
    snaplen: int
    # A group member's entry (the session's target is a group): the member's port id.
    member_port_id: str | None = None

    @property
    def ipv6(self) -> bool:
        return ":" in self.remote


@dataclass(frozen=True, slots=True)
class GroupTunnel:
    """A (session, source) pair whose target is a group: one entry of the tunnel map that
    sends each copy on to the member its flow's slot names. `table_id` None: the group
    has no healthy member (copies are counted and dropped)."""

    key: int
    session_id: str
    source_port_id: str
    group_id: str
    table_id: int | None
    member_base: int
    snaplen: int

    @property
    def table_base(self) -> int:
        return 0 if self.table_id is None else chunk_key(self.table_id, 0)


def chunk_key(table_id: int, chunk: int) -> int:
    return CHUNK_KEY_FLAG | table_id << CHUNK_KEY_SHIFT | chunk


@dataclass(frozen=True, slots=True)
class CounterRef:
    """What one named nft counter counts."""

    name: str
    kind: CounterKind
    session_id: str
    rule_id: str | None = None


@dataclass(frozen=True, slots=True)
class Chain:
    name: str
    rules: int
    hook: str | None = None
    device: str | None = None


@dataclass(frozen=True)
class KernelPlan:
    """Everything the kernel must show for one desired state.

    `nft_text` is the nft script (text syntax) that adds the table's whole content,
    which is what gets loaded (nft parses text faster than JSON; docs/benchmarks.md),
    kept by object so that an adapter can change only the chains that differ. The
    adapter wraps the script in one transaction with a flush. `digest` identifies the
    plan and is stored in the table, so an unchanged kernel is recognised without
    listing 10,000 rules.
    """

    revision: str
    digest: str
    # nft text by object: (chain, its `add chain` line), (counter, its line), (chain, its rules)
    chain_defs: tuple[tuple[str, str], ...]
    counter_defs: tuple[tuple[str, str], ...]
    chain_rules: tuple[tuple[str, str], ...]
    chains: tuple[Chain, ...]
    counters: tuple[CounterRef, ...]
    tunnels: tuple[Tunnel, ...]
    skipped: tuple[str, ...] = ()
    groups: tuple[GroupTunnel, ...] = ()
    # (table id, the member number of each of placement.TABLE_SLOTS slots)
    tables: tuple[tuple[int, bytes], ...] = ()
    table: str = TABLE
    devices: tuple[str, ...] = DEVICES

    @property
    def nft_text(self) -> str:
        """The whole table's content as an `nft -f` script."""
        parts = [f"add table {FAMILY} {TABLE}"]
        parts += [line for _, line in self.chain_defs]
        parts += [line for _, line in self.counter_defs]
        parts += [text for _, text in self.chain_rules]
        return "\n".join(parts) + "\n"

    @property
    def is_empty(self) -> bool:
        return not self.tunnels and not self.groups


def counter_comment(ref: CounterRef) -> str:
    """Stored with the counter in the kernel, so counters can be read without the plan."""
    return f"{ref.kind} {ref.session_id} {ref.rule_id or '-'}"


def parse_counter_comment(name: str, comment: str) -> CounterRef | None:
    parts = comment.split(" ")
    if len(parts) != 3 or parts[0] not in ("rule", "mirrored", "unmirrorable"):
        return None
    kind: CounterKind = parts[0]  # type: ignore[assignment]
    return CounterRef(name, kind, parts[1], None if parts[2] == "-" else parts[2])


def session_key(session_id: str, port_id: str) -> int:
    """A stable 31-bit key for a (session, source) pair: the same on every apply, so
    re-applying never moves a pair to another key (the map and the rules could
    disagree for a moment otherwise)."""
    digest = hashlib.blake2b(f"{session_id}\0{port_id}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & MAX_KEY or 1


def snap_length(packet_length: int, target_address: str, underlay_mtu: int | None) -> int:
    """The inner frame length to cut to: the session's packet_length, clamped so
    that the encapsulated packet fits the underlay MTU (None: not known here; the
    kernel adapter clamps by the MTU of the route to the target)."""
    if underlay_mtu is None:
        return packet_length
    overhead = VXLAN_OVERHEAD_IPV6 if ":" in target_address else VXLAN_OVERHEAD_IPV4
    return max(1, min(packet_length, underlay_mtu - overhead))


# --- nft expressions, built as nft JSON dicts (the shape `nft -j` documents) and
# rendered to nft's text syntax by `expr_text`; only the text reaches the plan ---


def _match(left: dict[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def _payload(protocol: str, name: str) -> dict[str, Any]:
    return {"payload": {"protocol": protocol, "field": name}}


def _prefix(network: IPNetwork) -> Any:
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return {"prefix": {"addr": str(network.network_address), "len": network.prefixlen}}


def _ports(start: int, end: int) -> Any:
    return start if start == end else {"range": [start, end]}


def rule_matches(rule: Rule) -> list[list[dict[str, Any]]]:
    """nft rules (each a list of expressions) of which one or none matches each packet,
    together matching exactly the packets docs/dataplane.md says `rule` matches."""
    return _rule_matches(_match_key(rule))


# What a rule's match depends on (not its id, priority or action).
MatchKey = tuple[
    EtherType,
    Protocol,
    IPNetwork | None,
    IPNetwork | None,
    tuple[int, int] | None,
    tuple[int, int] | None,
]


def _match_key(rule: Rule) -> MatchKey:
    sports, dports = rule.source_ports, rule.destination_ports
    return (
        rule.ethertype,
        rule.protocol,
        rule.source_cidr,
        rule.destination_cidr,
        None if sports is None else (sports.start, sports.end),
        None if dports is None else (dports.start, dports.end),
    )


def _rule_matches(key: MatchKey) -> list[list[dict[str, Any]]]:
    ethertype, protocol, source_cidr, destination_cidr, source_ports, destination_ports = key
    ip = "ip" if ethertype is EtherType.IPV4 else "ip6"
    # Explicit ethertype first: non-IP frames (ARP, LLDP) never match any rule.
    exprs = [_match(_meta("protocol"), ip)]
    if protocol is not Protocol.ALL:
        exprs.append(_match(_meta("l4proto"), _L4PROTO_NAME[protocol]))
    if source_cidr is not None and source_cidr.prefixlen:
        exprs.append(_match(_payload(ip, "saddr"), _prefix(source_cidr)))
    if destination_cidr is not None and destination_cidr.prefixlen:
        exprs.append(_match(_payload(ip, "daddr"), _prefix(destination_cidr)))
    ports = [
        (name, r)
        for name, r in (("sport", source_ports), ("dport", destination_ports))
        if protocol.has_ports and r is not None
    ]
    if not ports:
        return [exprs]
    # A range is exactly that range (port 0 is outside 1-65535), and only a first
    # fragment or an unfragmented packet carries ports: nft's transport header reads
    # do not skip non-first fragments in the netdev family (measured on 6.18: IPv4
    # reads the fragment's data, IPv6 the IPv6 header), so they are excluded first.
    l4 = _L4PROTO_NAME[protocol]
    port_exprs = [_match(_payload(l4, name), _ports(*r)) for name, r in ports]
    return [[*exprs, *fragment, *port_exprs] for fragment in _first_fragment(ip)]


def _first_fragment(ip: str) -> list[list[dict[str, Any]]]:
    """Alternatives that together match every packet that is not a non-first fragment.
    IPv6 needs two rules: no fragment header, or one with offset 0."""
    if ip == "ip":
        offset = {"&": [_payload("ip", "frag-off"), IPV4_FRAGMENT_OFFSET_MASK]}
        return [[_match(offset, 0)]]
    return [
        [_match({"exthdr": {"name": "frag"}}, False)],
        [_match({"exthdr": {"name": "frag", "field": "frag-off"}}, 0)],
    ]


# Large plans have ~100,000 expressions: the compiler keeps only their text (the
# dicts above are short-lived, and the text of rule matches is memoised).
Expr = str


# A one-session change leaves 9,990 of 10,000 rules as they were: the compiler memoises
# their matches by what they depend on (pure; the output is the same).
MATCH_CACHE_SIZE = 32_768


def _match_texts(key: MatchKey) -> tuple[tuple[Expr, ...], ...]:
    return tuple(tuple(expr_text(e) for e in alternative) for alternative in _rule_matches(key))


def _counter(name: str) -> Expr:
    return f'counter name "{name}"'


def _goto(chain: str) -> Expr:
    return f"goto {chain}"


def _jump(chain: str) -> Expr:
    return f"jump {chain}"


_RETURN: Expr = "return"
_ACCEPT: Expr = "accept"


@functools.cache
def _carriers() -> dict[str, tuple[Expr, Expr, Expr]]:
    """Per carrier field: (field == 0, field := 0, dup to its copy device)."""
    return {
        meta_key: (
            expr_text(_match(_meta(meta_key), 0)),
            expr_text({"mangle": {"key": _meta(meta_key), "value": 0}}),
            expr_text({"dup": {"addr": device}}),
        )
        for meta_key, device in (("mark", MARK_COPY_DEVICE), ("priority", PRIORITY_COPY_DEVICE))
    }


def _mirror_rules(key: int, mirrored: str, unmirrorable: str) -> list[list[Expr]]:
    # The copy carries the key in a field that the production packet had at 0, and the
    # field is set back to 0 right after `dup`: the production packet leaves exactly as
    # it arrived. nft can only set a field to a constant (or xor it), never save it,
    # hence the two carriers and the counted third case.
    rules = []
    for meta_key, (is_zero, set_zero, dup) in _carriers().items():
        set_key = expr_text({"mangle": {"key": _meta(meta_key), "value": key}})
        rules.append([is_zero, _counter(mirrored), set_key, dup, set_zero, _ACCEPT])
    rules.append([_counter(unmirrorable), _ACCEPT])
    return rules


class _Emitter:
    """Collects the plan's nft text, grouped by object."""

    def __init__(self) -> None:
        self.chain_defs: dict[str, str] = {}
        self.counter_defs: dict[str, str] = {}
        self.chain_rules: dict[str, list[str]] = {}
        self.where = f"{FAMILY} {TABLE}"

    def chain(self, chain: Chain) -> None:
        text = f"add chain {self.where} {chain.name}"
        if chain.hook is not None:
            assert chain.device is not None
            prio = INGRESS_HOOK_PRIORITY if chain.hook == "ingress" else EGRESS_HOOK_PRIORITY
            text += (
                f" {{ type filter hook {chain.hook} device {_quote(chain.device)} "
                f"priority {prio}; policy accept; }}"
            )
        self.chain_defs[chain.name] = text

    def counter(self, ref: CounterRef) -> None:
        comment = counter_comment(ref)
        self.counter_defs[ref.name] = (
            f"add counter {self.where} {ref.name} {{ comment {_quote(comment)} ; }}"
        )

    def rule(self, chain: str, exprs: list[Expr]) -> None:
        self.chain_rules.setdefault(chain, []).append(
            f"add rule {self.where} {chain} {' '.join(exprs)}"
        )


@dataclass
class _SessionChain:
    priority: int
    session_id: str
    chain: str
    guard: tuple[Expr, ...]  # the matches every rule of the chain starts with


def _common_prefix(a: tuple[Expr, ...], b: tuple[Expr, ...]) -> tuple[Expr, ...]:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


@dataclass(frozen=True, slots=True)
class _Piece:
    """What one (session, source) pair adds to the table, as `_Emitter` output: its
    mirror and session chains, their counters and rules."""

    chains: tuple[Chain, ...]
    counters: tuple[CounterRef, ...]
    session_chains: tuple[tuple[Direction, str, tuple[Expr, ...]], ...]
    chain_defs: tuple[tuple[str, str], ...]
    counter_defs: tuple[tuple[str, str], ...]
    chain_rules: tuple[tuple[str, str], ...]


def _direction_tag(direction: Direction) -> str:
    return "i" if direction is Direction.INGRESS else "e"


def _target_address(target: Port | None) -> str | None:
    return target.address if target is not None else None


def _filter_signature(by_direction: dict[Direction, tuple[Rule, ...]]) -> str:
    """Everything of a filter's rules that its sessions' pieces depend on, as one string
    (a dictionary key that hashes once)."""
    return "\n".join(
        f"{direction.value} {r.id} {r.priority} {r.action.value} {_match_key(r)}"
        for direction, rules in by_direction.items()
        for r in rules
    )


class PlanCompiler:
    """Compiles desired states into kernel plans, remembering what the last compile built.

    The agent keeps one compiler: a one-session change among 1,000 rebuilds one piece
    (a session and source pair's chains, counters and rules) and reuses the rest. The
    memo holds the pieces of the last compile only (replaced by each compile, so never
    the pieces of sessions long gone) and the text of up to MATCH_CACHE_SIZE rule
    matches. A warm compiler gives exactly the plan a fresh one gives.
    """

    def __init__(self) -> None:
        self._pieces: dict[tuple[int, str, str], _Piece] = {}
        # Placement tables by their healthy members ((port id, number), ...): 10-34 ms each.
        self._tables: dict[tuple[tuple[str, int], ...], bytes] = {}
        self._match_texts = functools.lru_cache(maxsize=MATCH_CACHE_SIZE)(_match_texts)

    def compile(self, state: DesiredState, *, underlay_mtu: int | None = None) -> KernelPlan:
        """The kernel plan for `state`: same state, same plan (byte for byte)."""
        # Building many small dicts and strings triggers the cyclic GC over and over;
        # nothing here makes cycles, so pause it (docs/benchmarks.md).
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._compile(state, underlay_mtu)
        finally:
            if was_enabled:
                gc.enable()

    def _piece(
        self, key: int, session_id: str, by_direction: dict[Direction, tuple[Rule, ...]]
    ) -> _Piece:
        mirror_chain = f"m{key:08x}"
        mirrored, unmirrorable = f"m{key:08x}", f"u{key:08x}"
        chains = [Chain(mirror_chain, 3)]
        counters = [
            CounterRef(mirrored, "mirrored", session_id),
            CounterRef(unmirrorable, "unmirrorable", session_id),
        ]
        rules_out = [(mirror_chain, r) for r in _mirror_rules(key, mirrored, unmirrorable)]
        session_chains: list[tuple[Direction, str, tuple[Expr, ...]]] = []
        for direction, rules in by_direction.items():
            if not rules:
                continue
            session_chain = f"s{key:08x}{_direction_tag(direction)}"
            rule_count = 0
            guard: tuple[Expr, ...] | None = None
            for rule in rules:
                counter = f"r{key:08x}{_direction_tag(direction)}{rule.priority}"
                counters.append(CounterRef(counter, "rule", session_id, rule.id))
                verdict = _goto(mirror_chain) if rule.action is Action.ACCEPT else _RETURN
                # At most one alternative matches a packet: the counter counts it once.
                for match in self._match_texts(_match_key(rule)):
                    guard = match if guard is None else _common_prefix(guard, match)
                    rules_out.append((session_chain, [*match, _counter(counter), verdict]))
                    rule_count += 1
            chains.append(Chain(session_chain, rule_count))
            session_chains.append((direction, session_chain, guard or ()))
        out = _Emitter()
        for chain in chains:
            out.chain(chain)
        for ref in counters:
            out.counter(ref)
        for chain_name, exprs in rules_out:
            out.rule(chain_name, exprs)
        return _Piece(
            chains=tuple(chains),
            counters=tuple(counters),
            session_chains=tuple(session_chains),
            chain_defs=tuple(out.chain_defs.items()),
            counter_defs=tuple(out.counter_defs.items()),
            chain_rules=tuple((name, "\n".join(lines)) for name, lines in out.chain_rules.items()),
        )

    def _compile(self, state: DesiredState, underlay_mtu: int | None) -> KernelPlan:
        ports = {p.id: p for p in state.ports}
        targets = {p.id: p for p in (*state.ports, *state.targets)}
        filters = {f.id: f for f in state.filters}
        skipped: list[str] = []
        tunnels: list[Tunnel] = []
        counters: list[CounterRef] = []
        chains: list[Chain] = []
        dispatch: dict[tuple[Direction, str], list[_SessionChain]] = {}
        used_keys: set[int] = set()
        rules_by_filter: dict[str, dict[Direction, tuple[Rule, ...]]] = {}
        signatures: dict[str, str] = {}
        pieces: dict[tuple[int, str, str], _Piece] = {}
        groups = {g.id: g for g in state.groups}
        placing = _Placing(self._tables)

        for session in sorted(state.sessions, key=lambda s: (s.priority, s.id)):
            if not session.enabled:
                continue
            flt = filters.get(session.filter_id)
            if flt is None:
                skipped.append(f"session {session.id}: filter {session.filter_id} is unknown")
                continue
            by_direction = rules_by_filter.get(flt.id)
            if by_direction is None:
                by_direction = {d: flt.rules_for(d) for d in (Direction.INGRESS, Direction.EGRESS)}
                rules_by_filter[flt.id] = by_direction
                signatures[flt.id] = _filter_signature(by_direction)
            if not any(by_direction.values()):
                continue  # docs/behaviour.md §2.5: a filter without rules mirrors nothing
            # A group's members each get their own entry and snap length (_Placing).
            group, remote, snaplen = None, None, session.packet_length
            if session.target_kind is TargetKind.ELB:
                group = groups.get(session.target_id)
                if group is None:
                    skipped.append(
                        f"session {session.id}: target group {session.target_id} is unknown"
                    )
                    continue
            else:
                remote = _target_address(targets.get(session.target_id))
                if remote is None:
                    skipped.append(
                        f"session {session.id}: target {session.target_id} is unknown or has "
                        "no address"
                    )
                    continue
                snaplen = snap_length(session.packet_length, remote, underlay_mtu)
            for source_id in sorted(set(session.sources)):
                source = ports.get(source_id)
                if source is None:
                    continue  # a source on another host
                key = session_key(session.id, source.id)
                while key in used_keys:  # a hash collision: the next free key, deterministically
                    key = key % MAX_KEY + 1
                used_keys.add(key)
                if group is not None:
                    placing.add(session, source, key, group, targets, underlay_mtu)
                else:
                    assert remote is not None
                    tunnels.append(_tunnel(key, session, source, remote, snaplen))
                piece_key = (key, session.id, signatures[session.filter_id])
                piece = self._pieces.get(piece_key)
                if piece is None:
                    piece = self._piece(key, session.id, by_direction)
                pieces[piece_key] = piece
                chains.extend(piece.chains)
                counters.extend(piece.counters)
                for direction, session_chain, guard in piece.session_chains:
                    dispatch.setdefault((direction, source.device), []).append(
                        _SessionChain(session.priority, session.id, session_chain, guard)
                    )

        base_rules: list[tuple[str, list[Expr]]] = []
        base_chains: list[Chain] = []
        own_output = [
            [expr_text(e) for e in rule]
            for rule in _own_output_exclusion(t.remote for t in (*tunnels, *placing.members))
        ]
        for (direction, device), session_chains in sorted(dispatch.items()):
            name = chain_name_for_device(direction, device)
            body: list[list[Expr]] = []
            if direction is Direction.EGRESS:
                body.extend(own_output)  # docs/behaviour.md §2.4: never mirror the mirror's output
            # Session priority order (docs/behaviour.md §2.1); sessions were walked in that order.
            # A packet that fails what all of a session's rules start with matches none of
            # them: it skips the chain here (docs/dataplane.md, "Dispatch per device").
            body.extend([*sc.guard, _jump(sc.chain)] for sc in session_chains)
            base_chains.append(Chain(name, len(body), hook=direction.value, device=device))
            base_rules.extend((name, exprs) for exprs in body)

        # The same order as one emitter over everything: chains (the pieces' in session
        # order, then the base chains), counters, then rules (base chains' first).
        out = _Emitter()
        for chain in base_chains:
            out.chain(chain)
        for chain_name, exprs in base_rules:
            out.rule(chain_name, exprs)
        self._pieces = pieces
        base_chain_rules = tuple(
            (name, "\n".join(lines)) for name, lines in out.chain_rules.items()
        )
        plan = KernelPlan(
            revision=state.revision,
            digest="",
            chain_defs=(
                *(d for p in pieces.values() for d in p.chain_defs),
                *out.chain_defs.items(),
            ),
            counter_defs=tuple(d for p in pieces.values() for d in p.counter_defs),
            chain_rules=(*base_chain_rules, *(r for p in pieces.values() for r in p.chain_rules)),
            chains=(*chains, *base_chains),
            counters=tuple(counters),
            tunnels=(*tunnels, *placing.members),
            skipped=tuple(skipped),
            groups=tuple(placing.groups),
            tables=tuple(sorted((i, t) for t, i in placing.table_ids.items())),
        )
        self._tables = placing.tables_used
        digest = hashlib.sha256(plan.nft_text.encode())
        for t in plan.tunnels:
            digest.update(
                f"{t.key} {t.vni} {t.remote} {t.local} {t.snaplen} {t.session_id} "
                f"{t.source_port_id} {t.member_port_id}\n".encode()
            )
        for g in plan.groups:
            digest.update(f"g {g.key} {g.table_id} {g.member_base} {g.snaplen}\n".encode())
        for table_id, table in plan.tables:
            digest.update(f"t {table_id} ".encode() + hashlib.sha256(table).digest())
        return dataclasses.replace(plan, digest=digest.hexdigest()[:32])


def _tunnel(
    key: int,
    session: Session,
    source: Port,
    remote: str,
    snaplen: int,
    member: GroupMember | None = None,
) -> Tunnel:
    """The entry for one (session, source) pair's copies to `remote`: the session's
    target, or one member of its group; the source's address of the remote's family."""
    family = source.ipv6 if ":" in remote else source.ipv4
    return Tunnel(
        key=key,
        session_id=session.id,
        source_port_id=source.id,
        vni=session.vni,
        remote=remote,
        local=family[0] if family else None,
        snaplen=snaplen,
        member_port_id=None if member is None else member.port_id,
    )


class _Placing:
    """What one compile builds for sessions whose target is a group: their group entries,
    the member entries (one per member with an address, healthy or not, so that a
    member's counters outlive a spell of bad health) and the placement tables."""

    def __init__(self, tables: dict[tuple[tuple[str, int], ...], bytes]) -> None:
        self.known_tables = tables
        self.tables_used: dict[tuple[tuple[str, int], ...], bytes] = {}
        self.groups: list[GroupTunnel] = []
        self.members: list[Tunnel] = []
        self.table_ids: dict[bytes, int] = {}
        self.used_indexes: set[int] = set()

    def add(
        self,
        session: Session,
        source: Port,
        key: int,
        group: TargetGroup,
        targets: dict[str, Port],
        underlay_mtu: int | None,
    ) -> None:
        addressed = [
            (member, address)
            for member in sorted(group.members, key=lambda m: m.number)
            if (address := _target_address(targets.get(member.port_id))) is not None
        ]
        # A stable index per (session, source): the same member keys on every apply.
        index = (key * 0x9E3779B1 >> 7) % MEMBER_INDEXES
        while index in self.used_indexes:
            index = (index + 1) % MEMBER_INDEXES
        self.used_indexes.add(index)
        member_base = MEMBER_KEY_FLAG | index << 8
        for member, address in addressed:
            snaplen = snap_length(session.packet_length, address, underlay_mtu)
            self.members.append(
                _tunnel(member_base | member.number, session, source, address, snaplen, member)
            )
        healthy = tuple((m.port_id, m.number) for m, _ in addressed if m.healthy)
        table_id = self._table_id(healthy) if healthy else None
        self.groups.append(
            GroupTunnel(
                key=key,
                session_id=session.id,
                source_port_id=source.id,
                group_id=group.id,
                table_id=table_id,
                member_base=member_base,
                snaplen=session.packet_length,
            )
        )

    def _table_id(self, healthy: tuple[tuple[str, int], ...]) -> int:
        table = self.known_tables.get(healthy) or self.tables_used.get(healthy)
        if table is None:
            built = placement.build_table(port for port, _ in healthy)
            number_of = dict(healthy)
            numbers = bytes(number_of[port] for port in built.members).ljust(256, b"\0")
            table = built.slots.translate(numbers)
        self.tables_used[healthy] = table
        found = self.table_ids.get(table)
        if found is not None:
            return found
        # Named after its content: a changed table is written under a new id before the
        # group entries switch to it, so no packet sees half of a table.
        table_id = int.from_bytes(hashlib.sha256(table).digest()[:4], "little") % TABLE_IDS
        while table_id in self.table_ids.values():
            table_id = (table_id + 1) % TABLE_IDS
        self.table_ids[table] = table_id
        return table_id


def compile_plan(state: DesiredState, *, underlay_mtu: int | None = None) -> KernelPlan:
    """The kernel plan for `state`, from a fresh compiler (no memo: for one-off compiles;
    a long-lived caller such as the agent keeps a `PlanCompiler`)."""
    return PlanCompiler().compile(state, underlay_mtu=underlay_mtu)


# --- nft text: the expressions above, rendered in nft's own syntax ---


def _quote(text: str) -> str:
    if '"' in text or "\\" in text or "\n" in text:
        raise ValueError(f"cannot put {text!r} into an nft string")
    return f'"{text}"'


def _value_text(value: Any) -> str:
    if isinstance(value, dict):
        if "prefix" in value:
            return f"{value['prefix']['addr']}/{value['prefix']['len']}"
        if "range" in value:
            return f"{value['range'][0]}-{value['range'][1]}"
        if "set" in value:
            return "{ " + ", ".join(_value_text(v) for v in value["set"]) + " }"
    return str(value)


def _left_text(left: dict[str, Any]) -> str:
    if "meta" in left:
        return f"meta {left['meta']['key']}"
    if "&" in left:
        value, mask = left["&"]
        return f"{_left_text(value)} & 0x{mask:x}"
    if "exthdr" in left:
        return f"{left['exthdr']['name']} {left['exthdr']['field']}"
    payload = left["payload"]
    return f"{payload['protocol']} {payload['field']}"


def expr_text(expr: dict[str, Any]) -> str:
    """One nft expression (an nft JSON dict) in nft's text syntax."""
    (kind, body), *_ = expr.items()
    if kind == "match":
        assert body["op"] == "=="
        left, right = body["left"], body["right"]
        if isinstance(right, bool):  # presence of an extension header
            assert "exthdr" in left and "field" not in left
            return f"exthdr {left['exthdr']['name']} {'exists' if right else 'missing'}"
        if "&" in left:  # nft's text needs the operator after a binary expression
            return f"{_left_text(left)} == {_value_text(right)}"
        return f"{_left_text(left)} {_value_text(right)}"
    if kind == "counter":
        return "counter" if body is None else f"counter name {_quote(body)}"
    if kind == "mangle":
        key, value = body["key"]["meta"]["key"], int(body["value"])
        # A priority is a tc class id, written major:minor in hex.
        shown = f"{value >> 16:x}:{value & 0xFFFF:x}" if key == "priority" else str(value)
        return f"meta {key} set {shown}"
    if kind == "dup":
        return f"dup to {_quote(body['addr'])}"
    if kind in ("goto", "jump"):
        return f"{kind} {body['target']}"
    if kind in ("return", "accept"):
        return kind
    raise ValueError(f"no text form for nft expression {kind}")


def chain_name_for_device(direction: Direction, device: str) -> str:
    """`in_eth0` / `out_eth0`; a device name nft would not take as a word goes in hex."""
    prefix = "in" if direction is Direction.INGRESS else "out"
    if _NFT_WORD.fullmatch(device):
        return f"{prefix}_{device}"
    return f"{prefix}_x{device.encode().hex()}"


_NFT_WORD = re.compile(r"[A-Za-z0-9_.\-]+")


def _own_output_exclusion(remotes: Iterable[str]) -> list[list[dict[str, Any]]]:
    """`udp dport 4789` to a target address of this plan: the mirror's own VXLAN output."""
    addresses = set(remotes)
    rules: list[list[dict[str, Any]]] = []
    for ip in ("ip", "ip6"):
        family = sorted(a for a in addresses if (":" in a) == (ip == "ip6"))
        if not family:
            continue
        daddr: Any = family[0] if len(family) == 1 else {"set": family}
        for fragment in _first_fragment(ip):  # a non-first fragment has no UDP port
            rules.append(
                [
                    _match(_meta("protocol"), ip),
                    _match(_meta("l4proto"), "udp"),
                    *fragment,
                    _match(_payload("udp", "dport"), VXLAN_PORT),
                    _match(_payload(ip, "daddr"), daddr),
                    {"return": None},
                ]
            )
    return rules
