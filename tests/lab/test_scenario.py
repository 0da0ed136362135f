from __future__ import annotations

import pytest

from vxtap.lab.scenario import SCENARIOS, Scenario, broken, get
from vxtap.model import Action, Direction, EtherType, Protocol, TargetKind


def test_seed_is_the_users_document() -> None:
    seed = get("seed")
    addresses = {s.name: s.ipv4 for s in seed.servers}
    assert addresses == {
        "ECS-test": "192.168.0.161",
        "ECS-source": "192.168.0.230",
        "ECS-target": "192.168.0.164",
    }
    assert seed.server("ECS-target").mac == "fa:16:3e:7e:d6:7a"
    (flt,) = seed.filters
    (rule,) = flt.rules
    assert rule.direction is Direction.INGRESS
    assert (rule.priority, rule.action, rule.ethertype, rule.protocol) == (
        1,
        Action.ACCEPT,
        EtherType.IPV4,
        Protocol.TCP,
    )
    assert str(rule.source_cidr) == "192.168.0.161/32"
    assert str(rule.destination_cidr) == "192.168.0.230/32"
    assert rule.source_ports is None
    assert str(rule.destination_ports) == "1234-1234"
    (session,) = seed.sessions
    assert session.vni == 1
    assert session.sources == ("ECS-source/eth0",)
    assert session.target_id == "ECS-target/eth0"
    assert session.enabled
    (talk,) = seed.traffic
    assert (talk.client, talk.server, talk.port, talk.lines) == (
        "ECS-test",
        "ECS-source",
        1234,
        ("hello", "12345"),
    )


def test_all_five_scenarios_exist() -> None:
    assert set(SCENARIOS) == {"seed", "two-targets", "reject-rules", "multi-session", "elb"}


def test_unknown_scenario_names_the_known_ones() -> None:
    with pytest.raises(
        KeyError, match="known: elb, multi-session, reject-rules, seed, two-targets"
    ):
        get("nope")


def test_inconsistent_scenario_is_refused_naming_the_problem() -> None:
    seed = get("seed")
    with pytest.raises(ValueError, match="names unknown port ECS-nowhere/eth0"):
        Scenario(
            **{
                **seed.__dict__,
                "sessions": (
                    seed.sessions[0].model_copy(update={"target_id": "ECS-nowhere/eth0"}),
                ),
            }
        )


def test_breaking_helpers_change_only_what_they_name() -> None:
    seed = get("seed")
    assert not seed.with_session("seed-session", enabled=False).sessions[0].enabled
    wrong = seed.with_rule("seed-in-1", destination_ports={"start": 4321, "end": 4321})
    assert str(wrong.filters[0].rules[0].destination_ports) == "4321-4321"
    closed = seed.without_group_rule("Sg-target", 4789)
    assert len(closed.group("Sg-target").rules) == len(seed.group("Sg-target").rules) - 1
    assert closed.group("Sg-source") == seed.group("Sg-source")


def test_breaks_apply_to_every_scenario_and_unknown_ones_are_named() -> None:
    for scenario in SCENARIOS.values():
        assert not any(s.enabled for s in broken(scenario, ["disabled"]).sessions)
        closed = broken(scenario, ["no-4789"])
        for name in closed.targets:
            for group in closed.server(name).groups:
                assert not any(r.ports and 4789 in r.ports for r in closed.group(group).rules)
    wrong = broken(get("seed"), ["wrong-rule"])
    assert str(wrong.filters[0].rules[0].destination_ports) == "4321-4321"
    with pytest.raises(
        KeyError, match="unknown break 'nope'; known: collector-down, disabled, no-4789, wrong-rule"
    ):
        broken(get("seed"), ["nope"])


def test_elb_mirrors_to_a_group_of_three_collectors_with_hundreds_of_flows() -> None:
    elb = get("elb")
    (session,) = elb.sessions
    assert session.target_kind is TargetKind.ELB
    assert elb.targets == ("ECS-target", "ECS-target2", "ECS-target3")
    assert sum(2 * load.streams for load in elb.loads) == 256
    assert {load.protocol for load in elb.loads} == {Protocol.TCP, Protocol.UDP}
    assert elb.outage is None
    assert broken(elb, ["collector-down"]).outage == "ECS-target2"
    with pytest.raises(ValueError, match="has no target group: collector-down needs one"):
        broken(get("seed"), ["collector-down"])


def test_a_session_naming_an_unknown_target_group_is_refused() -> None:
    elb = get("elb")
    lost = elb.sessions[0].model_copy(update={"target_id": "nowhere"})
    with pytest.raises(ValueError, match="names unknown target group nowhere"):
        Scenario(**{**elb.__dict__, "sessions": (lost,)})
