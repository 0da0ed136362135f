"""Held desired-state requests: who waits for which host, and what wakes them.

A held request waits for its host's revision (`host_revisions`, bumped by every write
that can change that host's desired state) to move past the one it was answered with.
Waiters are kept by (project, host); what wakes them:

- a committed write through this process names the hosts it changed
  (`Store.on_host_changes`): exactly their waiters are woken, no query. SQLite is one
  process, so this is all it needs;
- on PostgreSQL, a notification on `vxtap.store.common.CHANGES_CHANNEL` from any server
  process (one listening connection per process, on a thread of its own) names the
  project and, when they fit the payload, the hosts: woken the same way; without hosts,
  the project's host revisions are re-read (one query) and the waiters whose host
  moved are woken;
- every `RECHECK_S`, each project with waiters whose change counter moved since the
  last look is re-read the same way, so a notification lost while the listener
  reconnects delays a change by seconds at most, never forever.

A request reads its host's revision before it waits; a wake-up that lands in between
is not lost: each (project, host) and each project has a generation, counted up by
every wake-up, and a request that registers with an older generation than the
current one does not wait (it reads again).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import psycopg
from sqlalchemy.engine import make_url

from vxtap.store import common
from vxtap.store.db import Store

log = logging.getLogger("vxtap.api")

RECHECK_S = 2.0
LISTEN_RETRY_S = 1.0


@dataclass
class _Waiter:
    revision: int
    woken: asyncio.Event = field(default_factory=asyncio.Event)


Generation = tuple[int, int]  # (project's, host's)


class HeldRequests:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.waiters: dict[tuple[str, str], list[_Waiter]] = {}
        self.host_generations: dict[tuple[str, str], int] = {}
        self.project_generations: dict[str, int] = {}
        self.dirty: set[str] = set()  # projects to re-read
        self.counters: dict[str, int] = {}  # project -> change counter at the last look
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

    def held_hosts(self, project: str) -> frozenset[str]:
        """Hosts of `project` with a held request waiting here now (the loop's thread)."""
        return frozenset(h for (p, h), waiters in self.waiters.items() if p == project and waiters)

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
        self._wake_all()

    # --- the endpoint's side ---

    def generation(self, project: str, host: str) -> Generation:
        """Take before reading the host's revision; hand to `wait`."""
        return self.project_generations.get(project, 0), self.host_generations.get(
            (project, host), 0
        )

    async def wait(
        self, project: str, host: str, revision: int, seen: Generation, timeout: float
    ) -> None:
        """Return when `host`'s revision may have moved past `revision` (read after
        `generation` gave `seen`), or after `timeout`."""
        if not self.tasks:  # run without the application's lifespan (e.g. a test client)
            await self.start()
        if self.stopping.is_set() or self.generation(project, host) != seen:
            return  # shutting down, or woken since that read: read again
        waiter = _Waiter(revision)
        key = (project, host)
        self.waiters.setdefault(key, []).append(waiter)
        self.counters.setdefault(project, -1)  # the periodic look reads it afresh
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

    # --- waking ---

    def committed(self, changes: Mapping[str, Iterable[str]]) -> None:
        """Writes changed these {project: hosts}; from any thread (`Store.on_host_changes`)."""
        loop = self.loop
        if loop is None:
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        for project, hosts in changes.items():
            hosts = list(hosts)
            if on_loop:
                self.moved(project, hosts)
            else:
                loop.call_soon_threadsafe(self.moved, project, hosts)

    def moved(self, project: str, hosts: Iterable[str]) -> None:
        """These hosts' revisions moved (call on the event loop): wake their waiters."""
        for host in hosts:
            key = (project, host)
            self.host_generations[key] = self.host_generations.get(key, 0) + 1
            for waiter in self.waiters.get(key, ()):
                waiter.woken.set()

    def changed(self, project: str) -> None:
        """Some hosts of `project` moved, which is not known (call on the event loop)."""
        self.project_generations[project] = self.project_generations.get(project, 0) + 1
        if any(p == project for p, _ in self.waiters):
            self.dirty.add(project)
            self.kick.set()

    async def _rechecks(self) -> None:
        while True:
            await self.kick.wait()
            self.kick.clear()
            projects, self.dirty = self.dirty, set()
            for project in projects:
                try:
                    await self._recheck(project)
                except Exception:  # the periodic look tries again; waiters time out anyway
                    log.exception("re-reading host revisions of project %s failed", project)

    async def _recheck(self, project: str) -> None:
        def read() -> tuple[int, dict[str, int]]:
            with self.store.read_rows() as db:
                return common.change_counter(db, project), common.host_revisions(db, project)

        counter, revisions = await asyncio.to_thread(read)
        self.counters[project] = counter
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
            waiting = {p for p, _ in self.waiters}
            for project in waiting:
                try:
                    counter = await asyncio.to_thread(self._counter, project)
                except Exception as error:
                    log.warning("periodic look at project %s failed: %s", project, error)
                    continue
                if counter != self.counters.get(project):
                    # Changed since the last look: by this process (its waiters were woken
                    # already; the re-read is cheap insurance) or by a notification lost.
                    self.changed(project)
            for project in set(self.counters) - waiting:
                del self.counters[project]

    def _counter(self, project: str) -> int:
        with self.store.read_rows() as db:
            return common.change_counter(db, project)

    # --- PostgreSQL LISTEN, one connection per process ---

    def _notified(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            project = str(message["project"])
            hosts = [str(h) for h in message.get("hosts", ())] if "hosts" in message else None
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed change notification")
            return
        if self.loop is None:
            return
        if hosts is None:
            self.loop.call_soon_threadsafe(self.changed, project)
        else:
            self.loop.call_soon_threadsafe(self.moved, project, hosts)

    def _listen_forever(self) -> None:
        url = make_url(self.store.url).set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        while not self.stopping.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True) as connection:
                    connection.execute(f"LISTEN {common.CHANGES_CHANNEL}")
                    log.info("listening for changes from other server processes")
                    # Whatever was missed while not listening: re-read every waited-on project.
                    if self.loop is not None:
                        self.loop.call_soon_threadsafe(self._all_changed)
                    while not self.stopping.is_set():
                        for notification in connection.notifies(timeout=1.0):
                            self._notified(notification.payload)
            except psycopg.Error as error:
                if self.stopping.is_set():
                    return
                log.warning("listening for changes failed (%s); retrying", error)
                self.stopping.wait(LISTEN_RETRY_S)

    def _all_changed(self) -> None:
        for project in {p for p, _ in self.waiters}:
            self.changed(project)
