"""List queries per resource: which keys a list accepts and how each value is parsed.

Repeating a key means "any of these values"; keys a list does not know are ignored,
as Huawei does. `limit` and `marker` page every list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from vxtap import model
from vxtap.wire import fields

QueryParser = Callable[[str], Any]


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


FILTER_QUERY: dict[str, QueryParser] = {
    "id": _text,
    "name": _text,
    "description": _text,
    "created_at": _time,
    "updated_at": _time,
}
TARGET_GROUP_QUERY: dict[str, QueryParser] = {
    "id": _text,
    "name": _text,
}
RULE_QUERY: dict[str, QueryParser] = {
    "id": _text,
    "description": _text,
    "traffic_mirror_filter_id": _text,
    "direction": fields.canonical(model.Direction),
    "protocol": fields.canonical(model.Protocol),
    "ethertype": fields.canonical(model.EtherType),
    "source_cidr_block": _required(fields.parse_cidr),
    "destination_cidr_block": _required(fields.parse_cidr),
    "source_port_range": _required(fields.parse_port_range),
    "destination_port_range": _required(fields.parse_port_range),
    "action": fields.canonical(model.Action),
    "priority": fields.integer_parser(1, 65535),
}
SESSION_QUERY: dict[str, QueryParser] = {
    "id": _text,
    "name": _text,
    "description": _text,
    "traffic_mirror_filter_id": _text,
    "traffic_mirror_target_id": _text,
    "traffic_mirror_target_type": _text,
    "virtual_network_id": fields.integer_parser(0, 16_777_215),
    "packet_length": fields.integer_parser(1, 1460),
    "priority": fields.integer_parser(1, 32766),
    "enabled": fields.parse_boolean,
    "type": _text,
    "created_at": _time,
    "updated_at": _time,
}
PORT_QUERY: dict[str, QueryParser] = {
    "id": _text,
    "name": _text,
    "mac_address": _text,
    "binding:host_id": _text,
}
PAGING_QUERY: dict[str, QueryParser] = {
    "limit": fields.integer_parser(0, model.MAX_PAGE_SIZE),
    "marker": _text,
}


def parse_query(
    pairs: Iterable[tuple[str, str]], parsers: Mapping[str, QueryParser]
) -> tuple[dict[str, list[Any]], int | None, str | None]:
    """(where: key -> any of the values, limit, marker) from the query's (key, value) pairs;
    QueryError for a value its parser refuses."""
    where: dict[str, list[Any]] = {}
    limit: int | None = None
    marker: str | None = None
    for key, text in pairs:
        try:
            if key == "limit":
                limit = PAGING_QUERY["limit"](text)
            elif key == "marker":
                marker = text or None
            elif key in parsers:
                where.setdefault(key, []).append(parsers[key](text))
        except ValueError as exc:
            raise QueryError(f"query parameter {key}: {exc}") from None
    return where, limit, marker
