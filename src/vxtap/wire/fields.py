"""Field types of the wire: Huawei's quirks, validated once for server, client and queries.

Quirks handled here and nowhere else: numbers and booleans that arrive as
strings (`"1"`, `"true"`) or native JSON, enum values in any letter case
(answered in canonical case), CIDRs with stray blanks, `""` meaning "absent"
for optional CIDRs and port ranges. Validators raise ValueError with a message
naming the allowed values; the API prefixes the field's path.
The JSON schemas given to the OpenAPI document describe what is really
accepted, so schema-driven fuzzing exercises the real validation.
"""

from __future__ import annotations

import collections
import ipaddress
import re
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator, Field, WithJsonSchema

from vxtap import model

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

E = TypeVar("E", bound=StrEnum)


def shown(value: Any) -> str:
    """A refused value as quoted in an error message, cut short: messages stay one line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def integer_parser(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,10}\s*", value):
            number = int(value)
        else:
            raise ValueError(f"must be an integer {low}-{high}, got {shown(value)}")
        if not low <= number <= high:
            raise ValueError(f"must be {low}-{high}, got {number}")
        return number

    return parse


def _int_schema(low: int, high: int) -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "integer", "minimum": low, "maximum": high},
            {"type": "string", "pattern": "^[0-9]{1,8}$"},
        ],
        "description": f"{low}-{high}; a JSON number or a string of digits",
    }


RulePriority = Annotated[
    int, BeforeValidator(integer_parser(1, 65535)), WithJsonSchema(_int_schema(1, 65535))
]
SessionPriority = Annotated[
    int, BeforeValidator(integer_parser(1, 32766)), WithJsonSchema(_int_schema(1, 32766))
]
Vni = Annotated[
    int, BeforeValidator(integer_parser(0, 16_777_215)), WithJsonSchema(_int_schema(0, 16_777_215))
]
PacketLength = Annotated[
    int, BeforeValidator(integer_parser(1, 1460)), WithJsonSchema(_int_schema(1, 1460))
]


def parse_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"must be true or false (JSON boolean or string), got {shown(value)}")


FlexBool = Annotated[
    bool,
    BeforeValidator(parse_boolean),
    WithJsonSchema({"anyOf": [{"type": "boolean"}, {"type": "string", "enum": ["true", "false"]}]}),
]


def canonical(enum: type[E]) -> Callable[[Any], E]:
    by_lower = {member.value.lower(): member for member in enum}

    def parse(value: Any) -> E:
        if isinstance(value, str) and value.strip().lower() in by_lower:
            return by_lower[value.strip().lower()]
        allowed = "|".join(m.value for m in enum)
        raise ValueError(f"must be one of {allowed} (any letter case), got {shown(value)}")

    return parse


def _enum_schema(enum: type[StrEnum]) -> dict[str, Any]:
    return {"type": "string", "enum": [m.value for m in enum], "description": "any letter case"}


DirectionIn = Annotated[
    model.Direction,
    BeforeValidator(canonical(model.Direction)),
    WithJsonSchema(_enum_schema(model.Direction)),
]
ActionIn = Annotated[
    model.Action,
    BeforeValidator(canonical(model.Action)),
    WithJsonSchema(_enum_schema(model.Action)),
]
EtherTypeIn = Annotated[
    model.EtherType,
    BeforeValidator(canonical(model.EtherType)),
    WithJsonSchema(_enum_schema(model.EtherType)),
]
ProtocolIn = Annotated[
    model.Protocol,
    BeforeValidator(canonical(model.Protocol)),
    WithJsonSchema(_enum_schema(model.Protocol)),
]


NAME_PATTERN = re.compile(r"[\w.-]{1,64}")


def _name(value: Any) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ValueError(
            "must be 1-64 characters: letters (CJK included), digits, '_', '-', '.'; "
            f"got {shown(value)}"
        )
    return value


Name = Annotated[
    str,
    BeforeValidator(_name),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"^[\w.-]+$"}),
]


def _description(value: Any) -> str:
    if value is None:
        return ""
    if (
        not isinstance(value, str)
        or len(value) > 255
        or "<" in value
        or ">" in value
        or "\x00" in value
    ):
        raise ValueError(
            f"must be a string of 0-255 characters without '<', '>' or NUL, got {shown(value)}"
        )
    return value


Description = Annotated[
    str,
    BeforeValidator(_description),
    WithJsonSchema({"type": "string", "maxLength": 255, "pattern": "^[^<>]*$"}),
]


def parse_cidr(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            pass
    raise ValueError(
        f"must be a CIDR block such as 10.0.0.0/24 or 2001:db8::/64, got {shown(value)}"
    )


Cidr = Annotated[
    str | None,
    BeforeValidator(parse_cidr),
    WithJsonSchema({"type": "string", "example": "192.168.0.0/24"}),
]


def parse_port_range(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise ValueError(f"must be a port range START-END within 1-65535, got {shown(value)}")
    return str(model.PortRange.parse(value))


PortRangeText = Annotated[
    str | None,
    BeforeValidator(parse_port_range),
    WithJsonSchema({"type": "string", "pattern": "^[0-9]{1,5}-[0-9]{1,5}$", "example": "80-200"}),
]


def identifier(value: Any) -> str:
    # NUL: PostgreSQL cannot store or compare it.
    if not isinstance(value, str) or not 1 <= len(value) <= 64 or "\x00" in value:
        raise ValueError(f"must be an id (a string of 1-64 characters, no NUL), got {shown(value)}")
    return value


Identifier = Annotated[
    str,
    BeforeValidator(identifier),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 64}),
]


def _port_ids(minimum: int, maximum: int) -> Callable[[Any], list[str]]:
    """The check of a list of distinct port ids, `minimum`-`maximum` long."""
    count = f"{minimum}-{maximum}" if minimum else f"at most {maximum}"

    def check(value: Any) -> list[str]:
        if not isinstance(value, list) or not minimum <= len(value) <= maximum:
            raise ValueError(f"must be a list of {count} port ids, got {shown(value)}")
        ids = [identifier(v) for v in value]
        duplicates = sorted(v for v, n in collections.Counter(ids).items() if n > 1)
        if duplicates:
            raise ValueError(f"lists port(s) {', '.join(duplicates)} more than once")
        return ids

    return check


def _port_ids_schema(minimum: int, maximum: int) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "array",
        "items": {"type": "string", "minLength": 1, "maxLength": 64},
    }
    if minimum:
        schema["minItems"] = minimum
    return schema | {"maxItems": maximum, "uniqueItems": True}


# A session's sources and a group's members: lists of distinct port ids.
Sources = Annotated[
    list[str],
    BeforeValidator(_port_ids(1, model.MAX_SOURCES_PER_SESSION)),
    WithJsonSchema(_port_ids_schema(1, model.MAX_SOURCES_PER_SESSION)),
]
GroupPorts = Annotated[
    list[str],
    BeforeValidator(_port_ids(0, model.MAX_GROUP_MEMBERS)),
    WithJsonSchema(_port_ids_schema(0, model.MAX_GROUP_MEMBERS)),
]


class TargetType(StrEnum):
    ENI = "eni"  # a port
    ELB = "elb"  # a target group (docs/elb.md)


class SourceType(StrEnum):
    ENI = "eni"


TargetTypeIn = Annotated[
    TargetType, BeforeValidator(canonical(TargetType)), WithJsonSchema(_enum_schema(TargetType))
]
SourceTypeIn = Annotated[
    SourceType, BeforeValidator(canonical(SourceType)), WithJsonSchema(_enum_schema(SourceType))
]


HOST_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
DEVICE_PATTERN = re.compile(r"[^\s/:\x00-\x1f\x7f]{1,15}")
MAC_PATTERN = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def parse_host(value: Any) -> str:
    if not isinstance(value, str) or not HOST_PATTERN.fullmatch(value):
        raise ValueError(
            f"must be a host name (letters, digits, '.', '-', '_'), got {shown(value)}"
        )
    return value


def _device(value: Any) -> str:
    if not isinstance(value, str) or not DEVICE_PATTERN.fullmatch(value):
        raise ValueError(
            "must be a Linux interface name (1-15 characters, no blanks, '/' or ':'), "
            f"got {shown(value)}"
        )
    return value


def _mac(value: Any) -> str | None:
    if value is None or value == "":
        return None
    text = value.strip().lower().replace("-", ":") if isinstance(value, str) else ""
    if not MAC_PATTERN.fullmatch(text):
        raise ValueError(f"must be a MAC address such as 52:54:00:12:34:56, got {shown(value)}")
    return text


def _addresses(version: int) -> Callable[[Any], list[str]]:
    def parse(value: Any) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list) or len(value) > 64:
            raise ValueError(
                f"must be a list of at most 64 IPv{version} addresses, got {shown(value)}"
            )
        found: list[str] = []
        for item in value:
            try:
                # An address with its prefix ("10.0.0.1/24") is accepted; the address is kept.
                interface = ipaddress.ip_interface(item.strip()) if isinstance(item, str) else None
            except ValueError:
                interface = None
            if interface is None or interface.version != version:
                raise ValueError(f"{shown(item)} is not an IPv{version} address")
            refusal = model.interface_refusal(interface)
            if refusal is not None:
                raise ValueError(refusal)
            if str(interface.ip) not in found:
                found.append(str(interface.ip))
        return found

    return parse


Host = Annotated[
    str, BeforeValidator(parse_host), WithJsonSchema({"type": "string", "maxLength": 255})
]
Device = Annotated[
    str, BeforeValidator(_device), WithJsonSchema({"type": "string", "maxLength": 15})
]
Mac = Annotated[str | None, BeforeValidator(_mac), WithJsonSchema({"type": "string"})]
IPv4List = Annotated[
    list[str],
    BeforeValidator(_addresses(4)),
    WithJsonSchema({"type": "array", "items": {"type": "string", "format": "ipv4"}}),
]
IPv6List = Annotated[
    list[str],
    BeforeValidator(_addresses(6)),
    WithJsonSchema({"type": "array", "items": {"type": "string", "format": "ipv6"}}),
]


# Keys of a counter report are session or rule ids (UUIDs, 36 characters; the column is as wide).
CounterKey = Annotated[str, Field(min_length=1, max_length=36, pattern=r"^[^\x00]+$")]
# "<session id>/<member port id>": two ids of at most 36 characters each.
MemberCounterKey = Annotated[
    str, Field(min_length=3, max_length=73, pattern=r"^[^\x00/]{1,36}/[^\x00/]{1,36}$")
]
# Revisions are 16 hex digits today; the column holds 64 characters.
Revision = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z._-]+$")]
