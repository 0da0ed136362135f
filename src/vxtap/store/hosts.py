"""The fleet: enrolled hosts (agent access keys) and what each host's agent last applied.

Like the other modules of `vxtap.store`, every function runs inside the caller's transaction.
The status of a host (`host_status`) is pure: `sync_state` compares the revision the
server would send the host now with the one its agent reported.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, MutableMapping
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from vxtap.store.agent_view import desired_state
from vxtap.store.common import bump_change, bump_hosts, host_revision, host_revisions, utc_now
from vxtap.store.errors import AlreadyExists, NotFound
from vxtap.store.schema import AgentHostRow, HostReportRow, HostStatusRow

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
MAX_APPLY_ERROR = 1024

IN_SYNC, BEHIND, FAILING, NO_REPORT = "in sync", "behind", "failing", "no report"

# (project, host) -> (host revision, the revision of the desired state built at it). A
# host's revision moves with every write that can change its desired state, in the
# write's transaction, and never goes back, so a state's content revision once built at
# a host revision holds as long as the host's revision stays.
StateRevisions = MutableMapping[tuple[str, str], tuple[int, str]]

_AGENT = AgentHostRow.__table__.c
_AGENT_BY_AK = select(_AGENT.project_id, _AGENT.host).where(_AGENT.ak == bindparam("ak"))


def agent_by_access_key(db: Connection, ak: str) -> tuple[str, str] | None:
    """(project, host) of an enrolled agent access key; None when unknown or revoked."""
    found = db.execute(_AGENT_BY_AK, {"ak": ak}).first()
    return None if found is None else (found[0], found[1])


def enrol_host(db: Session, project: str, host: str, ak: str) -> AgentHostRow:
    existing = db.get(AgentHostRow, (project, host))
    if existing is not None:
        raise AlreadyExists(
            f"host {host} is enrolled already (access key {existing.ak}): "
            "remove it first to issue a new key"
        )
    row = AgentHostRow(project_id=project, host=host, ak=ak, enrolled_at=utc_now())
    db.add(row)
    db.flush()
    return row


def revoke_host(db: Session, project: str, host: str) -> None:
    """Forget the host's key and status; its ports stay (sessions may name them). The
    host's revision moves, so that its held desired-state requests, on every server
    process, wake up and find the key gone."""
    row = db.get(AgentHostRow, (project, host))
    if row is None:
        raise NotFound(f"host {host} is not enrolled")
    bump_change(db, project)
    bump_hosts(db, project, [host])
    db.delete(row)
    db.execute(
        delete(HostStatusRow).where(HostStatusRow.project_id == project, HostStatusRow.host == host)
    )
    db.flush()


def put_status(db: Session, project: str, host: str, fields: Mapping[str, Any]) -> None:
    """Replace what the host's agent last reported about itself."""
    error = fields.get("apply_error")
    values = {
        "agent_version": fields["agent_version"],
        "applied_revision": fields.get("applied_revision"),
        "apply_error": None if error is None else error[:MAX_APPLY_ERROR],
        "drift_repairs": fields["drift_repairs"],
        "reported_at": utc_now(),
    }
    row = db.get(HostStatusRow, (project, host))
    if row is None:
        db.add(HostStatusRow(project_id=project, host=host, **values))
    else:
        for name, value in values.items():
            setattr(row, name, value)
    db.flush()


def sync_state(desired: str, applied: str | None, apply_error: str | None, reported: bool) -> str:
    """in sync / behind / failing (the agent's last apply failed) / no report."""
    if not reported:
        return NO_REPORT
    if apply_error is not None:
        return FAILING
    return IN_SYNC if applied == desired else BEHIND


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.strftime(TIME_FORMAT)


def host_statuses(
    db: Session,
    project: str,
    static_hosts: Mapping[str, str],
    only: str | None = None,
    held: Container[str] | None = None,
    built: StateRevisions | None = None,
) -> list[dict[str, Any]]:
    """Every host with a key (enrolled here, or in the credentials file: `static_hosts`
    maps those hosts to their access keys) or a status report, sorted by name; `only`
    restricts the answer to one host.

    `held`: the hosts with a held desired-state request open on this server process
    (`held_request: true`; others false); None: `held_request: null` (not known).
    `built`: content revisions known already (e.g. from answering the agents); a host's
    desired state is built only when its revision is not there, and then added.
    """

    def scoped(row: Any) -> Any:
        statement = select(row).where(row.project_id == project)
        return statement if only is None else statement.where(row.host == only)

    enrolled = {r.host: r for r in db.scalars(scoped(AgentHostRow))}
    statuses = {r.host: r for r in db.scalars(scoped(HostStatusRow))}
    counters = {r.host: r.reported_at for r in db.scalars(scoped(HostReportRow))}
    names = set(enrolled) | set(statuses) | {h for h in static_hosts if only in (None, h)}
    connection = db.connection()
    # Read before any state is built, so that each state is at least as new as the
    # revision it is remembered under.
    revisions = (
        host_revisions(connection, project)
        if only is None
        else {only: host_revision(connection, project, only)}
    )
    known: StateRevisions = {} if built is None else built
    answers = []
    for host in sorted(names):
        key = enrolled.get(host)
        status = statuses.get(host)
        revision = revisions.get(host, 0)
        remembered = known.get((project, host))
        if remembered is not None and remembered[0] == revision:
            desired = remembered[1]
        else:
            desired = str(desired_state(connection, project, host)["revision"])
            known[(project, host)] = (revision, desired)
        contacts = [t for t in (status and status.reported_at, counters.get(host)) if t]
        enrolment = "api" if key else ("credentials file" if host in static_hosts else None)
        answers.append(
            {
                "host": host,
                "enrolment": enrolment,
                "access_key": key.ak if key else static_hosts.get(host),
                "enrolled_at": _time(key.enrolled_at) if key else None,
                "agent_version": status.agent_version if status else None,
                "last_contact": _time(max(contacts)) if contacts else None,
                "desired_revision": desired,
                "applied_revision": status.applied_revision if status else None,
                "sync": sync_state(
                    desired,
                    status.applied_revision if status else None,
                    status.apply_error if status else None,
                    status is not None,
                ),
                "apply_error": status.apply_error if status else None,
                "drift_repairs": status.drift_repairs if status else 0,
                "held_request": None if held is None else host in held,
            }
        )
    return answers


def host_status(
    db: Session, project: str, host: str, static_hosts: Mapping[str, str]
) -> dict[str, Any]:
    found = host_statuses(db, project, static_hosts, only=host)
    if not found:
        raise NotFound(f"host {host} is not enrolled and has never reported")
    return found[0]
