"""Every scenario end to end with the real programs: `vxtap server`, agents,
the CLI, `vxtap collect`; then each broken on purpose, and `verify` must say
why it fails."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import netns

from vxtap.lab.lab import Lab, Report
from vxtap.lab.scenario import SCENARIOS, get

pytestmark = pytest.mark.netns


@pytest.fixture
def lab(tmp_path: Path, make_namespace: object) -> Iterator[Lab]:
    # make_namespace: the root check; the lab makes its own namespaces.
    the_lab = Lab(tmp_path / "lab", f"vxtap-lab-t{secrets.token_hex(2)}-", say=lambda _: None)
    try:
        yield the_lab
    finally:
        the_lab.down()
        assert not [n for n in netns.listnetns() if n.startswith(the_lab.prefix)]


def failed(report: Report) -> list[str]:
    return [str(f) for f in report.failures]


def host_state() -> tuple[str, str, str]:
    """What the lab must never change in the host's own namespace."""
    ruleset = subprocess.run(
        ["nft", "list", "ruleset"], capture_output=True, text=True, check=True
    ).stdout
    bridge = Path("/proc/sys/net/bridge")
    iptables, ip6tables = (
        (bridge / f"bridge-nf-call-{family}").read_text() for family in ("iptables", "ip6tables")
    )
    return ruleset, iptables, ip6tables


@pytest.mark.parametrize("name", sorted(set(SCENARIOS) - {"elb"}))  # elb: test_elb.py
def test_scenario_passes(lab: Lab, name: str) -> None:
    before = host_state()
    report = lab.run(get(name))
    assert report.passed, failed(report)
    assert not lab.dir.path.exists()
    assert host_state() == before


def test_wrong_rule_fails_and_says_the_rule_does_not_match(lab: Lab) -> None:
    report = lab.run(get("seed"), ["wrong-rule"])
    (failure,) = failed(report)
    assert "payload length 6, vni 1 must arrive 2 times" in failure
    assert "rule 1 accept: destination port 1234 is not in 4321-4321" in failure
    assert failure.endswith("nothing arrived")


def test_security_group_without_4789_fails_and_says_so(lab: Lab) -> None:
    report = lab.run(get("seed"), ["no-4789"])
    (failure,) = failed(report)
    assert (
        "the target's security group does not allow UDP 4789 from 192.168.0.230 "
        "(ECS-target's groups dropped " in failure
    )
    assert failure.endswith("nothing arrived")


def test_disabled_session_fails_and_says_so(lab: Lab) -> None:
    report = lab.run(get("seed"), ["disabled"])
    (failure,) = failed(report)
    assert "session seed-session is disabled" in failure
    assert failure.endswith("nothing arrived")


REASON = {
    "no-4789": "security group does not allow UDP 4789 from 192.168.0.230",
    "disabled": "is disabled",
    "wrong-rule": "is not in 4321-4321",
}


@pytest.mark.parametrize(
    ("name", "broken"),
    [("two-targets", "no-4789"), ("reject-rules", "disabled"), ("multi-session", "wrong-rule")],
)
def test_other_scenarios_broken_fail_with_the_reason(lab: Lab, name: str, broken: str) -> None:
    report = lab.run(get(name), [broken])
    missing = [f for f in report.failures if "must arrive" in f.what]
    assert missing, failed(report)
    for failure in missing:
        assert REASON[broken] in failure.detail, str(failure)
    # production traffic is never what fails
    assert all(f.ok for f in report.findings if "received" in f.what), failed(report)
