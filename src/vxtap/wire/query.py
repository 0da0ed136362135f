"""List queries per resource: which keys a list accepts, how each value is parsed, and
the domain's name for each key.

Repeating a key means "any of these values"; keys a list does not know are ignored,
as Huawei does. `limit` and `marker` page every list. `parse_query` answers the
filters under the domain's names (those of `store.*Spec` and `model`), so the stores
never see Huawei's names: this module is the one place they are renamed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vxtap import model
from vxtap.wire import fields

QueryParser = Callable[[str], Any]


@dataclass(frozen=True, slots=True)
class QueryField:
    """One key of a list's query: the domain's name for it and its value's parser."""

    name: str
    parse: QueryParser


class QueryError(ValueError):
    """A query value that its parser refused; the message names the parameter."""


def _time(text: str) -> datetime:
    try:
        return datetime.strptime(text, fields.TIME_FORMAT)
    except ValueError:
        raise ValueError(f"must be a UTC time like 2024-09-10T09:54:28Z, got {text!r}") from None


def _required(parse: Callable[[Any], Any]) -> QueryParser:
    def checked(text: str) -> Any:
        value = parse(text)
        if value is None:
            raise ValueError(f"must not be empty, got {text!r}")
        return value

    return checked


def _text(text: str) -> str:
    if "\x00" in text:
        raise ValueError("must not contain NUL")
    return text


FILTER_QUERY: dict[str, QueryField] = {
    "id": QueryField("id", _text),
    "name": QueryField("name", _text),
    "description": QueryField("description", _text),
    "created_at": QueryField("created_at", _time),
    "updated_at": QueryField("updated_at", _time),
}
TARGET_GROUP_QUERY: dict[str, QueryField] = {
    "id": QueryField("id", _text),
    "name": QueryField("name", _text),
}
RULE_QUERY: dict[str, QueryField] = {
    "id": QueryField("id", _text),
    "description": QueryField("description", _text),
    "traffic_mirror_filter_id": QueryField("filter_id", _text),
    "direction": QueryField("direction", fields.canonical(model.Direction)),
    "protocol": QueryField("protocol", fields.canonical(model.Protocol)),
    "ethertype": QueryField("ethertype", fields.canonical(model.EtherType)),
    "source_cidr_block": QueryField("source_cidr", _required(fields.parse_cidr)),
    "destination_cidr_block": QueryField("destination_cidr", _required(fields.parse_cidr)),
    "source_port_range": QueryField("source_ports", _required(fields.parse_port_range)),
    "destination_port_range": QueryField("destination_ports", _required(fields.parse_port_range)),
    "action": QueryField("action", fields.canonical(model.Action)),
    "priority": QueryField("priority", fields.integer_parser(1, 65535)),
}
SESSION_QUERY: dict[str, QueryField] = {
    "id": QueryField("id", _text),
    "name": QueryField("name", _text),
    "description": QueryField("description", _text),
    "traffic_mirror_filter_id": QueryField("filter_id", _text),
    "traffic_mirror_target_id": QueryField("target_id", _text),
    "traffic_mirror_target_type": QueryField("target_kind", _text),
    "virtual_network_id": QueryField("vni", fields.integer_parser(0, 16_777_215)),
    "packet_length": QueryField("packet_length", fields.integer_parser(1, 1460)),
    "priority": QueryField("priority", fields.integer_parser(1, 32766)),
    "enabled": QueryField("enabled", fields.parse_boolean),
    "type": QueryField("source_kind", _text),
    "created_at": QueryField("created_at", _time),
    "updated_at": QueryField("updated_at", _time),
}
PORT_QUERY: dict[str, QueryField] = {
    "id": QueryField("id", _text),
    "name": QueryField("device", _text),
    "mac_address": QueryField("mac", _text),
    "binding:host_id": QueryField("host", _text),
}
PAGING_QUERY: dict[str, QueryField] = {
    "limit": QueryField("limit", fields.integer_parser(0, model.MAX_PAGE_SIZE)),
    "marker": QueryField("marker", _text),
}


def parse_query(
    pairs: Iterable[tuple[str, str]], keys: Mapping[str, QueryField]
) -> tuple[dict[str, list[Any]], int | None, str | None]:
    """(where: domain name -> any of the values, limit, marker) from the query's (key,
    value) pairs; QueryError, naming the key as sent, for a value its parser refuses."""
    where: dict[str, list[Any]] = {}
    limit: int | None = None
    marker: str | None = None
    for key, text in pairs:
        try:
            if key == "limit":
                limit = PAGING_QUERY["limit"].parse(text)
            elif key == "marker":
                marker = text or None
            elif (known := keys.get(key)) is not None:
                where.setdefault(known.name, []).append(known.parse(text))
        except ValueError as exc:
            raise QueryError(f"query parameter {key}: {exc}") from None
    return where, limit, marker
