"""HTTPS: `vxtap server --tls-cert/--tls-key`, the official SDK with its CA option, our CLI
and client with `--cacert` / `VXTAP_CA_BUNDLE`, and clear errors when trust fails."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from huaweicloudsdkvpc.v3 import (
    CreateTrafficMirrorFilterOption,
    CreateTrafficMirrorFilterRequest,
    CreateTrafficMirrorFilterRequestBody,
    ListTrafficMirrorFiltersRequest,
)

from support.api import ApiServer, snapshot, vpc_client
from vxtap.client import UntrustedServer, VxtapClient, VxtapClientError
from vxtap.lab.certificates import TlsFiles, make_certificates
from vxtap.netns import Namespace


@pytest.fixture
def tls_server(
    tmp_path: Path, tls_files: TlsFiles, api_server_factory: Callable[..., ApiServer]
) -> Iterator[ApiServer]:
    server = api_server_factory(tmp_path / "server", tls=tls_files)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def wrong_ca(tmp_path: Path) -> Path:
    """Another throwaway CA, which did not sign the server's certificate."""
    return make_certificates(tmp_path / "other-ca", ["localhost"], ["127.0.0.1"]).ca


def vxtap(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VXTAP_")}
    return subprocess.run(
        [sys.executable, "-m", "vxtap", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


def test_the_official_sdk_over_https_with_its_ca_option(
    tls_server: ApiServer, tls_files: TlsFiles, wrong_ca: Path
) -> None:
    s = tls_server
    assert s.endpoint.startswith("https://127.0.0.1:")
    vpc = vpc_client(s.endpoint, s.ak, s.sk, s.project_id, ca_bundle=str(tls_files.ca))
    created = vpc.create_traffic_mirror_filter(
        CreateTrafficMirrorFilterRequest(
            CreateTrafficMirrorFilterRequestBody(CreateTrafficMirrorFilterOption(name="over-tls"))
        )
    ).traffic_mirror_filter
    listed = vpc.list_traffic_mirror_filters(ListTrafficMirrorFiltersRequest())
    assert [f.id for f in listed.traffic_mirror_filters] == [created.id]
    # With a CA that did not sign the server's certificate: refused by the client, no change.
    before = snapshot(s.db_url)
    distrustful = vpc_client(s.endpoint, s.ak, s.sk, s.project_id, ca_bundle=str(wrong_ca))
    with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        distrustful.create_traffic_mirror_filter(
            CreateTrafficMirrorFilterRequest(
                CreateTrafficMirrorFilterRequestBody(CreateTrafficMirrorFilterOption(name="nope"))
            )
        )
    assert snapshot(s.db_url) == before


def test_the_cli_over_https_with_a_ca_bundle(
    tls_server: ApiServer, tls_files: TlsFiles, wrong_ca: Path
) -> None:
    s = tls_server
    env = {"VXTAP_ENDPOINT": s.endpoint, "VXTAP_CREDENTIALS": str(s.credentials_path)}
    by_flag = vxtap("filter", "create", "tls-1", "--json", "--cacert", str(tls_files.ca), env=env)
    assert by_flag.returncode == 0, by_flag.stderr
    by_env = vxtap("filter", "list", "--json", env={**env, "VXTAP_CA_BUNDLE": str(tls_files.ca)})
    assert by_env.returncode == 0, by_env.stderr
    assert '"tls-1"' in by_env.stdout
    for extra, expected in [
        (["--cacert", str(wrong_ca)], "its certificate is not trusted"),
        ([], "its certificate is not trusted"),  # the system store knows no throwaway CA
        (["--cacert", "/nonexistent/ca.pem"], "CA bundle /nonexistent/ca.pem does not exist"),
        (["--cacert", str(s.credentials_path)], "is not a readable PEM file of certificates"),
    ]:
        result = vxtap("filter", "list", *extra, env=env)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert expected in lines[0]
        if "not trusted" in expected:
            assert "--cacert FILE or VXTAP_CA_BUNDLE" in lines[0]
    # Plain HTTP to the HTTPS port gets no answer the client can use; HTTPS to plain
    # HTTP is named.
    plain = vxtap(
        "filter", "list", env={**env, "VXTAP_ENDPOINT": s.endpoint.replace("https", "http")}
    )
    assert plain.returncode == 1 and "Traceback" not in plain.stderr


def test_https_to_a_plain_http_server_is_named(api_server: ApiServer, tls_files: TlsFiles) -> None:
    endpoint = api_server.endpoint.replace("http://", "https://")
    with (
        VxtapClient(
            endpoint, api_server.ak, api_server.sk, api_server.project_id, ca_bundle=tls_files.ca
        ) as client,
        pytest.raises(UntrustedServer, match="does not speak TLS"),
    ):
        client.list_filters()


def test_the_client_library_over_https(tls_server: ApiServer, tls_files: TlsFiles) -> None:
    s = tls_server
    with VxtapClient(s.endpoint, s.ak, s.sk, s.project_id, ca_bundle=tls_files.ca) as client:
        assert client.desired_state("h1").host == "h1"
    with (
        VxtapClient(s.endpoint, s.ak, s.sk, s.project_id) as client,
        pytest.raises(UntrustedServer, match="not trusted"),
    ):
        client.list_filters()
    with pytest.raises(VxtapClientError, match="does not exist"):
        VxtapClient(s.endpoint, s.ak, s.sk, s.project_id, ca_bundle="/nonexistent.pem")


def test_tls_start_up_errors(tmp_path: Path, tls_files: TlsFiles) -> None:
    credentials = tmp_path / "c.json"
    credentials.write_text("[]")
    credentials.chmod(0o600)
    exposed = tmp_path / "exposed.key"
    exposed.write_bytes(tls_files.key.read_bytes())
    exposed.chmod(0o644)
    base = ["server", "--listen", "127.0.0.1:0", "--credentials", str(credentials)]
    for args, expected in [
        (["--tls-cert", str(tls_files.cert)], "--tls-cert and --tls-key go together"),
        (["--tls-cert", str(tls_files.cert), "--tls-key", str(exposed)], "accessible by others"),
        (["--tls-cert", str(tls_files.ca), "--tls-key", str(tls_files.key)], "not a PEM"),
        (
            ["--tls-cert", str(tmp_path / "none.pem"), "--tls-key", str(tls_files.key)],
            "cannot read",
        ),
    ]:
        result = vxtap(*base, *args)
        assert result.returncode != 0
        assert expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def _start_up_lines(ns: Namespace, tmp_path: Path, listen: str, *extra: str) -> str:
    """The server's stderr until it says it runs (then it is stopped, by PID)."""
    credentials = tmp_path / "c.json"
    if not credentials.exists():
        credentials.write_text("[]")
        credentials.chmod(0o600)
    process = ns.popen(
        [sys.executable, "-m", "vxtap", "server", "--listen", listen,
         "--db", f"sqlite:///{tmp_path / 'db.sqlite'}", "--credentials", str(credentials), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "Uvicorn running" in line:
                break
    finally:
        process.terminate()
        process.wait(timeout=15)
        if process.stderr is not None:
            process.stderr.close()
    return "".join(lines)


@pytest.mark.netns
def test_plain_http_on_a_non_loopback_address_is_warned_about(
    make_namespace: Callable[[str], Namespace], tmp_path: Path, tls_files: TlsFiles
) -> None:
    ns = make_namespace("tls")  # a namespace of its own: 0.0.0.0 there reaches nothing
    warned = _start_up_lines(ns, tmp_path, "0.0.0.0:9696")
    assert "Uvicorn running" in warned, warned
    assert "serving plain HTTP on 0.0.0.0, which is not a loopback address" in warned
    quiet = _start_up_lines(ns, tmp_path, "127.0.0.1:9696")
    assert "Uvicorn running" in quiet and "plain HTTP" not in quiet
    with_tls = _start_up_lines(
        ns, tmp_path, "0.0.0.0:9696", "--tls-cert", str(tls_files.cert), "--tls-key",
        str(tls_files.key),
    )  # fmt: skip
    assert "Uvicorn running on https://" in with_tls and "plain HTTP" not in with_tls
