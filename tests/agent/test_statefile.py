"""The saved desired state survives restarts and refuses to load garbage silently."""

from __future__ import annotations

from pathlib import Path

import pytest

from vxtap.agent.statefile import StateFile
from vxtap.model import DesiredState, Session


def test_round_trip_and_remove(tmp_path: Path) -> None:
    store = StateFile(tmp_path / "agent")
    assert store.load() is None
    state = DesiredState(
        host="h",
        revision="42",
        sessions=(Session(id="s", name="s", filter_id="f", target_id="t", priority=1),),
    )
    store.save(state)
    assert store.load() == state
    assert [p.name for p in store.path.parent.iterdir()] == ["desired-state.json"]
    store.remove()
    assert not store.path.parent.exists()


def test_corrupt_file_is_named(tmp_path: Path) -> None:
    store = StateFile(tmp_path)
    store.path.write_text("{not json")
    with pytest.raises(ValueError, match=r"desired-state\.json is not a saved desired state"):
        store.load()
