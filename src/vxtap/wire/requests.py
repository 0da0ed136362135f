"""Request bodies of every operation, as the server validates and documents them."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from vxtap import model
from vxtap.wire.fields import (
    ActionIn,
    Cidr,
    CounterKey,
    Description,
    Device,
    DirectionIn,
    EtherTypeIn,
    FlexBool,
    GroupPorts,
    Host,
    Identifier,
    IPv4List,
    IPv6List,
    Mac,
    MemberCounterKey,
    Name,
    PacketLength,
    PortRangeText,
    ProtocolIn,
    Revision,
    RulePriority,
    SessionPriority,
    Sources,
    SourceType,
    SourceTypeIn,
    TargetTypeIn,
    Vni,
)


class RequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- filters ----------------------------------------------------------------------------


class CreateFilterOption(RequestBody):
    name: Name
    description: Description = ""


class CreateFilterRequest(RequestBody):
    traffic_mirror_filter: CreateFilterOption


class UpdateFilterOption(RequestBody):
    name: Name | None = None
    description: Description | None = None


class UpdateFilterRequest(RequestBody):
    traffic_mirror_filter: UpdateFilterOption


# -- rules ------------------------------------------------------------------------------


class CreateRuleOption(RequestBody):
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


class CreateRuleRequest(RequestBody):
    traffic_mirror_filter_rule: CreateRuleOption


class UpdateRuleOption(RequestBody):
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


class UpdateRuleRequest(RequestBody):
    traffic_mirror_filter_rule: UpdateRuleOption


# -- sessions ---------------------------------------------------------------------------


class CreateSessionOption(RequestBody):
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


class CreateSessionRequest(RequestBody):
    traffic_mirror_session: CreateSessionOption


class UpdateSessionOption(RequestBody):
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


class UpdateSessionRequest(RequestBody):
    traffic_mirror_session: UpdateSessionOption


class SourcesOption(RequestBody):
    traffic_mirror_sources: Sources


class SourcesRequest(RequestBody):
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


# -- target groups (internal API; docs/elb.md) -------------------------------------------


class CreateTargetGroupOption(RequestBody):
    name: Name
    description: Description = ""
    ports: GroupPorts = Field(default_factory=list)


class CreateTargetGroupRequest(RequestBody):
    target_group: CreateTargetGroupOption


class UpdateTargetGroupOption(RequestBody):
    name: Name | None = None
    description: Description | None = None


class UpdateTargetGroupRequest(RequestBody):
    target_group: UpdateTargetGroupOption


class MembersOption(RequestBody):
    ports: Annotated[GroupPorts, Field(min_length=1)]


class MembersRequest(RequestBody):
    """The ports that join (add-members) or leave (remove-members) a group."""

    target_group: MembersOption


# -- ports (internal API) -------------------------------------------------------------


class HostPortOption(RequestBody):
    device: Device
    mac: Mac = None
    ipv4: IPv4List = Field(default_factory=list)
    ipv6: IPv6List = Field(default_factory=list)


class RegisterPortsRequest(RequestBody):
    ports: Annotated[list[HostPortOption], Field(max_length=1024)]


class CreatePortOption(HostPortOption):
    host: Host


class CreatePortRequest(RequestBody):
    port: CreatePortOption


class CountersRequest(RequestBody):
    sessions: dict[CounterKey, model.Counter] = Field(default_factory=dict)
    rules: dict[CounterKey, model.Counter] = Field(default_factory=dict)
    # `elb` sessions: the copies sent to each member, "<session id>/<member port id>".
    members: dict[MemberCounterKey, model.Counter] = Field(default_factory=dict)


class CollectorHeartbeatRequest(RequestBody):
    """The devices (of the host's ports) the host's collector receives on; absent or
    null: all of the host's ports (docs/elb.md, "Health")."""

    devices: Annotated[list[Device], Field(min_length=1, max_length=1024)] | None = None


# -- the fleet: enrolment and what agents report about themselves ----------------------


class EnrolHostRequest(RequestBody):
    host: Host


class HostStatusRequest(RequestBody):
    """What an agent applied: kept as its host's status (`vxtap host list`)."""

    agent_version: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00]+$")]
    applied_revision: Revision | None = None
    # The agent's last apply error, None once an apply succeeded; stored cut to 1,024.
    apply_error: Annotated[str, Field(max_length=4096, pattern=r"^[^\x00]*$")] | None = None
    drift_repairs: model.CounterValue = 0
