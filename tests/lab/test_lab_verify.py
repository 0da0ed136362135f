"""`verify` against a mirror built by hand with tc (no agent): the lab's own
machinery -- topology, security groups, nc, tcpdump, the collector, tshark
decoding, expectation checks, teardown -- tested on its own."""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import netns

from vxtap.lab import topology as topo
from vxtap.lab.lab import Lab
from vxtap.lab.runtime import LabError, LabRecord
from vxtap.lab.scenario import Scenario, get

pytestmark = pytest.mark.netns


@pytest.fixture
def lab(tmp_path: Path, make_namespace: object) -> Iterator[Lab]:
    # make_namespace: the root check; the lab makes its own namespaces.
    lines: list[str] = []
    the_lab = Lab(tmp_path / "lab", f"vxtap-lab-t{secrets.token_hex(2)}-", say=lines.append)
    try:
        yield the_lab
    finally:
        the_lab.down()
        assert not [n for n in netns.listnetns() if n.startswith(the_lab.prefix)]


def build_with_hand_mirror(lab: Lab, scenario: Scenario, *, copies: int = 1) -> None:
    """The seed's session as tc mirred to a VXLAN device on ECS-source (what
    the agent will do with nftables), `copies` times over."""
    t = lab.topology(scenario)
    lab.dir.save(
        LabRecord(
            scenario=scenario.name,
            namespace_prefix=lab.prefix,
            namespaces=[n.name for n in t.namespaces],
            ready=True,
        )
    )
    topo.build(t)
    source = t.server("ECS-source")
    vxlan = "ip link add vx0 type vxlan id 1 remote 192.168.0.164 local 192.168.0.230 dstport 4789"
    source.run(shlex.split(vxlan))
    source.run(shlex.split("sysctl -qw net.ipv6.conf.vx0.disable_ipv6=1"))  # no RS leak
    source.run(shlex.split("ip link set vx0 up"))
    source.run(shlex.split("tc qdisc add dev eth0 clsact"))
    match = (
        "match ip protocol 6 0xff match ip src 192.168.0.161/32 "
        "match ip dst 192.168.0.230/32 match ip dport 1234 0xffff"
    )
    actions = " ".join(["action mirred egress mirror dev vx0"] * copies)
    source.run(
        shlex.split(f"tc filter add dev eth0 ingress protocol ip pref 1 u32 {match} {actions}")
    )


def test_verify_passes_on_a_correct_mirror_again_and_again(lab: Lab) -> None:
    seed = get("seed")
    build_with_hand_mirror(lab, seed)
    for _ in range(2):  # each verify waits for its own tcpdump and collector
        report = lab.verify(seed)
        assert report.passed, [str(f) for f in report.failures]
        texts = [str(f) for f in report.findings]
        assert "ok   vxtap collect on ECS-target stored the same 6 mirrors as tcpdump saw" in texts


def test_verify_names_a_closed_security_group(lab: Lab) -> None:
    closed = get("seed").without_group_rule("Sg-target", 4789)
    build_with_hand_mirror(lab, closed)
    report = lab.verify(closed)
    assert not report.passed
    (failure,) = [f for f in report.failures if "payload length 6" in f.what]
    assert "the target's security group does not allow UDP 4789 from 192.168.0.230" in (
        failure.detail
    )
    assert "nothing arrived" in failure.detail
    dropped = int(failure.detail.split("groups dropped ")[1].split()[0])
    assert dropped >= 4  # handshake, two lines, FIN: all dropped at the VPC switch


def test_verify_catches_a_packet_mirrored_twice(lab: Lab) -> None:
    seed = get("seed")
    build_with_hand_mirror(lab, seed, copies=2)
    report = lab.verify(seed)
    (failure,) = [f for f in report.failures if "payload length 6" in f.what]
    assert failure.detail == "4 arrived"


def test_down_after_a_half_built_lab_removes_everything(lab: Lab) -> None:
    seed = get("seed")
    t = lab.topology(seed)
    lab.dir.save(LabRecord(scenario="seed", namespaces=[n.name for n in t.namespaces]))
    t.vpc.create(t.vpc.name)
    t.server("ECS-test").create(t.server("ECS-test").name)
    lab.down()
    assert not [n for n in netns.listnetns() if n.startswith(lab.prefix)]
    assert not lab.dir.path.exists()


def test_verify_refuses_a_lab_whose_up_did_not_finish(lab: Lab) -> None:
    lab.dir.save(LabRecord(scenario="seed"))
    with pytest.raises(LabError, match=r"not fully up .* run 'vxtap lab up seed' again"):
        lab.verify(get("seed"))
