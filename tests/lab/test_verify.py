from __future__ import annotations

from dataclasses import replace

from vxtap.lab.scenario import broken, get
from vxtap.lab.verify import Delivery, Finding, Mirrored, check
from vxtap.model import Protocol

SEED = get("seed")


def tcp(sport: int, payload: int, *, vni: int = 1, src: str = "192.168.0.161") -> Mirrored:
    dst = "192.168.0.230" if src == "192.168.0.161" else "192.168.0.161"
    return Mirrored(
        target="ECS-target",
        outer_src="192.168.0.230",
        outer_dst="192.168.0.164",
        vni=vni,
        protocol=Protocol.TCP,
        src=src,
        dst=dst,
        sport=sport if src == "192.168.0.161" else 1234,
        dport=1234 if src == "192.168.0.161" else sport,
        payload_length=payload,
    )


GOOD = [tcp(40000, 0), tcp(40000, 0), tcp(40000, 6), tcp(40000, 6), tcp(40000, 0)]
DELIVERED = [Delivery(SEED.traffic[0], "hello\n12345\n")]


def failures(findings: list[Finding]) -> list[str]:
    return [str(f) for f in findings if not f.ok]


def test_seed_capture_passes() -> None:
    assert failures(check(SEED, {"ECS-target": GOOD}, DELIVERED)) == []


def test_missing_data_segment_fails_naming_the_expectation() -> None:
    (failure,) = failures(check(SEED, {"ECS-target": GOOD[:3]}, DELIVERED))
    assert "payload length 6" in failure and "must arrive 2 times" in failure
    assert "1 arrived" in failure


def test_duplicate_mirror_fails() -> None:
    assert failures(check(SEED, {"ECS-target": [*GOOD, tcp(40000, 6)]}, DELIVERED))


def test_reply_from_source_is_forbidden() -> None:
    (failure,) = failures(
        check(SEED, {"ECS-target": [*GOOD, tcp(40000, 0, src="192.168.0.230")]}, DELIVERED)
    )
    assert "must not arrive" in failure and "outbound" in failure


def test_stray_vni_is_unexpected() -> None:
    (failure,) = failures(check(SEED, {"ECS-target": [*GOOD, tcp(40000, 0, vni=9)]}, DELIVERED))
    assert "nothing unexpected arrives at ECS-target" in failure


def test_closed_security_group_is_named_with_its_drop_count() -> None:
    closed = SEED.without_group_rule("Sg-target", 4789)
    found = failures(check(closed, {}, DELIVERED, {"ECS-target": 5}))
    assert any(
        "the target's security group does not allow UDP 4789 from 192.168.0.230" in f
        and "dropped 5 packets" in f
        and "nothing arrived" in f
        for f in found
    ), found


def test_disabled_session_is_named() -> None:
    off = SEED.with_session("seed-session", enabled=False)
    found = failures(check(off, {}, DELIVERED))
    assert any("session seed-session is disabled" in f for f in found), found


def test_wrong_rule_is_explained_by_the_evaluator() -> None:
    wrong = broken(SEED, ["wrong-rule"])
    found = failures(check(wrong, {}, DELIVERED))
    assert any(
        "rule 1 accept: destination port 1234 is not in 4321-4321" in f and "nothing arrived" in f
        for f in found
    ), found


def test_production_damage_fails() -> None:
    bad = [replace(DELIVERED[0], received="hello\n")]
    (failure,) = failures(check(SEED, {"ECS-target": GOOD}, bad))
    assert "ECS-source received what ECS-test sent" in failure
