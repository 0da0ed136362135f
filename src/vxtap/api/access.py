"""Who may do what: the authorization rule applied after a request's signature checked out.

- An administrator's key (`vxtap.auth.is_administrator`) may do everything in its project.
- A host agent's key may do exactly what an agent needs, for its own host only:
  register or refresh the host's ports, read the host's desired state, report the
  host's counters and its own status (what it applied), and send the heartbeats of
  the host's collector (target-group health). The host is the credential's;
  a path naming another host is refused, as is every other route (the v3 API, v1
  ports, manual ports, session statistics, enrolment).

Pure: the middleware passes the method and the decoded path, the project check has
already been done (`vxtap.api.middleware.AuthMiddleware`).
"""

from __future__ import annotations

from vxtap.auth import Credential, is_administrator

# (method, last path segment) of /internal/v1/{project}/hosts/{host}/<segment>.
AGENT_OPERATIONS = frozenset(
    {
        ("PUT", "ports"),
        ("GET", "desired-state"),
        ("HEAD", "desired-state"),
        ("PUT", "counters"),
        ("PUT", "status"),
        ("PUT", "collector-heartbeat"),
    }
)


def refusal(credential: Credential, method: str, path: str) -> str | None:
    """Why `credential` may not send `method path`, or None when it may."""
    if is_administrator(credential):
        return None
    segments = path.strip("/").split("/")
    if (
        len(segments) == 6
        and segments[:2] == ["internal", "v1"]
        and segments[2] == credential.project_id
        and segments[3] == "hosts"
        and (method.upper(), segments[5]) in AGENT_OPERATIONS
    ):
        if segments[4] == credential.host:
            return None
        return (
            f"access key {credential.ak} is host {credential.host}'s agent key: "
            f"it may not act for host {segments[4]}"
        )
    return (
        f"access key {credential.ak} is host {credential.host}'s agent key: it may only "
        "register that host's ports, read its desired state, report its counters and "
        f"status and send its collector's heartbeats, not {method.upper()} {path}"
    )
