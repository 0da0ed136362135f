"""The plan's nft text read back as nft JSON commands, and a reference renderer back.

The compiler emits only nft's text syntax (that is what the kernel loads). Tests
assert on structure, which reads better as nft JSON (`nft -j`'s documented shape):
`nft_commands` parses a plan's text for the small grammar the compiler writes, and
`render_command` renders one JSON command in text syntax, written independently of
the compiler. `test_plan.py` checks that the two round-trip the plan's text exactly,
so the structure the tests read is the text the kernel gets.
"""

from __future__ import annotations

import re
from typing import Any

from vxtap.dataplane.plan import FAMILY, TABLE, KernelPlan

Command = dict[str, Any]

_WHERE = f"{FAMILY} {TABLE}"
_HOOKED_CHAIN = re.compile(
    r"(?P<name>\S+) \{ type (?P<type>\S+) hook (?P<hook>\S+) device \"(?P<dev>[^\"]*)\" "
    r"priority (?P<prio>-?\d+); policy (?P<policy>\S+); \}"
)
_COUNTER = re.compile(r"(?P<name>\S+) \{ comment \"(?P<comment>[^\"]*)\" ; \}")


def nft_commands(plan: KernelPlan) -> list[Command]:
    """The plan's `nft_text`, one JSON command per line."""
    return [parse_command(line) for line in plan.nft_text.splitlines()]


def rules_of(plan: KernelPlan, chain: str) -> list[list[dict[str, Any]]]:
    """The expressions of each rule of `chain`, in order."""
    return [
        c["add"]["rule"]["expr"]
        for c in nft_commands(plan)
        if "rule" in c["add"] and c["add"]["rule"]["chain"] == chain
    ]


def base_chains(plan: KernelPlan) -> dict[str, dict[str, Any]]:
    """The hooked chains' JSON bodies by name."""
    return {
        c["add"]["chain"]["name"]: c["add"]["chain"]
        for c in nft_commands(plan)
        if "chain" in c["add"] and "hook" in c["add"]["chain"]
    }


def parse_command(line: str) -> Command:
    if line == f"add table {_WHERE}":
        return {"add": {"table": {"family": FAMILY, "name": TABLE}}}
    kind, _, rest = line.removeprefix("add ").partition(f" {_WHERE} ")
    base = {"family": FAMILY, "table": TABLE}
    if kind == "chain":
        hooked = _HOOKED_CHAIN.fullmatch(rest)
        if hooked is None:
            assert " " not in rest, line
            return {"add": {"chain": {**base, "name": rest}}}
        body = hooked.groupdict()
        return {"add": {"chain": {**base, **body, "prio": int(body["prio"])}}}
    if kind == "counter":
        counter = _COUNTER.fullmatch(rest)
        assert counter is not None, line
        return {"add": {"counter": {**base, **counter.groupdict()}}}
    assert kind == "rule", line
    chain, _, exprs = rest.partition(" ")
    return {"add": {"rule": {**base, "chain": chain, "expr": _parse_exprs(_tokens(exprs))}}}


def _tokens(text: str) -> list[str]:
    """Words, with a `{ a, b }` set kept as one token."""
    out: list[str] = []
    words = iter(text.split(" "))
    for word in words:
        if word == "{":
            members = []
            for member in words:
                if member == "}":
                    break
                members.append(member.rstrip(","))
            out.append("{" + ",".join(members) + "}")
        else:
            out.append(word)
    return out


def _value(token: str) -> Any:
    if token.startswith("{"):
        return {"set": [_value(t) for t in token[1:-1].split(",")]}
    if "/" in token:
        address, length = token.split("/")
        return {"prefix": {"addr": address, "len": int(length)}}
    if re.fullmatch(r"\d+-\d+", token):
        low, high = token.split("-")
        return {"range": [int(low), int(high)]}
    if token.isdigit():
        return int(token)
    return token


def _match(left: dict[str, Any], right: Any) -> dict[str, Any]:
    return {"match": {"op": "==", "left": left, "right": right}}


def _parse_exprs(tokens: list[str]) -> list[dict[str, Any]]:
    exprs: list[dict[str, Any]] = []
    i = 0
    while i < len(tokens):
        word = tokens[i]
        if word == "meta":
            key = tokens[i + 1]
            if tokens[i + 2] == "set":
                shown = tokens[i + 3]
                if key == "priority":  # a tc class id, major:minor in hex
                    major, minor = shown.split(":")
                    value = int(major, 16) << 16 | int(minor, 16)
                else:
                    value = int(shown)
                exprs.append({"mangle": {"key": {"meta": {"key": key}}, "value": value}})
                i += 4
            else:
                exprs.append(_match({"meta": {"key": key}}, _value(tokens[i + 2])))
                i += 3
        elif word == "exthdr":
            present = tokens[i + 2] == "exists"
            exprs.append(_match({"exthdr": {"name": tokens[i + 1]}}, present))
            i += 3
        elif word == "frag":
            left = {"exthdr": {"name": "frag", "field": tokens[i + 1]}}
            exprs.append(_match(left, _value(tokens[i + 2])))
            i += 3
        elif word == "counter":
            assert tokens[i + 1] == "name"
            exprs.append({"counter": tokens[i + 2].strip('"')})
            i += 3
        elif word == "dup":
            assert tokens[i + 1] == "to"
            exprs.append({"dup": {"addr": tokens[i + 2].strip('"')}})
            i += 3
        elif word in ("goto", "jump"):
            exprs.append({word: {"target": tokens[i + 1]}})
            i += 2
        elif word in ("return", "accept"):
            exprs.append({word: None})
            i += 1
        else:  # a payload field: `ip saddr VALUE` or `ip frag-off & MASK == VALUE`
            payload = {"payload": {"protocol": word, "field": tokens[i + 1]}}
            if tokens[i + 2] == "&":
                assert tokens[i + 4] == "=="
                masked = {"&": [payload, int(tokens[i + 3], 16)]}
                exprs.append(_match(masked, _value(tokens[i + 5])))
                i += 6
            else:
                exprs.append(_match(payload, _value(tokens[i + 2])))
                i += 3
    return exprs


# --- the reference renderer: nft JSON -> nft text ---


def _quote(text: str) -> str:
    assert not any(c in text for c in '"\\\n'), text
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
    (kind, body), *_ = expr.items()
    if kind == "match":
        assert body["op"] == "=="
        left, right = body["left"], body["right"]
        if isinstance(right, bool):
            return f"exthdr {left['exthdr']['name']} {'exists' if right else 'missing'}"
        if "&" in left:
            return f"{_left_text(left)} == {_value_text(right)}"
        return f"{_left_text(left)} {_value_text(right)}"
    if kind == "counter":
        return f"counter name {_quote(body)}"
    if kind == "mangle":
        key, value = body["key"]["meta"]["key"], int(body["value"])
        shown = f"{value >> 16:x}:{value & 0xFFFF:x}" if key == "priority" else str(value)
        return f"meta {key} set {shown}"
    if kind == "dup":
        return f"dup to {_quote(body['addr'])}"
    if kind in ("goto", "jump"):
        return f"{kind} {body['target']}"
    if kind in ("return", "accept"):
        return str(kind)
    raise ValueError(f"no text form for nft expression {kind}")


def render_command(command: Command) -> str:
    """One `add` command in nft text syntax."""
    (kind, body), *_ = command["add"].items()
    if kind == "table":
        return f"add table {_WHERE}"
    if kind == "chain":
        if "hook" not in body:
            return f"add chain {_WHERE} {body['name']}"
        return (
            f"add chain {_WHERE} {body['name']} {{ type {body['type']} hook {body['hook']} "
            f"device {_quote(body['dev'])} priority {body['prio']}; policy {body['policy']}; }}"
        )
    if kind == "counter":
        return f"add counter {_WHERE} {body['name']} {{ comment {_quote(body['comment'])} ; }}"
    if kind == "rule":
        exprs = " ".join(expr_text(e) for e in body["expr"])
        return f"add rule {_WHERE} {body['chain']} {exprs}"
    raise ValueError(f"no text form for nft {kind}")
