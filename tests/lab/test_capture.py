from __future__ import annotations

from pathlib import Path

import pytest

from vxtap.lab.capture import decode_pcap, parse_fields
from vxtap.lab.runtime import LabError
from vxtap.model import Protocol

# tshark -T fields output for VXLAN frames captured in a namespace (see FIELDS).
TSHARK = (
    "10.0.0.1\t10.0.0.2\t1\t17\t\t\t\t35887\t4789\t102\t::\t\n"
    "10.0.0.1,10.9.0.1\t10.0.0.2,10.9.0.2\t1\t17,17\t\t\t\t45397,50756\t4789,5000\t64,14\t\t\n"
    "10.0.0.1,10.9.0.1\t10.0.0.2,10.9.0.2\t7\t17,6\t37756\t1234\t6\t57293\t4789\t90\t\t\t122\n"
    "10.0.0.1\t10.0.0.2\t\t17\t\t\t\t5555\t4789\t20\t\t\n"
)


def test_parse_fields_decodes_outer_and_inner() -> None:
    v6, udp, tcp = parse_fields(TSHARK, "T")
    assert (v6.vni, v6.protocol, v6.src, v6.outer_src) == (1, None, "::", "10.0.0.1")
    assert (udp.protocol, udp.sport, udp.dport, udp.payload_length) == (
        Protocol.UDP,
        50756,
        5000,
        6,
    )
    assert (tcp.vni, tcp.protocol, tcp.src, tcp.dst, tcp.dport, tcp.payload_length) == (
        7,
        Protocol.TCP,
        "10.9.0.1",
        "10.9.0.2",
        1234,
        6,
    )
    assert tcp.outer_dst == "10.0.0.2" and tcp.target == "T"
    assert tcp.frame_length == 72  # 122 on the wire minus 50 bytes of VXLAN encapsulation
    assert udp.frame_length is None


def test_parse_fields_of_decapsulated_frames() -> None:
    (tcp,) = parse_fields(
        "10.9.0.1\t10.9.0.2\t\t6\t37756\t1234\t6\t\t\t\t\t\t72\n", "T", inner_vni=3
    )
    assert (tcp.vni, tcp.src, tcp.dport, tcp.payload_length, tcp.frame_length) == (
        3,
        "10.9.0.1",
        1234,
        6,
        72,
    )


def test_unreadable_pcap_is_a_lab_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture file at all")
    with pytest.raises(LabError, match=f"tshark could not read {bad}"):
        decode_pcap(bad, "T")
    assert decode_pcap(tmp_path / "missing.pcap", "T") == []
