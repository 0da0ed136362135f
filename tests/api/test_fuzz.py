"""Schema-driven fuzzing: schemathesis generates valid and invalid requests from the
server's own OpenAPI document, signs them like the SDK, and no answer may be a 5xx
or anything but Huawei's error shape."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import DataGenerationMethod

from support.api import Raw, make_port
from vxtap.auth import sign

EXAMPLES_PER_OPERATION = 45
MIN_REQUESTS = 1000


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fuzz_server(
    request: pytest.FixtureRequest, tmp_path: Path, api_server_factory: Callable[..., Any]
) -> Iterator[Any]:
    db_url = None if request.param == "sqlite" else request.getfixturevalue("pg_db")
    server = api_server_factory(tmp_path / "fuzz", db_url=db_url)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fuzzing_finds_no_server_error(fuzz_server: Any) -> None:
    api_server = fuzz_server
    schemathesis.experimental.OPEN_API_3_1.enable()
    raw_schema = httpx.get(f"{api_server.endpoint}/openapi.json").json()
    schema = schemathesis.from_dict(
        raw_schema,
        base_url=api_server.endpoint,
        data_generation_methods=DataGenerationMethod.all(),
    )
    # Real ids to splice into generated requests, so that they reach the store, not only
    # the "no such resource" answer.
    raw = Raw(api_server)
    filter_id = raw.v3(
        "POST", "traffic-mirror-filters", {"traffic_mirror_filter": {"name": "fuzz"}}
    ).json()["traffic_mirror_filter"]["id"]
    ports = [make_port(raw, f"fuzz{i}", f"10.9.0.{i + 1}")["id"] for i in range(4)]
    http = requests.Session()
    sent = itertools.count()
    failures: list[str] = []
    statuses: Counter[int] = Counter()

    def splice(case: Any, use_real: bool) -> None:
        case.path_parameters = {**(case.path_parameters or {}), "project_id": api_server.project_id}
        if not use_real:
            return
        for key in ("filter_id", "session_id", "rule_id", "port_id"):
            if key in case.path_parameters and key == "filter_id":
                case.path_parameters[key] = filter_id
            elif key in case.path_parameters and key == "port_id":
                case.path_parameters[key] = ports[0]
        if isinstance(case.body, dict):
            for option in case.body.values():
                if not isinstance(option, dict):
                    continue
                if "traffic_mirror_filter_id" in option:
                    option["traffic_mirror_filter_id"] = filter_id
                if "traffic_mirror_target_id" in option:
                    option["traffic_mirror_target_id"] = ports[3]
                if isinstance(option.get("traffic_mirror_sources"), list):
                    option["traffic_mirror_sources"] = ports[
                        : 1 + len(option["traffic_mirror_sources"]) % 3
                    ]

    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(), use_real=st.booleans())
        def exercise(case: Any, use_real: bool) -> None:
            splice(case, use_real)
            kwargs = case.as_requests_kwargs(base_url=api_server.endpoint)
            prepared = requests.Request(**kwargs).prepare()
            body = prepared.body or b""
            if isinstance(body, str):
                body = body.encode()
            headers = {k: v for k, v in prepared.headers.items() if k.lower() != "content-length"}
            headers.update(
                sign(
                    prepared.method or "GET",
                    prepared.url or "",
                    headers,
                    body,
                    api_server.ak,
                    api_server.sk,
                    api_server.project_id,
                )
            )
            prepared.headers.update(headers)
            response = http.send(prepared, timeout=30)
            next(sent)
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                failures.append(f"{case.method} {prepared.url} {body[:200]!r} -> {response.text}")
            elif response.status_code >= 400:
                answer = response.json()
                if set(answer) != {"request_id", "error_msg", "error_code"}:
                    failures.append(f"{case.method} {prepared.url}: not Huawei's shape: {answer}")

        exercise()

    assert not failures, "\n".join(failures[:10])
    count = next(sent)
    assert count >= MIN_REQUESTS, f"only {count} requests generated"
    # Not vacuous: requests were signed right (no 401) and many reached the store.
    assert statuses[401] == 0, statuses
    assert sum(n for code, n in statuses.items() if code < 300) >= 100, statuses
    assert httpx.get(f"{api_server.endpoint}/healthz").status_code == 200
