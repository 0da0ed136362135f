"""Helpers for the API tests: the official SDK client, raw signed requests, snapshots."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

import httpx
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkvpc.v3 import VpcClient
from sqlalchemy import create_engine, select

from support.servers import ApiServer
from vxtap.auth import sign
from vxtap.store.schema import Base


def vpc_client(
    endpoint: str, ak: str, sk: str, project_id: str, ca_bundle: str | None = None
) -> Any:
    """The official SDK's client; `ca_bundle` is its documented CA option for HTTPS."""
    config = HttpConfig.get_default_config()
    config.retry_times = 0
    if ca_bundle is not None:
        config.ssl_ca_cert = ca_bundle
    return (
        VpcClient.new_builder()
        .with_http_config(config)
        .with_credentials(BasicCredentials(ak, sk, project_id))
        .with_endpoint(endpoint)
        .build()
    )


@dataclass
class Raw:
    """Signed requests with exact bytes, for what the SDK cannot send (bad JSON, wrong types)."""

    server: ApiServer

    def request(
        self,
        method: str,
        path: str,
        body: bytes | dict[str, Any] | None = None,
        *,
        ak: str | None = None,
        sk: str | None = None,
        project_id: str | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        data = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
        url = f"{self.server.endpoint}{path}"
        headers = {"Content-Type": "application/json", **(extra_headers or {})}
        headers.update(
            sign(
                method,
                url,
                headers,
                data,
                ak or self.server.ak,
                sk or self.server.sk,
                project_id or self.server.project_id,
            )
        )
        return httpx.request(method, url, content=data, headers=headers, timeout=30)

    def v3(self, method: str, resource: str, body: Any = None) -> httpx.Response:
        return self.request(method, f"/v3/{self.server.project_id}/vpc/{resource}", body)

    def internal(self, method: str, resource: str, body: Any = None) -> httpx.Response:
        return self.request(method, f"/internal/v1/{self.server.project_id}/{resource}", body)


def snapshot(db_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, to prove a refused request changed nothing."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            return {
                name: sorted(tuple(row) for row in connection.execute(select(table)))
                for name, table in Base.metadata.tables.items()
            }
    finally:
        engine.dispose()


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def make_port(raw: Raw, host: str | None = None, ip: str = "10.0.0.1") -> dict[str, Any]:
    response = raw.internal(
        "POST",
        "ports",
        {"port": {"host": host or unique("host"), "device": "eth0", "ipv4": [ip]}},
    )
    assert response.status_code == 201, response.text
    port: dict[str, Any] = response.json()["port"]
    return port
