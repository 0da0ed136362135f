"""The schema as migrated, the database settings, and the constraints on their own
(written straight to the database, past the store's checks)."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import text, update
from sqlalchemy.exc import IntegrityError

from vxtap.store import common
from vxtap.store import filters as filter_store
from vxtap.store.db import MIGRATIONS, Store, violated_constraint
from vxtap.store.filters import FilterSpec
from vxtap.store.schema import (
    Base,
    FilterRow,
    MemberRow,
    PortRow,
    RuleRow,
    SessionRow,
    SourceRow,
    TargetGroupRow,
)


def test_migrations_build_exactly_the_declared_schema(store: Store) -> None:
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_upgrade_is_idempotent_and_keeps_data(store: Store) -> None:
    now = datetime(2026, 1, 1)
    with store.write() as db:
        db.add(
            FilterRow(
                id="f1", project_id="p", name="kept", description="", created_at=now, updated_at=now
            )
        )
    store.upgrade()
    with store.read() as db:
        row = db.get(FilterRow, "f1")
        assert row is not None and row.name == "kept"


def test_upgrade_from_the_first_schema_keeps_data(tmp_path: Path) -> None:
    """A database made by the first release (migration 0001) upgrades in place."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = Store(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with old.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(
            text(
                "INSERT INTO filters (id, project_id, name, description, created_at, updated_at)"
                " VALUES ('f1', 'p', 'kept', '', '2026-01-01', '2026-01-01')"
            )
        )
    old.dispose()
    store = Store(url)
    try:
        store.upgrade()
        with store.read() as db:
            row = db.get(FilterRow, "f1")
            assert row is not None and row.name == "kept"
            assert common.change_counter(db, "p") == 0
        with store.write() as db:
            filter_store.create_filter(db, "p", FilterSpec("new"))
        with store.read() as db:
            assert common.change_counter(db, "p") == 1
    finally:
        store.dispose()


def test_sqlite_settings(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'x.db'}")
    try:
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        store.dispose()


def test_unsupported_url_is_named() -> None:
    with pytest.raises(ValueError, match="unsupported database URL"):
        Store("mysql://x/y")


NOW = datetime(2026, 1, 1)


def _seed(store: Store) -> None:
    with store.write() as db:
        db.add(
            FilterRow(
                id="f", project_id="p", name="f", description="", created_at=NOW, updated_at=NOW
            )
        )
        for i in range(5):
            db.add(
                PortRow(
                    id=f"port{i}",
                    project_id="p",
                    host="h",
                    device=f"eth{i}",
                    mac=None,
                    ipv4=[],
                    ipv6=[],
                    created_at=NOW,
                    updated_at=NOW,
                )
            )
        db.flush()
        for i in range(4):
            db.add(
                SessionRow(
                    id=f"s{i}",
                    project_id="p",
                    name="s",
                    description="",
                    filter_id="f",
                    target_id="port4",
                    target_type="eni",
                    virtual_network_id=1,
                    packet_length=96,
                    priority=i + 1,
                    enabled=True,
                    type="eni",
                    created_at=NOW,
                    updated_at=NOW,
                )
            )
        db.flush()
        db.add(
            SourceRow(
                session_id="s0",
                port_id="port0",
                project_id="p",
                priority=1,
                target_id="port4",
                slot=1,
                position=1,
            )
        )


def _refused(store: Store, statement: object, constraint: str) -> None:
    with pytest.raises(IntegrityError) as info, store.write() as db:
        if isinstance(statement, Base):
            db.add(statement)
            db.flush()
        else:
            db.execute(statement)  # type: ignore[call-overload]
    assert violated_constraint(info.value) in (constraint, "foreign_key")
    if violated_constraint(info.value) == "foreign_key":
        assert constraint.startswith("fk_")


def rule(rule_id: str, priority: int, project: str = "p") -> RuleRow:
    return RuleRow(
        id=rule_id,
        project_id=project,
        filter_id="f",
        direction="ingress",
        priority=priority,
        action="accept",
        ethertype="IPv4",
        protocol="TCP",
        description="",
        created_at=NOW,
        updated_at=NOW,
    )


def source(session: str, port: str, priority: int, slot: int, position: int = 1) -> SourceRow:
    return SourceRow(
        session_id=session,
        port_id=port,
        project_id="p",
        priority=priority,
        target_id="port4",
        slot=slot,
        position=position,
    )


def test_constraints_hold_without_the_repository(store: Store) -> None:
    _seed(store)
    with store.write() as db:
        db.add(rule("r1", 5))
    _refused(store, rule("r2", 5), "uq_rules_priority")
    _refused(store, rule("r3", 0), "ck_rules_priority")
    _refused(store, rule("r4", 6, project="q"), "fk_rules_filter")  # filter of another project
    # Session priority unique per shared source: direct insert, and by cascading an update.
    with store.write() as db:
        db.add(source("s1", "port1", 2, slot=1))
    _refused(store, source("s1", "port2", 9, slot=1, position=2), "fk_sources_session")


def test_priority_cascade_and_slots(store: Store) -> None:
    _seed(store)
    with store.write() as db:
        db.add(source("s1", "port0", 2, slot=2))
        db.add(source("s2", "port0", 3, slot=3))
    # Cascaded copy: moving s1 onto s0's priority clashes on the shared source port0.
    _refused(
        store,
        update(SessionRow).where(SessionRow.id == "s1").values(priority=1),
        "uq_sources_port_priority",
    )
    _refused(store, source("s3", "port0", 4, slot=3), "uq_sources_port_slot")
    _refused(store, source("s3", "port0", 4, slot=4), "ck_sources_slot")
    _refused(store, source("s3", "port1", 4, slot=1, position=11), "ck_sources_position")
    # The target cannot be one of the session's sources, even when the target changes.
    _refused(store, source("s3", "port4", 4, slot=1), "ck_sources_not_target")
    _refused(
        store,
        update(SessionRow)
        .where(SessionRow.id == "s0")
        .values(target_id="port0", target_port_id="port0"),
        "ck_sources_not_target",
    )
    # A filter or port in use cannot be deleted.
    _refused(store, text("DELETE FROM filters WHERE id = 'f'"), "fk_sessions_filter")
    _refused(store, text("DELETE FROM ports WHERE id = 'port0'"), "fk_sources_port")
    # Deleting a session takes its sources along.
    with store.write() as db:
        db.execute(text("DELETE FROM sessions WHERE id = 's2'"))
    with store.read() as db:
        assert db.get(SourceRow, ("s2", "port0")) is None
        s1 = db.get(SessionRow, "s1")
        assert s1 is not None and [s.priority for s in s1.sources] == [2]


def member(port: str, number: int, group: str = "g") -> MemberRow:
    return MemberRow(group_id=group, port_id=port, project_id="p", number=number)


def test_target_group_constraints(store: Store) -> None:
    _seed(store)
    with store.write() as db:
        db.add(
            TargetGroupRow(
                id="g", project_id="p", name="g", description="", created_at=NOW, updated_at=NOW
            )
        )
        db.flush()
        db.add(member("port1", 0))
        db.flush()
        # s3 mirrors to the group: the typed columns follow target_id and target_type.
        s3 = db.get(SessionRow, "s3")
        assert s3 is not None
        s3.target_type, s3.target_id = "elb", "g"
    with store.read() as db:
        s3 = db.get(SessionRow, "s3")
        assert s3 is not None and (s3.target_port_id, s3.target_group_id) == (None, "g")
        m = db.get(MemberRow, ("g", "port1"))
        assert m is not None and m.healthy is False and m.last_heartbeat is None
    _refused(store, member("port2", 0), "uq_members_number")
    _refused(store, member("port2", 256), "ck_members_number")
    _refused(store, member("port1", 1), "pk_target_group_members")
    _refused(store, member("port2", 1, group="nope"), "fk_members_group")
    # A member port, and a group a session targets, cannot be deleted.
    _refused(store, text("DELETE FROM ports WHERE id = 'port1'"), "fk_members_port")
    _refused(store, text("DELETE FROM target_groups WHERE id = 'g'"), "fk_sessions_target_group")
    # Past the ORM, the typed copy must agree with target_id and target_type.
    _refused(
        store,
        update(SessionRow).where(SessionRow.id == "s3").values(target_type="eni"),
        "ck_sessions_target",
    )
    _refused(
        store,
        update(SessionRow).where(SessionRow.id == "s2").values(target_id="port3"),
        "ck_sessions_target",
    )
    # Deleting the session frees the group; deleting the group takes its members along.
    with store.write() as db:
        db.execute(text("DELETE FROM sessions WHERE id = 's3'"))
        db.execute(text("DELETE FROM target_groups WHERE id = 'g'"))
    with store.read() as db:
        assert db.get(MemberRow, ("g", "port1")) is None


def test_upgrade_to_target_groups_keeps_sessions_and_sources(tmp_path: Path) -> None:
    """Migration 0006 rebuilds `sessions` on SQLite: its sources must survive."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = Store(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with old.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0005")
        for statement in (
            "INSERT INTO filters VALUES ('f', 'p', 'f', '', '2026-01-01', '2026-01-01')",
            "INSERT INTO ports (id, project_id, host, device, ipv4, ipv6, created_at,"
            " updated_at) VALUES ('a', 'p', 'h', 'a', '[]', '[]', '2026-01-01', '2026-01-01'),"
            " ('b', 'p', 'h', 'b', '[]', '[]', '2026-01-01', '2026-01-01')",
            "INSERT INTO sessions (id, project_id, name, description, filter_id, target_id,"
            " target_type, virtual_network_id, packet_length, priority, enabled, type,"
            " created_at, updated_at) VALUES ('s', 'p', 's', '', 'f', 'b', 'eni', 1, 96, 1,"
            " 1, 'eni', '2026-01-01', '2026-01-01')",
            "INSERT INTO session_sources VALUES ('s', 'a', 'p', 1, 'b', 1, 1)",
        ):
            connection.execute(text(statement))
    old.dispose()
    store = Store(url)
    try:
        store.upgrade()
        with store.read() as db:
            session = db.get(SessionRow, "s")
            assert session is not None and session.target_port_id == "b"
            assert [s.port_id for s in session.sources] == ["a"]
        _refused(store, text("DELETE FROM ports WHERE id = 'b'"), "fk_sessions_target")
    finally:
        store.dispose()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_concurrent_upgrades_of_a_fresh_database(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Several server processes starting at once on one new database: none fails."""
    url = (
        f"sqlite:///{tmp_path / 'fresh.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_db")
    )
    code = f"from vxtap.store.db import Store; Store({url!r}).upgrade()"
    processes = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(4)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr.decode()[-2000:]
    store = Store(url)
    try:
        with store.engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        store.dispose()
