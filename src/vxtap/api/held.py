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

The same generations keep what this process knows without asking the database
(docs/control-plane.md, "What a renewal costs"):

- each host's revision as last read (`known_revision`): valid while neither the
  host's nor its project's generation moved since the read began, so a renewal whose
  tag names it is held and answered 304 with no database read (`HeldRenewals`, an
  ASGI layer in front of the routes; anything else goes on to the route);
- on SQLite only, each enrolled agent key as last looked up (`cached_agent`): valid
  while its host's generation stays. Revoking a host moves its revision, and on
  SQLite every write goes through this one process and moves the generation before
  the write's answer is sent, so a revoked key is refused at once (several processes
  on one SQLite file: within the periodic look, as their held requests). On
  PostgreSQL another process may revoke, and a notification is not instant: keys are
  read from the database on every request there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

import psycopg
from sqlalchemy.engine import make_url
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from vxtap import auth
from vxtap.api.errors import Refusal, Unauthorized
from vxtap.client import HELD_JITTER_FRACTION
from vxtap.store import common
from vxtap.store.db import Store
from vxtap.wire.fields import parse_host

log = logging.getLogger("vxtap.api")

RECHECK_S = 2.0
LISTEN_RETRY_S = 1.0
# The longest `wait` a desired-state request may ask for (the jitter added to it is
# `client.HELD_JITTER_FRACTION` of it).
MAX_WAIT_S = 600.0
# Revisions and agent keys remembered at most (a client naming ever new hosts must not
# grow memory without bound); past it they are forgotten and read again.
MAX_REMEMBERED = 200_000


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
        # (project, host) -> (generation when its read began, revision read)
        self.known: dict[tuple[str, str], tuple[Generation, int]] = {}
        # Projects of `known` and `agents`: the periodic look watches them
        self.remembered_projects: set[str] = set()
        # SQLite: access key -> (credential, its host's generation when looked up)
        self.agents: dict[str, tuple[auth.Credential, Generation]] = {}
        # Content revisions of the states built here, by host revision (`vxtap host list`)
        self.built: dict[tuple[str, str], tuple[int, str]] = {}

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

    # --- what this process knows without a read ---

    def known_revision(self, project: str, host: str) -> int | None:
        """The host's revision, if no change may have happened since it was read."""
        entry = self.known.get((project, host))
        if entry is None or entry[0] != self.generation(project, host):
            return None
        return entry[1]

    def remember(self, project: str, host: str, seen: Generation, revision: int) -> None:
        """`revision` was read after `generation` gave `seen` (on the event loop)."""
        if len(self.known) >= MAX_REMEMBERED:
            self.known.clear()
        self.known[(project, host)] = (seen, revision)
        self.remembered_projects.add(project)

    def unchanged(self, project: str, host: str, tags: Iterable[str]) -> tuple[int, str] | None:
        """(the host's known revision, the first of `tags` naming it), or None (not
        known, or no tag names it); with it, the request gets 304 without a read."""
        revision = self.known_revision(project, host)
        if revision is None:
            return None
        prefix = f"h{revision}"
        tag = next((tag for tag in tags if tag.partition("-")[0] == prefix), None)
        return None if tag is None else (revision, tag)

    def remember_built(self, project: str, host: str, revision: int, content: str) -> None:
        """A state with content revision `content` was built after reading `revision`."""
        if len(self.built) >= MAX_REMEMBERED:
            self.built.clear()
        self.built[(project, host)] = (revision, content)

    def cached_agent(self, ak: str) -> auth.Credential | None:
        """An agent key looked up before, if its host's revision has not moved since."""
        entry = self.agents.get(ak)
        if entry is None:
            return None
        credential, seen = entry
        assert credential.host is not None
        if self.generation(credential.project_id, credential.host) != seen:
            del self.agents[ak]
            return None
        return credential

    def remember_agent(self, credential: auth.Credential) -> None:
        """SQLite only: `credential` was just read on the event loop (no write between)."""
        assert credential.host is not None
        if len(self.agents) >= MAX_REMEMBERED:
            self.agents.clear()  # (their projects stay watched: harmless)
        self.agents[credential.ak] = (
            credential,
            self.generation(credential.project_id, credential.host),
        )
        self.remembered_projects.add(credential.project_id)

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
        if project in self.remembered_projects or any(p == project for p, _ in self.waiters):
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

        # `changed` moved the project's generation, so every remembered revision of it
        # is invalid; those the read confirms are valid again, under the generation taken
        # before the read (a project's counter moves with every write to it, also through
        # this process, and each would otherwise cost every host a read on its renewal).
        before = {h: self.generation(project, h) for p, h in self.known if p == project}
        counter, revisions = await asyncio.to_thread(read)
        self.counters[project] = counter
        for (waiting_project, host), waiters in list(self.waiters.items()):
            if waiting_project != project:
                continue
            current = revisions.get(host, 0)
            for waiter in waiters:
                if waiter.revision != current:
                    waiter.woken.set()
        for host, seen in before.items():
            entry = self.known.get((project, host))
            if entry is not None and entry[1] == revisions.get(host, 0):
                self.known[(project, host)] = (seen, entry[1])

    def watched(self) -> set[str]:
        """Projects with waiters here, or revisions or agent keys remembered."""
        return {p for p, _ in self.waiters} | self.remembered_projects

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(RECHECK_S)
            watched = self.watched()
            for project in watched:
                try:
                    counter = await asyncio.to_thread(self._counter, project)
                except Exception as error:
                    log.warning("periodic look at project %s failed: %s", project, error)
                    continue
                if counter != self.counters.get(project):
                    # Changed since the last look: by this process (its waiters were woken
                    # already; the re-read is cheap insurance) or by a notification lost.
                    self.changed(project)
                    # Read after that change: the next look compares with this (the
                    # re-read that `changed` started reads the revisions afresh anyway).
                    self.counters[project] = counter
            for project in set(self.counters) - watched:
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
        for project in self.watched():
            self.changed(project)


def etags(if_none_match: str | None) -> list[str]:
    """RFC 9110 13.1.2: the listed entity tags without quotes, compared weakly (a `W/`
    prefix ignored); `*` stays `*`. Anything unparsable simply matches nothing."""
    if not if_none_match:
        return []
    tags = (t.strip().removeprefix("W/") for t in if_none_match.split(","))
    return [t if t == "*" else t.strip('"') for t in tags if t]


# `wait=SECONDS` as the only query parameter, in a form every float parser reads alike.
_WAIT_ONLY = re.compile(rb"wait=(\d{1,4}(?:\.\d{1,6})?)")


class HeldRenewals:
    """ASGI, between the signature check and the routes: an idle agent's renewal,
    answered without the web framework and without a database read.

    A renewal is `GET /internal/v1/{project}/hosts/{host}/desired-state?wait=S` whose
    `If-None-Match` names the host's revision as this process knows it
    (`HeldRequests.unchanged`): it is held here, and answered 304 when the wait passes
    (or the server shuts down) with nothing changed. Every other request, and a
    renewal whose host moved while it was held, goes on to the route (which reads,
    builds and answers as documented there); a moved one goes on with what is left of
    its wait, after its agent key is checked again (a revoked key gets 401).
    """

    def __init__(
        self,
        app: ASGIApp,
        held: HeldRequests,
        revoked: Callable[[auth.Credential], Awaitable[bool]],
        refuse: Callable[[Refusal], ASGIApp],
    ) -> None:
        self.app = app
        self.held = held
        self.revoked = revoked
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._renewal(scope)
        if found is None:
            await self.app(scope, receive, send)
            return
        project, host, wait, (revision, tag) = found
        loop = asyncio.get_running_loop()
        held = self.held
        hold_until = loop.time() + wait * (1 + random.uniform(0, HELD_JITTER_FRACTION))
        if not held.shutting_down:
            seen = held.generation(project, host)
            await held.wait(project, host, revision, seen, hold_until - loop.time())
        if held.known_revision(project, host) == revision:  # waited out, or shutting down
            await Response(status_code=304, headers={"ETag": f'"{tag}"'})(scope, receive, send)
            return
        credential = scope.get("state", {}).get("credential")
        if credential is not None and await self.revoked(credential):
            refusal = Unauthorized(f"access key {credential.ak} was revoked")
            await self.refuse(refusal)(scope, receive, send)
            return
        left = min(wait, hold_until - loop.time())
        query = f"wait={left:.3f}".encode() if left > 0 else b""
        await self.app({**scope, "query_string": query}, receive, send)

    def _renewal(self, scope: Scope) -> tuple[str, str, float, tuple[int, str]] | None:
        """(project, host, wait, (known revision, the tag naming it)) of a renewal."""
        if scope["type"] != "http" or scope["method"] != "GET":
            return None
        segments = scope["path"].split("/")
        if (
            len(segments) != 7
            or segments[1:3] != ["internal", "v1"]
            or segments[4] != "hosts"
            or segments[6] != "desired-state"
        ):
            return None
        wait_match = _WAIT_ONLY.fullmatch(scope["query_string"])
        if wait_match is None:
            return None
        wait = float(wait_match[1])
        if not 0 < wait <= MAX_WAIT_S:
            return None
        project, host = segments[3], segments[5]
        try:
            parse_host(host)
        except ValueError:
            return None
        if_none_match = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"if-none-match"), None
        )
        tags = etags(if_none_match)
        if "*" in tags:
            return None
        known = self.held.unchanged(project, host, tags)
        return None if known is None else (project, host, wait, known)
