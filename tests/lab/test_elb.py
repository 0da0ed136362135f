"""`vxtap lab run elb` end to end: a session to a group of three collectors, 256 flows,
and `--break collector-down` (a collector killed mid-run and started again)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import netns

from vxtap.lab.flows import FAILOVER_AIM_S
from vxtap.lab.lab import Lab, Report
from vxtap.lab.scenario import get

pytestmark = pytest.mark.netns


@pytest.fixture
def lab(tmp_path: Path, make_namespace: object) -> Iterator[Lab]:
    the_lab = Lab(tmp_path / "lab", f"vxtap-lab-t{secrets.token_hex(2)}-", say=print)
    try:
        yield the_lab
    finally:
        the_lab.down()
        assert not [n for n in netns.listnetns() if n.startswith(the_lab.prefix)]


ONCE_EACH = "every packet of those flows was mirrored once, to one member"


def failed(report: Report) -> list[str]:
    return [str(f) for f in report.failures]


def test_elb_places_every_flow_on_one_collector(lab: Lab) -> None:
    report = lab.run(get("elb"))
    assert report.passed, failed(report)
    names = [f.what for f in report.findings]
    assert "every flow's packets, both directions, reached exactly one member" in names
    assert ONCE_EACH in names
    assert sum("vxtap session stats counts for" in n for n in names) == 3


def test_a_stopped_collectors_flows_move_and_come_back(lab: Lab) -> None:
    report = lab.run(get("elb"), ["collector-down"])
    assert report.passed, failed(report)
    assert 0 < report.measured["failover_s"] <= FAILOVER_AIM_S
    names = " / ".join(f.what for f in report.findings)
    assert "no other flow changed member" in names
    assert "after ECS-target2's collector was back, its flows returned to it" in names
