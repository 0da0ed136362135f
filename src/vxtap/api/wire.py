"""Huawei's wire format: request envelopes with their quirks, and response rendering.

Quirks handled here and nowhere else: numbers and booleans that arrive as
strings (`"1"`, `"true"`) or native JSON, enum values in any letter case
(answered in canonical case), CIDRs with stray blanks, `""` meaning "absent"
for optional CIDRs and port ranges. Validators raise ValueError with a message
naming the allowed values; `vxtap.api.app` prefixes the field's path.
The JSON schemas given to the OpenAPI document describe what is really
accepted, so schema-driven fuzzing exercises the real validation.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from vxtap import model
from vxtap.store.schema import FilterRow, PortRow, RuleRow

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


def _sources(value: Any) -> list[str]:
    limit = model.MAX_SOURCES_PER_SESSION
    if not isinstance(value, list) or not 1 <= len(value) <= limit:
        raise ValueError(f"must be a list of 1-{limit} port ids, got {shown(value)}")
    ids = [identifier(v) for v in value]
    duplicates = sorted({v for v in ids if ids.count(v) > 1})
    if duplicates:
        raise ValueError(f"lists port(s) {', '.join(duplicates)} more than once")
    return ids


Sources = Annotated[
    list[str],
    BeforeValidator(_sources),
    WithJsonSchema(
        {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 64},
            "minItems": 1,
            "maxItems": model.MAX_SOURCES_PER_SESSION,
            "uniqueItems": True,
        }
    ),
]


class TargetType(StrEnum):
    ENI = "eni"


class SourceType(StrEnum):
    ENI = "eni"


TargetTypeIn = Annotated[
    TargetType, BeforeValidator(canonical(TargetType)), WithJsonSchema(_enum_schema(TargetType))
]
SourceTypeIn = Annotated[
    SourceType, BeforeValidator(canonical(SourceType)), WithJsonSchema(_enum_schema(SourceType))
]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- filters ----------------------------------------------------------------------------


class CreateFilterOption(_Wire):
    name: Name
    description: Description = ""


class CreateFilterRequest(_Wire):
    traffic_mirror_filter: CreateFilterOption


class UpdateFilterOption(_Wire):
    name: Name | None = None
    description: Description | None = None


class UpdateFilterRequest(_Wire):
    traffic_mirror_filter: UpdateFilterOption


# -- rules ------------------------------------------------------------------------------


class CreateRuleOption(_Wire):
    traffic_mirror_filter_id: Identifier
    direction: DirectionIn
    priority: RulePriority
    action: ActionIn
    ethertype: EtherTypeIn
    protocol: ProtocolIn
    source_cidr_block: Cidr = None
    destination_cidr_block: Cidr = None
    source_port_range: PortRangeText = None
    destination_port_range: PortRangeText = None
    description: Description = ""


class CreateRuleRequest(_Wire):
    traffic_mirror_filter_rule: CreateRuleOption


class UpdateRuleOption(_Wire):
    """`traffic_mirror_filter_id` and `direction` are fixed at creation."""

    priority: RulePriority | None = None
    action: ActionIn | None = None
    ethertype: EtherTypeIn | None = None
    protocol: ProtocolIn | None = None
    source_cidr_block: Cidr = None
    destination_cidr_block: Cidr = None
    source_port_range: PortRangeText = None
    destination_port_range: PortRangeText = None
    description: Description | None = None


class UpdateRuleRequest(_Wire):
    traffic_mirror_filter_rule: UpdateRuleOption


# -- sessions ---------------------------------------------------------------------------


class CreateSessionOption(_Wire):
    name: Name
    description: Description = ""
    traffic_mirror_filter_id: Identifier
    traffic_mirror_sources: Sources
    traffic_mirror_target_id: Identifier
    traffic_mirror_target_type: TargetTypeIn
    virtual_network_id: Vni = model.DEFAULT_VNI
    packet_length: PacketLength = model.DEFAULT_PACKET_LENGTH
    priority: SessionPriority
    enabled: FlexBool = True
    type: SourceTypeIn = SourceType.ENI


class CreateSessionRequest(_Wire):
    traffic_mirror_session: CreateSessionOption


class UpdateSessionOption(_Wire):
    """Sources change only through add-sources / remove-sources."""

    name: Name | None = None
    description: Description | None = None
    traffic_mirror_filter_id: Identifier | None = None
    traffic_mirror_target_id: Identifier | None = None
    traffic_mirror_target_type: TargetTypeIn | None = None
    virtual_network_id: Vni | None = None
    packet_length: PacketLength | None = None
    priority: SessionPriority | None = None
    enabled: FlexBool | None = None
    type: SourceTypeIn | None = None


class UpdateSessionRequest(_Wire):
    traffic_mirror_session: UpdateSessionOption


class SourcesOption(_Wire):
    traffic_mirror_sources: Sources


class SourcesRequest(_Wire):
    traffic_mirror_session: SourcesOption


# Extra fields that are real fields elsewhere: say why they are refused here.
FIXED_FIELDS: dict[tuple[str, ...], str] = {
    ("traffic_mirror_filter_rule", "traffic_mirror_filter_id"): (
        "a rule's filter is fixed at creation; create a new rule in the other filter"
    ),
    ("traffic_mirror_filter_rule", "direction"): (
        "a rule's direction is fixed at creation; create a new rule instead"
    ),
    ("traffic_mirror_session", "traffic_mirror_sources"): (
        "sources change only through the add-sources and remove-sources operations"
    ),
}


# -- ports (internal API) -------------------------------------------------------------

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


class HostPortOption(_Wire):
    device: Device
    mac: Mac = None
    ipv4: IPv4List = Field(default_factory=list)
    ipv6: IPv6List = Field(default_factory=list)


class RegisterPortsRequest(_Wire):
    ports: Annotated[list[HostPortOption], Field(max_length=1024)]


class CreatePortOption(HostPortOption):
    host: Host


class CreatePortRequest(_Wire):
    port: CreatePortOption


# Counters are stored as 64-bit signed integers (SQLite INTEGER, PostgreSQL BIGINT).
COUNTER_MAX = 2**63 - 1
CounterValue = Annotated[int, Field(ge=0, le=COUNTER_MAX, strict=True)]
# Keys are session or rule ids (UUIDs, 36 characters; the column is as wide).
CounterKey = Annotated[str, Field(min_length=1, max_length=36, pattern=r"^[^\x00]+$")]


class Counter(_Wire):
    packets: CounterValue
    bytes: CounterValue
    # Sessions only: copies not sent because they could not be cut to packet_length.
    uncut_packets: CounterValue = 0
    uncut_bytes: CounterValue = 0


class CountersRequest(_Wire):
    sessions: dict[CounterKey, Counter] = Field(default_factory=dict)
    rules: dict[CounterKey, Counter] = Field(default_factory=dict)


# -- the fleet: enrolment and what agents report about themselves ----------------------


class EnrolHostRequest(_Wire):
    host: Host


# Revisions are 16 hex digits today; the column holds 64 characters.
Revision = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z._-]+$")]


class HostStatusRequest(_Wire):
    """What an agent applied: kept as its host's status (`vxtap host list`)."""

    agent_version: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00]+$")]
    applied_revision: Revision | None = None
    # The agent's last apply error, None once an apply succeeded; stored cut to 1,024.
    apply_error: Annotated[str, Field(max_length=4096, pattern=r"^[^\x00]*$")] | None = None
    drift_repairs: CounterValue = 0


# -- responses --------------------------------------------------------------------------


def timestamp(value: datetime) -> str:
    """`2024-09-10T09:54:28Z` (stored naive UTC, whole seconds); isoformat is ~5x strftime."""
    return value.isoformat(timespec="seconds") + "Z"


def rule_json(row: RuleRow) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": row.id,
        "project_id": row.project_id,
        "traffic_mirror_filter_id": row.filter_id,
        "direction": row.direction,
        "priority": row.priority,
        "action": row.action,
        "ethertype": row.ethertype,
        "protocol": row.protocol,
        "description": row.description,
        "created_at": timestamp(row.created_at),
        "updated_at": timestamp(row.updated_at),
    }
    # Absent CIDRs and port ranges are absent from the answer too, as Huawei does.
    for key in (
        "source_cidr_block",
        "destination_cidr_block",
        "source_port_range",
        "destination_port_range",
    ):
        value = getattr(row, key)
        if value is not None:
            body[key] = value
    return body


def filter_json(row: FilterRow) -> dict[str, Any]:
    rules = sorted(row.rules, key=lambda r: r.priority)
    return {
        "id": row.id,
        "project_id": row.project_id,
        "name": row.name,
        "description": row.description,
        "ingress_rules": [rule_json(r) for r in rules if r.direction == "ingress"],
        "egress_rules": [rule_json(r) for r in rules if r.direction == "egress"],
        "type": "eni",
        "created_at": timestamp(row.created_at),
        "updated_at": timestamp(row.updated_at),
    }


def session_json(row: Any, sources: list[str]) -> dict[str, Any]:
    """From a row of `repository.SESSION_COLUMNS_READ` (in that order) and its sources.

    Unpacked by position: on the hot path (lists of 2,000) that is 3x cheaper than
    attribute access on SQLAlchemy rows.
    """
    (
        session_id,
        project_id,
        name,
        description,
        filter_id,
        target_id,
        target_type,
        vni,
        packet_length,
        priority,
        enabled,
        source_type,
        created_at,
        updated_at,
    ) = row
    return {
        "id": session_id,
        "project_id": project_id,
        "name": name,
        "description": description,
        "traffic_mirror_filter_id": filter_id,
        "traffic_mirror_sources": sources,
        "traffic_mirror_target_id": target_id,
        "traffic_mirror_target_type": target_type,
        "virtual_network_id": vni,
        "packet_length": packet_length,
        "priority": priority,
        "enabled": enabled,
        "type": source_type,
        "created_at": timestamp(created_at),
        "updated_at": timestamp(updated_at),
    }


def port_json(row: PortRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "host": row.host,
        "device": row.device,
        "mac": row.mac,
        "ipv4": list(row.ipv4),
        "ipv6": list(row.ipv6),
    }


def v1_port_json(row: PortRow) -> dict[str, Any]:
    """Huawei's (Neutron-style) v1 port shape."""
    return {
        "id": row.id,
        "name": row.device,
        "project_id": row.project_id,
        "tenant_id": row.project_id,
        "mac_address": row.mac or "",
        "fixed_ips": [{"ip_address": ip, "subnet_id": ""} for ip in [*row.ipv4, *row.ipv6]],
        "binding:host_id": row.host,
        "device_owner": "",
        "device_id": "",
        "network_id": "",
        "admin_state_up": True,
        "status": "ACTIVE",
        "created_at": timestamp(row.created_at),
        "updated_at": timestamp(row.updated_at),
    }


# Response models: for the OpenAPI document only (answers are rendered by the
# functions above, which is cheaper than validating each answer again).


class PageInfo(BaseModel):
    previous_marker: str | None = None
    current_count: int
    next_marker: str | None = None


class RuleOut(BaseModel):
    id: str
    project_id: str
    traffic_mirror_filter_id: str
    direction: model.Direction
    priority: int
    action: model.Action
    ethertype: model.EtherType
    protocol: model.Protocol
    source_cidr_block: str | None = None
    destination_cidr_block: str | None = None
    source_port_range: str | None = None
    destination_port_range: str | None = None
    description: str
    created_at: str
    updated_at: str


class FilterOut(BaseModel):
    id: str
    project_id: str
    name: str
    description: str
    ingress_rules: list[RuleOut]
    egress_rules: list[RuleOut]
    type: str
    created_at: str
    updated_at: str


class SessionOut(BaseModel):
    id: str
    project_id: str
    name: str
    description: str
    traffic_mirror_filter_id: str
    traffic_mirror_sources: list[str]
    traffic_mirror_target_id: str
    traffic_mirror_target_type: str
    virtual_network_id: int
    packet_length: int
    priority: int
    enabled: bool
    type: str
    created_at: str
    updated_at: str


class FilterAnswer(BaseModel):
    request_id: str
    traffic_mirror_filter: FilterOut


class FilterListAnswer(BaseModel):
    request_id: str
    traffic_mirror_filters: list[FilterOut]
    page_info: PageInfo


class RuleAnswer(BaseModel):
    request_id: str
    traffic_mirror_filter_rule: RuleOut


class RuleListAnswer(BaseModel):
    request_id: str
    traffic_mirror_filter_rules: list[RuleOut]
    page_info: PageInfo


class SessionAnswer(BaseModel):
    request_id: str
    traffic_mirror_session: SessionOut


class SessionListAnswer(BaseModel):
    request_id: str
    traffic_mirror_sessions: list[SessionOut]
    page_info: PageInfo


class ErrorAnswer(BaseModel):
    request_id: str
    error_msg: str
    error_code: str
