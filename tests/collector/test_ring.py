"""--listen parsing and the socket filter program (pure parts of the receiver)."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from vxtap.cli.collect import parse_size
from vxtap.collector.ring import Listen, filter_program, parse_listen


def test_listen_forms() -> None:
    assert parse_listen("*:4789") == Listen(4789)
    assert parse_listen(":4790") == Listen(4790)
    assert parse_listen("0.0.0.0:4789") == Listen(4789, None, None, socket.AF_INET)
    assert parse_listen("[::]:4789") == Listen(4789, None, None, socket.AF_INET6)
    assert parse_listen("10.0.0.2") == Listen(4789, ipaddress.ip_address("10.0.0.2"))
    assert parse_listen("[fd00::2]:5000") == Listen(5000, ipaddress.ip_address("fd00::2"))
    assert parse_listen("fd00::2") == Listen(4789, ipaddress.ip_address("fd00::2"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.0.0:4789", "is not an IP address"),
        ("*:0", "outside 1-65535"),
        ("*:http", "is not a number"),
        ("fd00::zz:4789", "write an IPv6 address as [ADDR]:PORT"),
        ("[fd00::2", "expected [IPv6]:PORT"),
    ],
)
def test_bad_listen_is_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        parse_listen(text)


def test_filter_program_shape() -> None:
    any_family = filter_program(Listen(4789))
    only_v4 = filter_program(Listen(4789, ipaddress.ip_address("10.0.0.2")))
    only_v6 = filter_program(Listen(4789, ipaddress.ip_address("fd00::2")))
    for program in (any_family, only_v4, only_v6):
        assert len(program) % 8 == 0 and 0 < len(program) // 8 < 64
        assert program[-8:] == b"\x06\x00\x00\x00\x00\x00\x00\x00"  # ret #0: drop
    assert len(only_v4) == len(any_family) + 16  # one address compare
    assert len(only_v6) == len(any_family) + 64  # four 32-bit compares


def test_sizes() -> None:
    assert parse_size("1000") == 1000
    assert parse_size("500k") == 500 * 1024
    assert parse_size("100M") == 100 << 20
    assert parse_size("2GiB") == 2 << 30
    with pytest.raises(ValueError, match="is not a size"):
        parse_size("lots")
