"""vxtap.auth against the official SDK's own signer, byte for byte."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest

from vxtap.auth import (
    DATE_FORMAT,
    AuthError,
    Credential,
    is_administrator,
    load_credentials,
    sign,
    verify,
)

AK, SK, PROJECT = "AKTEST", "secret-key", "0123456789abcdef0123456789abcdef"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CREDENTIALS = {AK: Credential(AK, SK, PROJECT)}


def sdk_signed(
    method: str,
    path: str,
    query: list[tuple[str, object]],
    body: bytes,
    host: str = "127.0.0.1:9696",
) -> SdkRequest:
    request = SdkRequest(
        method=method,
        schema="http",
        host=host,
        resource_path=path,
        query_params=query,
        header_params={
            "Content-Type": "application/json;charset=UTF-8",
            "User-Agent": "huaweicloud-usdk-python/3.0",
            "X-Sdk-Date": NOW.strftime(DATE_FORMAT),
        },
        body=body,
    )
    result: SdkRequest = BasicCredentials(AK, SK, PROJECT).sign_request(request)
    return result


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


CASES = [
    ("GET", f"/v3/{PROJECT}/vpc/traffic-mirror-sessions", [], b""),
    (
        "GET",
        f"/v3/{PROJECT}/vpc/traffic-mirror-sessions",
        [("name", "a b+c/ü"), ("limit", 10), ("marker", "x~y")],
        b"",
    ),
    (
        "POST",
        f"/v3/{PROJECT}/vpc/traffic-mirror-filters",
        [],
        json.dumps({"traffic_mirror_filter": {"name": "过滤器-1"}}).encode(),
    ),
    ("DELETE", f"/v3/{PROJECT}/vpc/traffic-mirror-filters/abc", [], b""),
]


@pytest.mark.parametrize(("method", "path", "query", "body"), CASES)
def test_sdk_signature_verifies(
    method: str, path: str, query: list[tuple[str, object]], body: bytes
) -> None:
    request = sdk_signed(method, path, query, body)
    split = urlsplit(request.uri)
    credential = verify(
        method,
        split.path,
        split.query,
        lower(request.header_params),
        body,
        CREDENTIALS.get,
        now=NOW,
    )
    assert credential.project_id == PROJECT


@pytest.mark.parametrize(("method", "path", "query", "body"), CASES)
def test_sign_matches_sdk_byte_for_byte(
    method: str, path: str, query: list[tuple[str, object]], body: bytes
) -> None:
    request = sdk_signed(method, path, query, body)
    url = f"http://127.0.0.1:9696{request.uri}"
    ours = sign(
        method,
        url,
        {
            "Content-Type": "application/json;charset=UTF-8",
            "User-Agent": "huaweicloud-usdk-python/3.0",
        },
        body,
        AK,
        SK,
        PROJECT,
        now=NOW,
    )
    assert ours["Authorization"] == request.header_params["Authorization"]
    assert ours["X-Sdk-Date"] == request.header_params["X-Sdk-Date"]
    assert ours["X-Project-Id"] == PROJECT


def test_query_order_does_not_matter() -> None:
    url = f"http://h:1/v3/{PROJECT}/vpc/traffic-mirror-filters?name=b&limit=5"
    headers = sign("GET", url, {}, b"", AK, SK, PROJECT, now=NOW)
    verify(
        "GET", urlsplit(url).path, "limit=5&name=b", lower(headers), b"", CREDENTIALS.get, now=NOW
    )


def signed(body: bytes = b"{}", now: datetime = NOW) -> tuple[str, str, dict[str, str], bytes]:
    path = f"/v3/{PROJECT}/vpc/traffic-mirror-filters"
    headers = {"Content-Type": "application/json"}
    headers.update(sign("POST", f"http://h:1{path}", headers, body, AK, SK, PROJECT, now=now))
    return "POST", path, lower(headers), body


def test_refusals_name_the_problem() -> None:
    method, path, headers, body = signed()
    cases: list[tuple[dict[str, str], bytes, datetime, str]] = [
        ({k: v for k, v in headers.items() if k != "authorization"}, body, NOW, "missing"),
        ({**headers, "authorization": "Bearer x"}, body, NOW, "malformed"),
        (headers, b'{"a":1}', NOW, "signature does not match"),
        (headers, body, NOW + timedelta(minutes=16), "15 minutes"),
        (headers, body, NOW - timedelta(minutes=16), "15 minutes"),
        ({**headers, "x-sdk-date": "yesterday"}, body, NOW, "YYYYMMDD"),
        ({**headers, "x-project-id": "other"}, body, NOW, "signature does not match"),
    ]
    for hdrs, payload, now, expected in cases:
        with pytest.raises(AuthError, match=expected) as info:
            verify(method, path, "", hdrs, payload, CREDENTIALS.get, now=now)
        assert info.value.status == 401
    # Within the window both ways is fine.
    verify(method, path, "", headers, body, CREDENTIALS.get, now=NOW + timedelta(minutes=14))
    verify(method, path, "", headers, body, CREDENTIALS.get, now=NOW - timedelta(minutes=14))


def test_wrong_secret_and_unknown_key() -> None:
    method, path, headers, body = signed()
    with pytest.raises(AuthError, match="signature does not match"):
        verify(method, path, "", headers, body, {AK: Credential(AK, "other", PROJECT)}.get, now=NOW)
    with pytest.raises(AuthError, match="unknown access key"):
        verify(method, path, "", headers, body, {}.get, now=NOW)


def test_project_header_must_be_the_keys_project() -> None:
    path = "/v3/other/vpc/traffic-mirror-filters"
    headers = sign("GET", f"http://h:1{path}", {}, b"", AK, SK, "other", now=NOW)
    with pytest.raises(AuthError) as info:
        verify("GET", path, "", lower(headers), b"", CREDENTIALS.get, now=NOW)
    assert info.value.status == 403


def test_unsigned_payload_is_refused() -> None:
    method, path, headers, body = signed()
    with pytest.raises(AuthError, match="unsigned"):
        verify(
            method,
            path,
            "",
            {**headers, "x-sdk-content-sha256": "UNSIGNED-PAYLOAD"},
            body,
            CREDENTIALS.get,
            now=NOW,
        )


def test_load_credentials(tmp_path: Path) -> None:
    good = tmp_path / "c.json"
    good.write_text(
        json.dumps(
            [
                {"ak": "a", "sk": "s", "project_id": "p"},
                {"ak": "b", "sk": "t", "project_id": "p", "host": "web-1"},
            ]
        )
    )
    good.chmod(0o600)
    loaded = load_credentials(good)
    assert loaded == {"a": Credential("a", "s", "p"), "b": Credential("b", "t", "p", "web-1")}
    assert is_administrator(loaded["a"])
    assert not is_administrator(loaded["b"])
    for text, expected in [
        ("not json", "not valid JSON"),
        ("{}", "JSON list"),
        ('[{"ak": "a"}]', "entry 0"),
        ('[{"ak":"a","sk":"s","project_id":"p"},{"ak":"a","sk":"t","project_id":"q"}]', "twice"),
        ('[{"ak":"a","sk":"s","project_id":"p","host":"a/b"}]', "host must be a host name"),
        ('[{"ak":"a","sk":"s","project_id":"p","host":7}]', "host must be a host name"),
    ]:
        good.write_text(text)
        with pytest.raises(ValueError, match=expected):
            load_credentials(good)
    with pytest.raises(ValueError, match="cannot read"):
        load_credentials(tmp_path / "missing.json")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o620])
def test_a_credentials_file_others_can_access_is_refused(tmp_path: Path, mode: int) -> None:
    """As ssh refuses a private key others can read: the file holds secret keys."""
    path = tmp_path / "c.json"
    path.write_text(json.dumps([{"ak": "a", "sk": "s", "project_id": "p"}]))
    path.chmod(mode)
    with pytest.raises(ValueError, match=rf"accessible by others \(mode 0{mode:o}\).*chmod 600"):
        load_credentials(path)
    path.chmod(0o400)
    assert set(load_credentials(path)) == {"a"}
