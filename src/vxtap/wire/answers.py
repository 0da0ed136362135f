"""Answer shapes of every operation: declared once, for the OpenAPI document and the client.

Typed dicts, not models: the server renders answers positionally (`vxtap.api.render`)
and the client hands the server's JSON on unchanged (`--json` prints exactly what the
server said), so neither side validates an answer again. pydantic reads the same
declarations for the OpenAPI document (`typing_extensions.TypedDict`, which pydantic
needs below Python 3.12). A key the server leaves out when it has no value is
`NotRequired[... | None]` with a `None` default, which the document shows as optional.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Generic, NotRequired, TypeAlias, TypeVar

from pydantic import Field
from typing_extensions import TypedDict

from vxtap import model

# The value of an optional key (absent from the answer when it has no value).
OptionalText: TypeAlias = Annotated[str | None, Field(default=None)]


class PageInfo(TypedDict):
    previous_marker: NotRequired[OptionalText]
    current_count: int
    next_marker: NotRequired[OptionalText]


class RuleOut(TypedDict):
    id: str
    project_id: str
    traffic_mirror_filter_id: str
    direction: model.Direction
    priority: int
    action: model.Action
    ethertype: model.EtherType
    protocol: model.Protocol
    source_cidr_block: NotRequired[OptionalText]
    destination_cidr_block: NotRequired[OptionalText]
    source_port_range: NotRequired[OptionalText]
    destination_port_range: NotRequired[OptionalText]
    description: str
    created_at: str
    updated_at: str


class FilterOut(TypedDict):
    id: str
    project_id: str
    name: str
    description: str
    ingress_rules: list[RuleOut]
    egress_rules: list[RuleOut]
    type: str
    created_at: str
    updated_at: str


class SessionOut(TypedDict):
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


class FilterAnswer(TypedDict):
    request_id: str
    traffic_mirror_filter: FilterOut


class FilterListAnswer(TypedDict):
    request_id: str
    traffic_mirror_filters: list[FilterOut]
    page_info: PageInfo


class RuleAnswer(TypedDict):
    request_id: str
    traffic_mirror_filter_rule: RuleOut


class RuleListAnswer(TypedDict):
    request_id: str
    traffic_mirror_filter_rules: list[RuleOut]
    page_info: PageInfo


class SessionAnswer(TypedDict):
    request_id: str
    traffic_mirror_session: SessionOut


class SessionListAnswer(TypedDict):
    request_id: str
    traffic_mirror_sessions: list[SessionOut]
    page_info: PageInfo


class ErrorAnswer(TypedDict):
    request_id: str
    error_msg: str
    error_code: str


class FixedIpOut(TypedDict):
    ip_address: str
    subnet_id: str


# Huawei's v1 port has a key with a colon ("binding:host_id"), so the functional
# TypedDict syntax is the only way to spell it.
PortV1Out = TypedDict(
    "PortV1Out",
    {
        "id": str,
        "name": str,
        "project_id": str,
        "tenant_id": str,
        "mac_address": str,
        "fixed_ips": list[FixedIpOut],
        "binding:host_id": str,
        "device_owner": str,
        "device_id": str,
        "network_id": str,
        "admin_state_up": bool,
        "status": str,
        "created_at": str,
        "updated_at": str,
    },
)


class PortOut(TypedDict):
    """A port in the internal API's shape."""

    id: str
    host: str
    device: str
    mac: str | None
    ipv4: list[str]
    ipv6: list[str]


class HostOut(TypedDict):
    """One host of the fleet as `GET /internal/v1/{project}/hosts` answers it."""

    host: str
    enrolment: str | None  # "api", "credentials file", or None (reported, no key)
    access_key: str | None
    enrolled_at: str | None
    agent_version: str | None
    last_contact: str | None
    desired_revision: str
    applied_revision: str | None
    sync: str  # "in sync", "behind", "failing", "no report"
    apply_error: str | None
    drift_repairs: int
    held_request: bool | None  # None: not known


class MemberOut(TypedDict):
    """A member of a target group: its number in placement tables and its health as the
    server last judged it from collector heartbeats (docs/elb.md)."""

    port_id: str
    number: int
    healthy: bool
    last_heartbeat: str | None


class TargetGroupOut(TypedDict):
    id: str
    project_id: str
    name: str
    description: str
    members: list[MemberOut]  # by number
    created_at: str
    updated_at: str


class TargetGroupAnswer(TypedDict):
    request_id: str
    target_group: TargetGroupOut


class TargetGroupListAnswer(TypedDict):
    request_id: str
    target_groups: list[TargetGroupOut]
    page_info: PageInfo


class AgentCredentialOut(TypedDict):
    ak: str
    sk: str
    project_id: str
    host: str


ItemT = TypeVar("ItemT")


@dataclass(frozen=True)
class Page(Generic[ItemT]):
    """One page of a list answer, with Huawei's `page_info` unpacked."""

    items: list[ItemT]
    previous_marker: str | None
    next_marker: str | None  # None on the last page
    current_count: int
