"""Opening the database: engine settings per backend, transactions, schema upgrades.

SQLite: WAL so readers never wait for the writer, `synchronous=FULL` so an
acknowledged write is on disk before the answer leaves (survives SIGKILL and
power loss), foreign keys on (SQLite's default is off), and write transactions
start with BEGIN IMMEDIATE: two writers then queue on the lock (busy timeout)
instead of both reading under a shared lock and one failing with "database is
locked" when it upgrades. PostgreSQL: READ COMMITTED; the constraints of
`vxtap.store.schema` keep the rules under concurrency.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from vxtap import model
from vxtap.store import errors
from vxtap.store.schema import Base

T = TypeVar("T")

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 30.0
_WRITE = "vxtap_write"
_BUSY_MS = "vxtap_busy_ms"
# Session.info key: {project: hosts} whose desired states the transaction changed.
CHANGED_HOSTS = "vxtap_changed_hosts"


def default_state_dir() -> Path:
    return Path(os.environ.get("VXTAP_STATE_DIR", "/var/lib/vxtap"))


def default_db_url() -> str:
    return f"sqlite:///{default_state_dir() / 'vxtap.db'}"


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Transactions are begun explicitly in _sqlite_on_begin, not by the driver.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=FULL",
        "PRAGMA foreign_keys=ON",
        f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}",
    ):
        cursor.execute(pragma)
    cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    options = connection.get_execution_options()
    # Per transaction, since pooled connections serve both kinds: how long BEGIN IMMEDIATE
    # may wait for another writer's lock.
    busy = options.get(_BUSY_MS, int(SQLITE_BUSY_TIMEOUT_S * 1000))
    connection.exec_driver_sql(f"PRAGMA busy_timeout={int(busy)}")
    connection.exec_driver_sql("BEGIN IMMEDIATE" if options.get(_WRITE, False) else "BEGIN")


def create_db_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
            pool_size=8,
            max_overflow=8,
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(parsed, pool_pre_ping=True, pool_size=8, max_overflow=8)
    raise ValueError(
        f"unsupported database URL {parsed.render_as_string()!r}: "
        "use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
    )


class Store:
    """One database: short read and write transactions, and schema upgrades."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_db_engine(url)
        self.dialect = self.engine.dialect.name
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(
            self.engine.execution_options(**{_WRITE: True}), expire_on_commit=False
        )
        # SQLite: writers that wait less for another writer's lock, by milliseconds.
        self._writers: dict[int, sessionmaker[Session]] = {}
        self._on_commit: list[Callable[[Session], None]] = []

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reader() as session, session.begin():
            yield session

    @contextmanager
    def read_rows(self) -> Iterator[Connection]:
        """A read transaction without an ORM session, for hot paths that select plain columns."""
        with self.engine.connect() as connection, connection.begin():
            yield connection

    @contextmanager
    def write(self, *, lock_wait: float | None = None) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises.

        SQLite: `lock_wait` seconds (instead of the busy timeout) for another writer's
        lock; past that the transaction fails with an error that `is_locked` names."""
        maker = self._writer if lock_wait is None else self._writer_waiting(lock_wait)
        with maker.begin() as session:
            yield session

    def transaction(
        self,
        action: Callable[[Session], T],
        *,
        write: bool = True,
        upsert: bool = False,
        lock_wait: float | None = None,
    ) -> T:
        """Run `action` in one transaction, retried when a concurrent one got in its way;
        a constraint the database enforced raises the store error that words it, and a
        lock held past `lock_wait` seconds (SQLite) raises `Busy`.

        `upsert`: create-or-update writes, where two concurrent first inserts of one key
        race on the primary or unique key; the loser's retry finds the row and updates it.
        A violation no error words and no retry cures is a check the store lacks: it
        is re-raised (a server fault), never passed off as a concurrent change.
        """
        retry_constraints = UPSERT_KEYS if upsert else RETRYABLE_CONSTRAINTS
        attempts = 5
        for attempt in range(attempts):
            try:
                with self.write(lock_wait=lock_wait) if write else self.read() as db:
                    return action(db)
            except OperationalError as exc:
                if is_locked(exc):
                    raise errors.Busy(
                        "the database is busy (another writer holds its lock); retry"
                    ) from exc
                raise
            except IntegrityError as exc:
                name = violated_constraint(exc)
                retryable = name in retry_constraints or is_foreign_key(name)
                if retryable and attempt < attempts - 1:
                    continue
                refusal = refusal_for(name)
                if refusal is not None:
                    raise refusal from exc
                if name in retry_constraints:
                    raise errors.ConcurrentChange(
                        "the request kept conflicting with concurrent changes (another "
                        "request took the same slot or key each time); retry"
                    ) from exc
                raise
            except DataError as exc:
                raise unstorable(exc) from exc
            except DBAPIError as exc:
                sqlstate = getattr(exc.orig, "sqlstate", None)
                if sqlstate in RETRYABLE_SQLSTATES and attempt < attempts - 1:
                    continue
                raise
        raise AssertionError("unreachable")

    def rows_transaction(self, action: Callable[[Connection], T]) -> T:
        """Run `action` in one read transaction without an ORM session (`read_rows`)."""
        try:
            with self.read_rows() as connection:
                return action(connection)
        except DataError as exc:
            raise unstorable(exc) from exc

    def _writer_waiting(self, seconds: float) -> sessionmaker[Session]:
        busy_ms = int(seconds * 1000)
        maker = self._writers.get(busy_ms)
        if maker is None:
            maker = sessionmaker(
                self.engine.execution_options(**{_WRITE: True, _BUSY_MS: busy_ms}),
                expire_on_commit=False,
            )
            for listener in self._on_commit:
                event.listen(maker, "after_commit", listener)
            self._writers[busy_ms] = maker
        return maker

    def on_host_changes(self, callback: Callable[[dict[str, set[str]]], None]) -> None:
        """Call `callback({project: hosts})` after each committed write that changed some
        hosts' desired states (`vxtap.store.common.bump_hosts`), in the committing thread."""

        def committed(session: Session) -> None:
            changes = session.info.pop(CHANGED_HOSTS, None)
            if changes:
                callback(changes)

        self._on_commit.append(committed)
        for maker in (self._writer, *self._writers.values()):
            event.listen(maker, "after_commit", committed)

    def upgrade(self, revision: str = "head") -> None:
        """Bring the schema to the newest migration, or to `revision` (safe to run from
        several processes)."""
        config = _alembic_config()
        with self.engine.execution_options(**{_WRITE: True}).connect() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

    def schema(self) -> SchemaState:
        """Where this database's schema stands against this code's migrations."""
        with self.engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_heads()
            tables = set(inspect(connection).get_table_names())
        head = code_schema_revision()
        if not current:
            return SchemaState("empty" if not tables & set(Base.metadata.tables) else "unversioned")
        if current == (head,):
            return SchemaState("current", current[0])
        script = ScriptDirectory.from_config(_alembic_config())
        known = {revision.revision for revision in script.walk_revisions()}
        if all(revision in known for revision in current):
            return SchemaState("behind", ", ".join(current))
        return SchemaState("unknown", ", ".join(current))

    def dispose(self) -> None:
        self.engine.dispose()


@dataclass(frozen=True)
class SchemaState:
    """`empty`: no vxtap tables (a new database); `current`: at this code's head;
    `behind`: an older revision this code can upgrade; `unknown`: a revision this code
    does not know (a newer vxtap wrote it); `unversioned`: vxtap's tables without
    Alembic's version table."""

    state: Literal["empty", "current", "behind", "unknown", "unversioned"]
    revision: str | None = None


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def code_schema_revision() -> str:
    """The newest migration this code has (its schema)."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def is_locked(error: OperationalError) -> bool:
    """SQLite's "another connection holds the lock" (busy timeout passed)."""
    message = str(error.orig)
    return "database is locked" in message or "database table is locked" in message


_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (?P<columns>[\w.]+(?:, [\w.]+)*)")
_SQLITE_CHECK = re.compile(r"CHECK constraint failed: (?P<name>\w+)")


def _unique_constraints() -> dict[tuple[str, ...], str]:
    """SQLite names a failed unique constraint only by its columns: map them back."""
    found: dict[tuple[str, ...], str] = {}
    for table in Base.metadata.tables.values():
        for constraint in table.constraints:
            columns = getattr(constraint, "columns", None)
            if (
                constraint.name
                and columns is not None
                and type(constraint).__name__
                in (
                    "UniqueConstraint",
                    "PrimaryKeyConstraint",
                )
            ):
                found[tuple(f"{table.name}.{c.name}" for c in columns)] = str(constraint.name)
    return found


_UNIQUE_BY_COLUMNS = _unique_constraints()


def violated_constraint(error: IntegrityError) -> str | None:
    """The name of the constraint an IntegrityError broke, on SQLite and on PostgreSQL.

    SQLite reports foreign-key failures without a name: those give "foreign_key".
    """
    original = error.orig
    diag = getattr(original, "diag", None)
    if diag is not None and getattr(diag, "constraint_name", None):
        return str(diag.constraint_name)
    message = str(original)
    if match := _SQLITE_UNIQUE.search(message):
        return _UNIQUE_BY_COLUMNS.get(tuple(match["columns"].split(", ")))
    if match := _SQLITE_CHECK.search(message):
        return match["name"]
    if "FOREIGN KEY constraint failed" in message:
        return "foreign_key"
    return None


def refusal_for(name: str | None) -> errors.StoreError | None:
    """The refusal for a constraint the database enforced (a check raced a concurrent
    write), or None for a constraint no refusal words."""
    sessions_per_source = (
        f"a port can be a source of at most {model.MAX_SESSIONS_PER_SOURCE} sessions"
    )
    sources_per_session = f"a session can have at most {model.MAX_SOURCES_PER_SESSION} sources"
    known: dict[str, errors.StoreError] = {
        "uq_rules_priority": errors.DuplicatePriority(
            "priority is already used by another rule of this filter and direction"
        ),
        "uq_sources_port_priority": errors.DuplicatePriority(
            "priority is already used by another session sharing a source"
        ),
        "uq_sources_port_slot": errors.QuotaExceeded(sessions_per_source),
        "ck_sources_slot": errors.QuotaExceeded(sessions_per_source),
        "uq_sources_session_position": errors.QuotaExceeded(sources_per_session),
        "ck_sources_position": errors.QuotaExceeded(sources_per_session),
        "ck_sources_not_target": errors.Invalid(
            "a source and the target of one session must be different ports"
        ),
        "uq_ports_host_device": errors.AlreadyExists("a port with this host and device exists"),
    }
    return known.get(name or "")


def is_foreign_key(name: str | None) -> bool:
    """A reference that was there when checked and gone at the write (or the reverse, for
    a delete): a retry runs the store's checks again, which then word the refusal
    (NotFound for a missing reference, InUse)."""
    return name is not None and (name == "foreign_key" or name.startswith("fk_"))


# Deadlock / serialization failure (PostgreSQL SQLSTATE): the transaction can simply be retried.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
# Constraints that a retry can satisfy: slots and positions chosen from a snapshot another
# transaction changed meanwhile.
RETRYABLE_CONSTRAINTS = frozenset({"uq_sources_port_slot", "uq_sources_session_position"})
# The keys of create-or-update writes (ports a host registers, its report and counters).
UPSERT_KEYS = frozenset({"uq_ports_host_device", "pk_ports", "pk_host_reports", "pk_counters"})


def unstorable(error: DataError) -> errors.Invalid:
    """A value the database cannot hold that validation let through (e.g. NUL in a path
    id on PostgreSQL): the client's input, not a server fault."""
    return errors.Invalid(f"a value cannot be stored: {error.orig}")
