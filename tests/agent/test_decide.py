"""The agent's pure decisions."""

from __future__ import annotations

import pytest

from vxtap.agent import decide
from vxtap.model import DesiredState, Interface


def state(revision: str) -> DesiredState:
    return DesiredState(host="h", revision=revision)


def test_start_leaves_a_kernel_that_matches_the_saved_state_alone() -> None:
    assert decide.on_start(state("7"), []) is None
    assert decide.on_start(None, None) is None


def test_start_repairs_a_kernel_that_differs_from_the_saved_state() -> None:
    action = decide.on_start(state("7"), ["table netdev vxtap missing"])
    assert action is not None
    assert action.state.revision == "7"
    assert "table netdev vxtap missing" in action.reason


def test_fetch_applies_only_a_new_revision() -> None:
    assert decide.on_fetch(state("1"), state("1")) is None
    first = decide.on_fetch(None, state("1"))
    assert first is not None and first.reason == "revision none -> 1"
    later = decide.on_fetch(state("1"), state("2"))
    assert later is not None and later.state.revision == "2"


def test_drift_is_repaired_with_the_applied_state() -> None:
    assert decide.on_drift(state("3"), []) is None
    assert decide.on_drift(None, ["device gone"]) is None
    action = decide.on_drift(state("3"), ["device vxtap0 missing", "chain x missing"])
    assert action is not None and action.state.revision == "3"
    assert action.reason == "repairing drift: device vxtap0 missing; chain x missing"


def test_interfaces_are_registered_when_new_or_changed() -> None:
    eth0 = Interface(device="eth0", ipv4=("10.0.0.1",))
    assert decide.interfaces_to_register(None, ()) == ()
    assert decide.interfaces_to_register(None, (eth0,)) == (eth0,)
    assert decide.interfaces_to_register((eth0,), (eth0,)) is None
    moved = Interface(device="eth0", ipv4=("10.0.0.2",))
    assert decide.interfaces_to_register((eth0,), (moved,)) == (moved,)


def test_reachability_is_logged_on_change_only() -> None:
    assert decide.reachability_news(None, None, True, "") == "server reachable"
    assert decide.reachability_news(True, None, True, "") is None
    down = decide.reachability_news(True, None, False, "connection refused")
    assert down is not None and "connection refused" in down and "last known state" in down
    assert decide.reachability_news(False, "x", False, "x") is None
    # Failing in another way is news: the operator sees what is wrong now.
    assert decide.reachability_news(False, "x", False, "y") is not None
    assert decide.reachability_news(False, "x", True, "") == "server reachable again"


def test_timer() -> None:
    timer = decide.Timer(0.5)
    assert timer.due(100.0) and timer.remaining(100.0) == 0.0
    timer.fired(100.0)
    assert not timer.due(100.4) and abs(timer.remaining(100.1) - 0.4) < 1e-9
    assert timer.due(100.5)


def test_a_failed_revision_waits_for_the_retry_window() -> None:
    failed = ("7", 10.0)
    assert decide.retry_blocked(failed, "7", 10.0 + decide.APPLY_RETRY_S / 2)
    assert not decide.retry_blocked(failed, "7", 10.0 + decide.APPLY_RETRY_S)
    assert not decide.retry_blocked(failed, "8", 10.5)  # another revision: at once
    assert not decide.retry_blocked(None, "7", 10.5)
    assert decide.retry_wait(failed, 10.5) == decide.APPLY_RETRY_S - 0.5
    assert decide.retry_wait(failed, 99.0) == 0.0


def test_a_timer_can_be_made_due_sooner() -> None:
    timer = decide.Timer(10.0)
    timer.fired(100.0)
    assert not timer.due(100.2)
    timer.fire_in(100.0, decide.SETTLE_CHECK_S)
    assert timer.remaining(100.0) == pytest.approx(decide.SETTLE_CHECK_S)
    assert timer.due(100.0 + decide.SETTLE_CHECK_S + 1e-9)


def test_the_first_request_without_a_tag_is_answered_at_once() -> None:
    assert decide.desired_state_request(None, 0, 300.0) == decide.DesiredStateRequest(None, None)


def test_a_known_tag_is_sent_and_the_request_held() -> None:
    assert decide.desired_state_request('"r1"', 0, 300.0) == decide.DesiredStateRequest(
        '"r1"', 300.0
    )


def test_after_a_failure_the_tag_is_sent_but_the_request_not_held() -> None:
    # A held request proves the server is back only when it returns.
    assert decide.desired_state_request('"r1"', 1, 300.0) == decide.DesiredStateRequest(
        '"r1"', None
    )


def test_the_answer_s_etag_replaces_the_tag_and_a_missing_one_keeps_it() -> None:
    assert decide.tag_after_answer('"r1"', '"r2"') == '"r2"'
    assert decide.tag_after_answer('"r1"', None) == '"r1"'
    assert decide.tag_after_answer(None, None) is None


def test_after_a_restart_the_saved_revision_stands_in_for_the_tag() -> None:
    assert decide.tag_after_restart(state("r7")) == "r7"
    assert decide.tag_after_restart(None) is None
