"""The one table from refusal type to HTTP status and Huawei code (docs/control-plane.md)."""

from __future__ import annotations

from vxtap.api import errors
from vxtap.store import errors as store


def every_subclass(root: type[Exception]) -> list[type[Exception]]:
    found = [root]
    for kind in root.__subclasses__():
        found.extend(every_subclass(kind))
    return found


def test_every_refusal_type_has_its_own_entry() -> None:
    """A new kind of refusal must be declared, not answered as its parent by accident."""
    kinds = every_subclass(store.StoreError)[1:] + every_subclass(errors.Refusal)[1:]
    assert [k.__name__ for k in kinds if k not in errors.ANSWERS] == []


def test_conflict_kinds_answer_409_with_their_documented_codes() -> None:
    assert {
        kind.__name__: errors.status_and_code(kind("x")) for kind in every_subclass(store.Conflict)
    } == {
        "Conflict": (409, "VPC.2900"),
        "InUse": (409, "VPC.2901"),
        "DuplicatePriority": (409, "VPC.2902"),
        "QuotaExceeded": (409, "VPC.2903"),
        "AlreadyExists": (409, "VPC.2904"),
        "ConcurrentChange": (409, "VPC.2905"),
    }


def test_the_answer_carries_the_message_status_and_code() -> None:
    answer = errors.refusal_response(store.NotFound("'f1': no such mirror filter"))
    assert answer.status_code == 404
    assert answer.body == (
        b'{"request_id":"","error_msg":"\'f1\': no such mirror filter","error_code":"VPC.0003"}'
    )
