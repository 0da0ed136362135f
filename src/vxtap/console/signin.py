"""Console sign-in: who may sign in, and the server-side sessions behind the cookie.

Pure (no I/O): a sign-in is checked against the server's own credentials map, and
a signed-in browser holds only a random session token in its cookie; the access
key it acts with stays on the server. Sessions live in the server process's
memory, so a restart (or another replica) signs everyone out; see docs/console.md.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from vxtap import auth

SESSION_LIFETIME = timedelta(hours=8)
# A bound on remembered sign-ins, so that signing in over and over cannot grow memory
# without limit: the oldest sessions are dropped first.
MAX_SESSIONS = 10_000
BAD_KEY = "wrong access key or secret key"
AGENT_KEY = (
    "access key {ak} is an agent's key (host {host}): sign in with a project administrator's key"
)


class SignInRefused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def check_sign_in(credentials: Mapping[str, auth.Credential], ak: str, sk: str) -> auth.Credential:
    """The administrator credential for (ak, sk), or SignInRefused saying why not.

    Wrong key and wrong secret get the same answer; only the holder of a correct
    secret learns that the key is an agent's.
    """
    credential = credentials.get(ak.strip())
    if credential is None or not hmac.compare_digest(credential.sk.encode(), sk.encode()):
        raise SignInRefused(BAD_KEY)
    if not auth.is_administrator(credential):
        raise SignInRefused(AGENT_KEY.format(ak=credential.ak, host=credential.host))
    return credential


@dataclass(frozen=True)
class ConsoleSession:
    ak: str
    project_id: str
    csrf_token: str  # the anti-forgery token every form of this session carries
    expires_at: datetime


def _digest(token: str) -> str:
    # Stored by hash: a memory dump or a debug print of the table gives no usable cookie.
    return hashlib.sha256(token.encode()).hexdigest()


class ConsoleSessions:
    """Signed-in browsers by cookie token; expired ones are forgotten."""

    def __init__(self, clock: Callable[[], datetime], lifetime: timedelta = SESSION_LIFETIME):
        self._clock = clock
        self._lifetime = lifetime
        self._sessions: dict[str, ConsoleSession] = {}

    def start(self, credential: auth.Credential) -> tuple[str, ConsoleSession]:
        """(cookie token, session) for a credential that passed `check_sign_in`."""
        self._forget_expired()
        while len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        token = secrets.token_urlsafe(32)
        session = ConsoleSession(
            ak=credential.ak,
            project_id=credential.project_id,
            csrf_token=secrets.token_urlsafe(32),
            expires_at=self._clock() + self._lifetime,
        )
        self._sessions[_digest(token)] = session
        return token, session

    def find(self, token: str | None) -> ConsoleSession | None:
        if not token:
            return None
        key = _digest(token)
        session = self._sessions.get(key)
        if session is None:
            return None
        if session.expires_at <= self._clock():
            del self._sessions[key]
            return None
        return session

    def end(self, token: str | None) -> None:
        if token:
            self._sessions.pop(_digest(token), None)

    def _forget_expired(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[key]


def token_matches(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())
