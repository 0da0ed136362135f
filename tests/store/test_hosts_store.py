"""`vxtap.store.hosts.host_statuses` with the content revisions a server remembers."""

from __future__ import annotations

import pytest

from vxtap.model import TargetKind
from vxtap.store import filters as filter_store
from vxtap.store import hosts
from vxtap.store import ports as port_store
from vxtap.store import sessions as session_store
from vxtap.store.db import Store
from vxtap.store.filters import FilterSpec
from vxtap.store.ports import PortSpec
from vxtap.store.sessions import SessionChange, SessionSpec

PROJECT = "p1"


def two_hosts(store: Store) -> str:
    """Hosts web-1 and web-2, each the source of a session; web-1's session id."""
    with store.write() as db:
        target = port_store.create_port(
            db, PROJECT, "capture", PortSpec(device="eth0", ipv4=("10.9.0.1",))
        )
        flt = filter_store.create_filter(db, PROJECT, FilterSpec(name="f"))
        sessions = []
        for i, host in enumerate(("web-1", "web-2")):
            [port] = port_store.register_host_ports(
                db, PROJECT, host, [PortSpec(device="eth0", ipv4=(f"10.0.0.{i + 1}",))]
            )
            sessions.append(
                session_store.create_session(
                    db,
                    PROJECT,
                    SessionSpec(
                        name=f"s{i}",
                        filter_id=flt.id,
                        sources=(port.id,),
                        target_id=target.id,
                        target_kind=TargetKind.ENI,
                        vni=i + 1,
                        priority=1,
                    ),
                ).id
            )
            hosts.enrol_host(db, PROJECT, host, f"AK{i}")
    return sessions[0]


def test_remembered_content_revisions_spare_the_builds_and_change_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = two_hosts(store)
    builds: list[str] = []
    build = hosts.desired_state

    def counted(db: object, project: str, host: str) -> dict[str, object]:
        builds.append(host)
        return build(db, project, host)  # type: ignore[arg-type]

    monkeypatch.setattr(hosts, "desired_state", counted)
    built: hosts.StateRevisions = {}
    with store.read() as db:
        cold = hosts.host_statuses(db, PROJECT, {}, built=built)
        assert sorted(builds) == ["web-1", "web-2"]
        builds.clear()
        assert hosts.host_statuses(db, PROJECT, {}, built=built) == cold
        assert hosts.host_statuses(db, PROJECT, {}, only="web-2", built=built) == [cold[1]]
    assert builds == []
    # A change of web-1's state moves its revision: only web-1 is built again.
    with store.write() as db:
        session_store.update_session(db, PROJECT, session, SessionChange(enabled=False))
    with store.read() as db:
        warm = hosts.host_statuses(db, PROJECT, {}, built=built)
        assert builds == ["web-1"]
        assert warm == hosts.host_statuses(db, PROJECT, {})  # as if nothing were remembered
    assert warm[0]["desired_revision"] != cold[0]["desired_revision"]
    assert warm[1] == cold[1]
