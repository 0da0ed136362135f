"""The server's side of target-group health: members that fell silent are marked down.

Every `CHECK_INTERVAL_S`, each server process looks for healthy members whose last
collector heartbeat is older than `vxtap.store.health.SILENCE_S` (one indexed read)
and, per project that has any, marks them down with one conditional UPDATE and moves
the revisions of the hosts whose sessions name their groups, so those hosts' held
desired-state requests answer at once (`vxtap.api.held`). The state is in the
database: with several server processes on one PostgreSQL, each looks, the first
UPDATE turns the members down and the others find nothing left to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

from vxtap.api.db import Database
from vxtap.store import health

log = logging.getLogger("vxtap.api")

# How often silent members are looked for: a member is down at most
# SILENCE_S + CHECK_INTERVAL_S after its last heartbeat.
CHECK_INTERVAL_S = 0.25


class MemberHealthChecker:
    def __init__(self, database: Database, interval: float = CHECK_INTERVAL_S) -> None:
        self.database = database
        self.interval = interval
        self.task: asyncio.Task[None] | None = None
        self.failure: str | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="vxtap-member-health")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception as error:  # the next look tries again
                failure = f"{type(error).__name__}: {error}"
                if failure != self.failure:
                    log.warning("looking for silent target-group members failed: %s", failure)
                self.failure = failure
            else:
                if self.failure is not None:
                    log.info("looking for silent target-group members works again")
                self.failure = None

    async def check(self) -> int:
        """Mark every silent member down now; the number marked (by this process)."""
        database = self.database
        projects = await database.call(self._silent_projects)
        marked = 0
        for project in projects:
            marked += await database.run(
                database.write, functools.partial(health.mark_silent_down, project=project)
            )
        return marked

    def _silent_projects(self) -> list[str]:
        with self.database.store.read_rows() as db:
            return health.projects_with_silent_members(db)
