"""Where a request's database work runs: the SQLite-inline / PostgreSQL-thread policy, once.

SQLite transactions run on the event loop: the database is local, and running inline
is cheaper than the worker-thread hop (GIL hand-offs) it would otherwise take. SQLite
has one writer at a time anyway, so writes in threads only queued on its lock while
the loop's time went to hand-offs (docs/benchmarks.md has the figures). On the loop
a write never waits for another writer's lock (that would stop every other request):
taken, it is retried on a worker thread, which waits up to `LOCK_WAIT_S`.
PostgreSQL waits on the network: worker threads, so the loop keeps parsing and
verifying other requests meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from vxtap.store import errors
from vxtap.store.db import Store

# SQLite: how long a write waits for another writer's lock before answering 503. The
# wait happens on a worker thread, never on the event loop.
LOCK_WAIT_S = 5.0

T = TypeVar("T")
D = TypeVar("D", Session, Connection)
P = ParamSpec("P")

# Set while a transaction runs on the event loop (SQLite): writes then do not wait for a lock.
_ON_LOOP: ContextVar[bool] = ContextVar("on_loop", default=False)


def _lock_wait() -> float:
    return 0.0 if _ON_LOOP.get() else LOCK_WAIT_S


class Database:
    """The runners a route hands its transaction to, and `run`, which places it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.inline = store.dialect == "sqlite"

    def write(self, action: Callable[[Session], T]) -> T:
        return self.store.transaction(action, lock_wait=_lock_wait())

    def read(self, action: Callable[[Session], T]) -> T:
        return self.store.transaction(action, write=False)

    def upsert(self, action: Callable[[Session], T]) -> T:
        """Create-or-update writes: a race on the key is retried (`Store.transaction`)."""
        return self.store.transaction(action, upsert=True, lock_wait=_lock_wait())

    def read_rows(self, action: Callable[[Connection], T]) -> T:
        """Hot-path reads (sessions, desired states): plain columns, no ORM session."""
        return self.store.rows_transaction(action)

    async def run(self, runner: Callable[[Callable[[D], T]], T], action: Callable[[D], T]) -> T:
        if not self.inline:
            return await run_in_threadpool(runner, action)
        token = _ON_LOOP.set(True)
        try:
            return runner(action)
        except errors.Busy:
            pass
        finally:
            _ON_LOOP.reset(token)
        return await run_in_threadpool(runner, action)

    async def run_waiting(self, action: Callable[[Session], T], *, write: bool) -> T:
        """The fleet routes' transactions. Unlike `run`, a SQLite write that finds the lock
        taken waits for it on the loop (up to `LOCK_WAIT_S`) instead of moving to a worker
        thread; kept as it was when the routes were split (docs/architecture.md)."""
        if self.inline:
            return self.store.transaction(action, write=write, lock_wait=LOCK_WAIT_S)
        return await run_in_threadpool(
            lambda: self.store.transaction(action, write=write, lock_wait=LOCK_WAIT_S)
        )

    async def call(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Any other database work, placed by the same policy (inline on SQLite)."""
        if self.inline:
            return function(*args, **kwargs)
        return await run_in_threadpool(function, *args, **kwargs)
