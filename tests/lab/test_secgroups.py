from __future__ import annotations

from vxtap.lab import secgroups
from vxtap.lab.scenario import get
from vxtap.model import Protocol


def test_link_local_is_the_seeds() -> None:
    # The seed's ifconfig shows this address for fa:16:3e:7e:d6:7a.
    assert secgroups.link_local("fa:16:3e:7e:d6:7a") == "fe80::f816:3eff:fe7e:d67a"


def test_rendered_groups_follow_the_seed_tables() -> None:
    text = secgroups.render(get("seed"))
    assert "tcp dport 22 accept" in text and "tcp dport 3389 accept" in text
    assert 'ip saddr 192.168.0.161/32 meta l4proto 6 tcp dport 1234 accept comment "Sg-source' in (
        text
    )
    assert 'ip saddr 192.168.0.230/32 meta l4proto 17 udp dport 4789 accept comment "Sg-target' in (
        text
    )
    assert text.count("ct state established,related accept") == 3
    assert 'counter name "dropped_ecs_target" drop' in text


def test_allowing_rule_explains_drops() -> None:
    seed = get("seed")
    target = seed.server("ECS-target")
    assert secgroups.allowing_rule(seed, target, Protocol.UDP, 4789, "192.168.0.230") is not None
    assert secgroups.allowing_rule(seed, target, Protocol.UDP, 4789, "192.168.0.161") is None
    closed = seed.without_group_rule("Sg-target", 4789)
    assert secgroups.allowing_rule(closed, target, Protocol.UDP, 4789, "192.168.0.230") is None
    # intra-group: the target may talk to itself
    assert secgroups.allowing_rule(seed, target, Protocol.UDP, 9, "192.168.0.164") is not None


def test_summary_lists_what_a_servers_groups_let_in() -> None:
    seed = get("seed")
    line = secgroups.summary(seed, seed.server("ECS-target"))
    assert line.startswith("ECS-target 192.168.0.164 fa:16:3e:7e:d6:7a [Sg-target] in: TCP 22, ")
    assert line.endswith("UDP 4789 from 192.168.0.230/32; out: all")
