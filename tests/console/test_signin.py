"""Sign-in and session rules of the console, in-process (the browser tests show them
in Chromium): who may sign in, expiry, the cookie's attributes under TLS, the form
refusal placement."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from vxtap import auth
from vxtap.api.app import create_app
from vxtap.console import signin
from vxtap.console.forms import refusal_field
from vxtap.store.db import Store

ADMIN = auth.Credential("ADMIN", "admin-secret", "p1")
AGENT = auth.Credential("AGENT", "agent-secret", "p1", host="ECS-source")
KEYS = {c.ak: c for c in (ADMIN, AGENT)}


def test_only_an_administrator_key_with_its_secret_signs_in() -> None:
    assert signin.check_sign_in(KEYS, "ADMIN", "admin-secret") is ADMIN
    for ak, sk in (("ADMIN", "wrong"), ("NOBODY", "admin-secret"), ("ADMIN", "")):
        with pytest.raises(signin.SignInRefused) as refused:
            signin.check_sign_in(KEYS, ak, sk)
        assert refused.value.message == signin.BAD_KEY  # the same answer for both mistakes
    with pytest.raises(signin.SignInRefused) as refused:
        signin.check_sign_in(KEYS, "AGENT", "agent-secret")
    assert "agent's key (host ECS-source)" in refused.value.message
    with pytest.raises(signin.SignInRefused) as refused:
        signin.check_sign_in(KEYS, "AGENT", "wrong")
    assert refused.value.message == signin.BAD_KEY  # no hint that the key exists


def test_sessions_expire_end_and_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    sessions = signin.ConsoleSessions(lambda: now[0], lifetime=timedelta(hours=1))
    token, session = sessions.start(ADMIN)
    assert sessions.find(token) == session
    assert sessions.find(token + "x") is None and sessions.find(None) is None
    now[0] += timedelta(minutes=59)
    assert sessions.find(token) == session
    now[0] += timedelta(minutes=1)
    assert sessions.find(token) is None
    token, _ = sessions.start(ADMIN)
    sessions.end(token)
    assert sessions.find(token) is None
    monkeypatch.setattr(signin, "MAX_SESSIONS", 3)
    tokens = [sessions.start(ADMIN)[0] for _ in range(5)]
    assert [sessions.find(t) is not None for t in tokens] == [False, False, True, True, True]


def test_a_refusal_goes_next_to_the_field_it_names() -> None:
    fields = ["priority", "source_cidr_block", "name"]
    message = "traffic_mirror_filter_rule.source_cidr_block: must be a CIDR block"
    assert refusal_field(message, fields) == "source_cidr_block"
    assert refusal_field("priority 1 is already used by rule x", fields) == "priority"
    assert refusal_field("a source and the target must differ", fields) is None
    assert refusal_field("traffic_mirror_session.vni: must be 0-16777215", fields) is None


@pytest.fixture
def console_over_tls(tmp_path: Path) -> tuple[TestClient, list[datetime]]:
    store = Store(f"sqlite:///{tmp_path / 'vxtap.db'}")
    store.upgrade()
    now = [datetime.now(UTC)]
    app = create_app(store, KEYS, agent_signing_key=b"k" * 32, clock=lambda: now[0])
    return TestClient(app, base_url="https://console.test"), now


def _token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found
    return found.group(1)


def test_cookies_are_secure_under_tls_and_the_session_expires(
    console_over_tls: tuple[TestClient, list[datetime]],
) -> None:
    client, now = console_over_tls
    form = client.get("/console/signin")
    assert re.search(r"vxtap_console_signin=.*HttpOnly.*Secure", form.headers["set-cookie"])
    answer = client.post(
        "/console/signin",
        data={"ak": "ADMIN", "sk": "admin-secret", "csrf_token": _token(form.text)},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith("vxtap_console=")
    )
    assert {"HttpOnly", "Secure", "SameSite=strict", "Path=/console"} <= {
        part.strip() for part in cookie.split(";")
    }
    assert "Max-Age=28800" in cookie or "Max-Age=28799" in cookie
    page = client.get("/console/filters")
    assert page.status_code == 200 and "admin-secret" not in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    now[0] += signin.SESSION_LIFETIME
    expired = client.get("/console/filters", follow_redirects=False)
    assert (expired.status_code, expired.headers["location"]) == (303, "/console/signin")


def test_sign_in_needs_the_forms_own_token(
    console_over_tls: tuple[TestClient, list[datetime]],
) -> None:
    client, _ = console_over_tls
    client.get("/console/signin")
    forged = client.post(
        "/console/signin", data={"ak": "ADMIN", "sk": "admin-secret"}, follow_redirects=False
    )
    assert forged.status_code == 403
    assert "vxtap_console=" not in forged.headers.get("set-cookie", "")


def test_the_api_stays_signed_only(console_over_tls: tuple[TestClient, list[datetime]]) -> None:
    """The console's unsigned prefix is exactly /console, not every path starting so."""
    client, _ = console_over_tls
    assert client.get("/consolex").status_code == 401
    assert client.get("/v3/p1/vpc/traffic-mirror-filters").status_code == 401


def test_a_huge_form_is_refused_before_it_is_read(
    console_over_tls: tuple[TestClient, list[datetime]],
) -> None:
    client, _ = console_over_tls
    declared = client.post("/console/signin", content=b"a=" + b"x" * 200_000)
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(100):
            yield b"x" * 10_000

    streamed = client.post(
        "/console/signin",
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert streamed.status_code == 413
    assert client.get("/console/signin").status_code == 200


def test_the_console_root_leads_to_sign_in(
    console_over_tls: tuple[TestClient, list[datetime]],
) -> None:
    client, _ = console_over_tls
    for path in ("/console", "/console/"):
        answer = client.get(path)
        assert answer.status_code == 200 and 'id="signin"' in answer.text, path
