"""Held desired-state requests: who waits for which host, and what wakes them.

A held request waits for its host's revision (`host_revisions`, bumped by every write
that can change that host's desired state) to move past the one it was answered
with. What wakes the waiters of a project is a re-read of its hosts' revisions:

- after a write through this process (in memory: SQLite, and PostgreSQL's own writes);
- on PostgreSQL, after a notification on `repository.CHANGES_CHANNEL` from any server
  process: one listening connection per process, on a thread of its own;
- every `RECHECK_S`, for projects with waiters whose change counter moved since the
  last look, so a notification lost while the listener reconnects delays a change by
  seconds at most, never forever.

A re-read is one query per project, however many writes or notifications asked for
it meanwhile, and wakes only the hosts whose revision moved.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from sqlalchemy.engine import make_url

from vxtap.store import repository as repo
from vxtap.store.db import Store

log = logging.getLogger("vxtap.api")

RECHECK_S = 2.0
LISTEN_RETRY_S = 1.0


@dataclass
class _Waiter:
    revision: int
    woken: asyncio.Event = field(default_factory=asyncio.Event)


class HeldRequests:
    def __init__(self, store: Store, run: Callable[..., object] | None = None) -> None:
        self.store = store
        self.waiters: dict[tuple[str, str], list[_Waiter]] = {}
        self.dirty: set[str] = set()  # projects to re-read
        self.counters: dict[str, int] = {}  # project -> change counter at the last re-read
        self.kick = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.stopping = threading.Event()
        self.listener: threading.Thread | None = None

    @property
    def shutting_down(self) -> bool:
        return self.stopping.is_set()

    @property
    def held(self) -> int:
        return sum(len(w) for w in self.waiters.values())

    # --- lifecycle (the application's lifespan) ---

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.tasks = [
            asyncio.create_task(self._rechecks(), name="vxtap-held-recheck"),
            asyncio.create_task(self._periodic(), name="vxtap-held-periodic"),
        ]
        if self.store.dialect == "postgresql":
            self.listener = threading.Thread(
                target=self._listen_forever, name="vxtap-listen", daemon=True
            )
            self.listener.start()

    def release_all(self) -> None:
        """Answer every held request now (shutting down); safe from a signal handler."""
        self.stopping.set()
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._wake_all)

    def _wake_all(self) -> None:
        for waiters in self.waiters.values():
            for waiter in waiters:
                waiter.woken.set()

    async def stop(self) -> None:
        self.stopping.set()
        for task in self.tasks:
            task.cancel()
        for waiters in self.waiters.values():
            for waiter in waiters:
                waiter.woken.set()

    # --- the endpoint's side ---

    async def wait(
        self, project: str, host: str, revision: int, counter: int, timeout: float
    ) -> None:
        """Return when `host`'s revision may have moved past `revision` (read together
        with the project's change `counter`), or after `timeout`."""
        if not self.tasks:  # run without the application's lifespan (e.g. a test client)
            await self.start()
        if self.stopping.is_set():
            return
        waiter = _Waiter(revision)
        key = (project, host)
        self.waiters.setdefault(key, []).append(waiter)
        known = self.counters.setdefault(project, counter)
        if known != counter:
            # A write came between that read and this process's last look: look again
            # now rather than miss it until the next one.
            self.dirty.add(project)
            self.kick.set()
        try:
            await asyncio.wait_for(waiter.woken.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            waiters = self.waiters.get(key, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self.waiters.pop(key, None)

    def committed(self, projects: set[str]) -> None:
        """Writes to `projects` committed; from any thread (`Store.on_host_changes`)."""
        loop = self.loop
        if loop is None:
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        for project in projects:
            if on_loop:
                self.changed(project)
            else:
                loop.call_soon_threadsafe(self.changed, project)

    def changed(self, project: str) -> None:
        """A write to `project` committed (call on the event loop)."""
        if any(p == project for p, _ in self.waiters):
            self.dirty.add(project)
            self.kick.set()

    # --- re-reading revisions ---

    async def _rechecks(self) -> None:
        while True:
            await self.kick.wait()
            self.kick.clear()
            projects, self.dirty = self.dirty, set()
            for project in projects:
                try:
                    await self._recheck(project)
                except Exception:  # the periodic check tries again; waiters time out anyway
                    log.exception("re-reading host revisions of project %s failed", project)

    async def _recheck(self, project: str, *, only_if_counter_moved: bool = False) -> None:
        def read() -> tuple[int, dict[str, int]]:
            with self.store.read_rows() as db:
                counter = repo.change_counter(db, project)
                if only_if_counter_moved and counter == self.counters.get(project):
                    return counter, {}
                return counter, repo.host_revisions(db, project)

        counter, revisions = await asyncio.to_thread(read)
        moved = counter != self.counters.get(project)
        self.counters[project] = counter
        if not moved and only_if_counter_moved:
            return
        for (waiting_project, host), waiters in list(self.waiters.items()):
            if waiting_project != project:
                continue
            current = revisions.get(host, 0)
            for waiter in waiters:
                if waiter.revision != current:
                    waiter.woken.set()

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(RECHECK_S)
            for project in {p for p, _ in self.waiters}:
                try:
                    await self._recheck(project, only_if_counter_moved=True)
                except Exception as error:
                    log.warning("periodic re-read of project %s failed: %s", project, error)
            # Forget the counters of projects nobody waits on (they are read afresh).
            waiting = {p for p, _ in self.waiters}
            for project in set(self.counters) - waiting:
                del self.counters[project]

    # --- PostgreSQL LISTEN, one connection per process ---

    def _notified(self, project: str) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.changed, project)

    def _listen_forever(self) -> None:
        url = make_url(self.store.url).set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        while not self.stopping.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True) as connection:
                    connection.execute(f"LISTEN {repo.CHANGES_CHANNEL}")
                    log.info("listening for changes from other server processes")
                    # Whatever was missed while not listening: re-read every waited-on project.
                    if self.loop is not None:
                        self.loop.call_soon_threadsafe(self._all_dirty)
                    while not self.stopping.is_set():
                        for notification in connection.notifies(timeout=1.0):
                            self._notified(notification.payload)
            except psycopg.Error as error:
                if self.stopping.is_set():
                    return
                log.warning("listening for changes failed (%s); retrying", error)
                self.stopping.wait(LISTEN_RETRY_S)

    def _all_dirty(self) -> None:
        self.dirty |= {p for p, _ in self.waiters}
        self.kick.set()
