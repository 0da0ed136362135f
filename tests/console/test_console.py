"""The web console in real headless Chromium (Debian's package, driven by Playwright)
against a real `vxtap server`: the seed's configuration made through the forms and
read back with the official SDK, refusals, live counters, explain, the fleet status,
sign-in rules.

Set VXTAP_CONSOLE_SCREENSHOTS=DIR to keep the screenshots (docs/images is made so).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkvpc.v3 import (
    CreateTrafficMirrorFilterOption,
    CreateTrafficMirrorFilterRequest,
    CreateTrafficMirrorFilterRequestBody,
    CreateTrafficMirrorFilterRuleOption,
    CreateTrafficMirrorFilterRuleRequest,
    CreateTrafficMirrorFilterRuleRequestBody,
    CreateTrafficMirrorSessionOption,
    CreateTrafficMirrorSessionRequest,
    CreateTrafficMirrorSessionRequestBody,
    ListTrafficMirrorFiltersRequest,
    ListTrafficMirrorSessionsRequest,
    VpcClient,
)
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import create_engine, select, update

from support import console as console_support
from support.console import SEED_RULE, chromium, create_seed_session, fill_form, number
from vxtap.client import ApiError, VxtapClient
from vxtap.model import Counter, Interface
from vxtap.store.schema import Base, MemberRow

ApiServer = Any
# The seed's servers (the user's document, /work/shared/seed and `vxtap lab show seed`).
SEED_PORTS = {
    "ECS-test": ("fa:16:3e:7e:d6:77", "192.168.0.161"),
    "ECS-source": ("fa:16:3e:7e:d6:bc", "192.168.0.230"),
    "ECS-target": ("fa:16:3e:7e:d6:7a", "192.168.0.164"),
}
# What differs between two walks by design: ids, owners, times.
VOLATILE = {"id", "project_id", "created_at", "updated_at", "traffic_mirror_filter_id"}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, api_server_factory: Callable[..., ApiServer]
) -> Iterator[ApiServer]:
    """A server with two projects' administrator keys and an agent key of the first."""
    directory = tmp_path_factory.mktemp("console")
    projects = [secrets.token_hex(16), secrets.token_hex(16)]
    keys = [
        {"ak": "ADMIN" + secrets.token_hex(6), "sk": secrets.token_hex(16), "project_id": p}
        for p in projects
    ]
    # An agent key for each seed host of the first project (the hosts page lists them).
    agents = {
        host: {
            "ak": "AGENT" + secrets.token_hex(6),
            "sk": secrets.token_hex(16),
            "project_id": projects[0],
            "host": host,
        }
        for host in SEED_PORTS
    }
    credentials = directory / "credentials.json"
    credentials.write_text(json.dumps([*keys, *agents.values()]))
    credentials.chmod(0o600)
    started = api_server_factory(directory, credentials_path=credentials)
    started.agents = agents
    started.agent = agents["ECS-source"]
    for project in (0, 1):
        with admin_client(started, project) as client:
            for host, (mac, ip) in SEED_PORTS.items():
                client.register_ports(host, [Interface(device="eth0", mac=mac, ipv4=(ip,))])
    try:
        yield started
    finally:
        started.stop()


def project_keys(server: ApiServer, project: int) -> tuple[str, str, str]:
    """(access key, secret key, project id) of the server's first (0) or second project."""
    if project == 0:
        return server.ak, server.sk, server.project_id
    return server.other_ak, server.other_sk, server.other_project_id


def admin_client(server: ApiServer, project: int = 0) -> VxtapClient:
    return VxtapClient(server.endpoint, *project_keys(server, project))


def vpc_client(server: ApiServer, project: int) -> Any:
    ak, sk, pid = project_keys(server, project)
    config = HttpConfig.get_default_config()
    config.retry_times = 0
    return (
        VpcClient.new_builder()
        .with_http_config(config)
        .with_credentials(BasicCredentials(ak, sk, pid))
        .with_endpoint(server.endpoint)
        .build()
    )


def snapshot(db_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored row, to show that a refused form stored nothing."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            return {
                name: sorted(tuple(row) for row in connection.execute(select(table)))
                for name, table in Base.metadata.tables.items()
                if name not in ("counters", "host_reports")
            }
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(20_000)
    try:
        yield opened
    finally:
        context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Page, str], None]:
    keep = os.environ.get("VXTAP_CONSOLE_SCREENSHOTS")
    directory = Path(keep) if keep else tmp_path_factory.mktemp("screenshots")
    directory.mkdir(parents=True, exist_ok=True)

    def take(page: Page, name: str) -> None:
        path = directory / f"console-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000  # a rendered page, not an empty image

    return take


def sign_in(page: Page, server: ApiServer, ak: str | None = None, sk: str | None = None) -> None:
    console_support.sign_in(page, server.endpoint, ak or server.ak, sk or server.sk)


def sdk_walk_of_the_seed(server: ApiServer) -> dict[str, Any]:
    """The seed made with the official SDK in the second project, as tests/api do."""
    vpc = vpc_client(server, 1)
    flt = vpc.create_traffic_mirror_filter(
        CreateTrafficMirrorFilterRequest(
            CreateTrafficMirrorFilterRequestBody(
                CreateTrafficMirrorFilterOption(name="seed-filter")
            )
        )
    ).traffic_mirror_filter
    rule_fields: dict[str, Any] = {**SEED_RULE, "priority": 1}
    vpc.create_traffic_mirror_filter_rule(
        CreateTrafficMirrorFilterRuleRequest(
            CreateTrafficMirrorFilterRuleRequestBody(
                CreateTrafficMirrorFilterRuleOption(traffic_mirror_filter_id=flt.id, **rule_fields)
            )
        )
    )
    with admin_client(server, 1) as client:
        ports = {f"{p['binding:host_id']}/{p['name']}": p["id"] for p in client.iter_ports()}
    vpc.create_traffic_mirror_session(
        CreateTrafficMirrorSessionRequest(
            CreateTrafficMirrorSessionRequestBody(
                CreateTrafficMirrorSessionOption(
                    name="seed-session",
                    traffic_mirror_filter_id=flt.id,
                    traffic_mirror_sources=[ports["ECS-source/eth0"]],
                    traffic_mirror_target_id=ports["ECS-target/eth0"],
                    traffic_mirror_target_type="eni",
                    virtual_network_id=1,
                    packet_length=96,
                    priority=1,
                )
            )
        )
    )
    return read_back(server, 1)


def read_back(server: ApiServer, project: int) -> dict[str, Any]:
    """A project's filters and sessions through the official SDK, ids as HOST/DEVICE."""
    vpc = vpc_client(server, project)
    with admin_client(server, project) as client:
        names = {p["id"]: f"{p['binding:host_id']}/{p['name']}" for p in client.iter_ports()}
    filters = vpc.list_traffic_mirror_filters(ListTrafficMirrorFiltersRequest()).to_json_object()
    sessions = vpc.list_traffic_mirror_sessions(ListTrafficMirrorSessionsRequest()).to_json_object()

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if k not in VOLATILE}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return names.get(value, value) if isinstance(value, str) else value

    return {
        "filters": plain(filters["traffic_mirror_filters"]),
        "sessions": plain(sessions["traffic_mirror_sessions"]),
    }


def api_refusal(action: Callable[[], Any]) -> str:
    with pytest.raises(ApiError) as refused:
        action()
    return refused.value.error_msg


def test_the_seed_through_the_console(
    server: ApiServer, page: Page, shots: Callable[[Page, str], None]
) -> None:
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.goto(f"{server.endpoint}/console/sessions")
    expect(page).to_have_url(re.compile(r"/console/signin$"))
    shots(page, "signin")
    sign_in(page, server)
    expect(page).to_have_url(re.compile(r"/console/sessions$"))

    # The filter, through the form.
    page.click("text=Mirror filters")
    page.fill("#create-name", "seed-filter")
    page.click("#filter-create button")
    expect(page.locator("#filter-name")).to_have_text("seed-filter")
    filter_id = page.url.rsplit("/", 1)[1]

    # A malformed CIDR: the API's own message next to the field, nothing stored.
    before = snapshot(server.db_url)
    fill_form(page, "rule", {**SEED_RULE, "source_cidr_block": "192.168.0.161/33"})
    page.click("#rule-create button")
    with admin_client(server) as client:
        expected = api_refusal(
            lambda: client.create_rule(
                filter_id,
                direction="ingress",
                priority=1,
                protocol="TCP",
                source_cidr_block="192.168.0.161/33",
            )
        )
    assert "source_cidr_block" in expected
    expect(page.locator("#rule-source_cidr_block-error")).to_contain_text(expected)
    assert snapshot(server.db_url) == before

    # The seed's inbound TCP rule.
    fill_form(page, "rule", SEED_RULE)
    page.click("#rule-create button")
    expect(page.locator("#inbound-rules tbody tr")).to_have_count(1)
    expect(page.locator("#inbound-rules tbody tr td").nth(6)).to_have_text("192.168.0.230/32")

    # A duplicate priority: the API's message at the priority field, nothing stored.
    before = snapshot(server.db_url)
    fill_form(page, "rule", {**SEED_RULE, "protocol": "UDP", "destination_port_range": ""})
    page.click("#rule-create button")
    with admin_client(server) as client:
        expected = api_refusal(
            lambda: client.create_rule(filter_id, direction="ingress", priority=1, protocol="UDP")
        )
    assert "already used" in expected
    expect(page.locator("#rule-priority-error")).to_contain_text(expected)
    assert snapshot(server.db_url) == before
    page.goto(f"{server.endpoint}/console/filters/{filter_id}")
    shots(page, "filter")

    # The session, with the pickers.
    session_id = create_seed_session(page)

    # Read back through the official SDK: exactly what the SDK-driven walk creates.
    made_by_console = read_back(server, 0)
    assert made_by_console == sdk_walk_of_the_seed(server)
    assert made_by_console["sessions"][0]["traffic_mirror_sources"] == ["ECS-source/eth0"]

    # Live: counters reported as the source host's agent reports them, while the page is open.
    rule_id = made_by_console_rule_id(server, filter_id)
    stop = threading.Event()
    reporter = threading.Thread(
        target=report_rising_counters, args=(server, session_id, rule_id, stop), daemon=True
    )
    reporter.start()
    try:
        packets = page.locator("#session-packets")
        expect(packets).not_to_have_text("–")
        first = number(packets.inner_text())
        expect(packets).not_to_have_text(packets.inner_text(), timeout=15_000)
        assert number(packets.inner_text()) > first
        expect(page.locator("#session-pps")).not_to_have_text(re.compile(r"^(–|0)$"))
        expect(page.locator("svg.wide polyline")).to_have_count(1, timeout=15_000)
        expect(page.locator("[data-host-report='ECS-source']")).not_to_have_text("never")
        page.wait_for_timeout(5_000)  # a few more points on the graph
        shots(page, "session")
        page.click("text=Mirror sessions")
        expect(page.locator(f"[data-live='sessions/{session_id}/packets']")).not_to_have_text("–")
        expect(page.locator("svg.spark polyline")).to_have_count(1, timeout=15_000)
        page.wait_for_timeout(4_000)
        shots(page, "sessions")
    finally:
        stop.set()
        reporter.join()

    # Explain: the same verdict as `vxtap explain` prints.
    explain_in_the_page(
        page, "ECS-source/eth0", protocol="tcp", src="192.168.0.161", sport="40000",
        dst="192.168.0.230", dport="1234",
    )  # fmt: skip
    expect(page.locator("#verdict")).to_have_text("Mirrored")
    explain = ["--port", "ECS-source/eth0", "--direction", "ingress", "--protocol", "tcp"]
    explain += ["--src", "192.168.0.161", "--sport", "40000", "--dst", "192.168.0.230"]
    cli = subprocess.run(
        [sys.executable, "-m", "vxtap", "explain", *explain, "--dport", "1234"],
        env={**os.environ, **cli_env(server)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert page.locator("#verdict-text").inner_text().strip() == cli.stdout.strip()
    shots(page, "explain")

    page.click("text=Ports")
    expect(page.locator("#ports tbody tr")).to_have_count(3)
    expect(page.locator("#ports")).to_contain_text("source of seed-session")
    shots(page, "ports")
    page.click("text=Mirror filters")
    shots(page, "filters")

    # Nothing secret in URLs or the page; sign-out ends the server-side session too.
    assert not [u for u in urls if server.sk in u or "sk=" in u]
    assert server.sk not in page.content()
    cookie = next(c for c in page.context.cookies() if c["name"] == "vxtap_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0
    page.click("#signout")
    expect(page).to_have_url(re.compile(r"/console/signin$"))
    page.goto(f"{server.endpoint}/console/sessions")
    expect(page).to_have_url(re.compile(r"/console/signin$"))
    replayed = httpx.get(
        f"{server.endpoint}/console/live.json", cookies={"vxtap_console": cookie["value"]}
    )
    assert replayed.status_code == 303 and replayed.headers["location"] == "/console/signin"
    assert server.sk not in server.log_path.read_text()


def made_by_console_rule_id(server: ApiServer, filter_id: str) -> str:
    with admin_client(server) as client:
        rule_id: str = client.show_filter(filter_id)["ingress_rules"][0]["id"]
        return rule_id


def cli_env(server: ApiServer, project: int = 0) -> dict[str, str]:
    ak, sk, project_id = project_keys(server, project)
    return {
        "VXTAP_ENDPOINT": server.endpoint,
        "VXTAP_AK": ak,
        "VXTAP_SK": sk,
        "VXTAP_PROJECT_ID": project_id,
    }


def explain_in_the_page(page: Page, port: str, **fields: str) -> None:
    """Submit the console's explain form for an ingress packet on `port` (host/device);
    `fields` name the form's other inputs (protocol, src, sport, dst, dport)."""
    page.click("text=Explain")
    page.select_option("#explain-port", port)
    for name, value in fields.items():
        page.fill(f"#explain-{name}", value)
    page.click("#explain button")


def report_rising_counters(
    server: ApiServer, session_id: str, rule_id: str, stop: threading.Event
) -> None:
    """PUT .../hosts/ECS-source/counters with the agent's key, totals rising each time."""
    agent = server.agent
    with VxtapClient(server.endpoint, agent["ak"], agent["sk"], agent["project_id"]) as client:
        packets = 0
        while not stop.is_set():
            packets += 7
            counter = Counter(packets=packets, bytes=packets * 96)
            client.report_counters("ECS-source", {session_id: counter}, {rule_id: counter})
            stop.wait(0.5)


def test_an_agent_key_cannot_sign_in(server: ApiServer, page: Page) -> None:
    sign_in(page, server, server.agent["ak"], server.agent["sk"])
    expect(page.locator("#signin-error")).to_contain_text("agent's key")
    assert not [c for c in page.context.cookies() if c["name"] == "vxtap_console"]
    page.goto(f"{server.endpoint}/console/filters")
    expect(page).to_have_url(re.compile(r"/console/signin$"))
    sign_in(page, server, server.ak, "not-" + server.sk)
    expect(page.locator("#signin-error")).to_have_text("wrong access key or secret key")


def test_a_write_without_the_anti_forgery_token_is_refused(server: ApiServer, page: Page) -> None:
    sign_in(page, server)
    expect(page).to_have_url(re.compile(r"/console/sessions$"))
    token = page.input_value("#session-create input[name=csrf_token]")
    before = snapshot(server.db_url)
    statuses = page.evaluate(
        """async (token) => {
            const post = async (fields) => (await fetch('/console/filters', {
                method: 'POST', body: new URLSearchParams(fields), redirect: 'manual'})).status;
            return [await post({name: 'forged-1'}),
                    await post({name: 'forged-2', csrf_token: token + 'x'}),
                    await post({name: 'forged-3', csrf_token: ''})];
        }""",
        token,
    )
    assert statuses == [403, 403, 403]
    assert snapshot(server.db_url) == before
    vpc = vpc_client(server, 0)
    for name in ("forged-1", "forged-2", "forged-3"):
        listed = vpc.list_traffic_mirror_filters(ListTrafficMirrorFiltersRequest(name=name))
        assert listed.traffic_mirror_filters == []
    # The same write with the page's token goes through.
    status = page.evaluate(
        """async (token) => (await fetch('/console/filters', {method: 'POST',
            body: new URLSearchParams({name: 'with-token', csrf_token: token}),
            redirect: 'manual'})).type""",
        token,
    )
    assert status == "opaqueredirect"
    with admin_client(server) as client:
        assert [f["name"] for f in client.iter_filters(where={"name": "with-token"})] == [
            "with-token"
        ]


def test_edit_forms_change_what_they_say(server: ApiServer, page: Page) -> None:
    """Rule edit (an emptied field becomes "any") and delete, filter delete, session
    edit, sources added and removed, disable and enable, session delete."""
    sign_in(page, server)
    page.click("text=Mirror filters")
    page.fill("#create-name", "edit-filter")
    page.click("#filter-create button")
    filter_id = page.url.rsplit("/", 1)[1]
    fill_form(page, "rule", {**SEED_RULE, "priority": "7", "description": "first"})
    page.click("#rule-create button")
    page.click("#inbound-rules >> text=Edit")
    page.fill("#edit-priority", "x7")
    page.click("#rule-edit button")
    with admin_client(server) as client:
        rule_id = client.show_filter(filter_id)["ingress_rules"][0]["id"]
        expected = api_refusal(lambda: client.update_rule(rule_id, priority="x7"))  # type: ignore[arg-type]
    expect(page.locator("#edit-priority-error")).to_contain_text(expected)
    page.fill("#edit-priority", "8")
    page.fill("#edit-destination_port_range", "")
    page.fill("#edit-description", "edited")
    page.click("#rule-edit button")
    expect(page.locator("#inbound-rules tbody tr td").nth(0)).to_have_text("8")
    with admin_client(server) as client:
        rule = client.show_rule(rule_id)
    assert (rule["priority"], rule["description"]) == (8, "edited")
    assert "destination_port_range" not in rule or rule["destination_port_range"] is None

    page.click("text=Mirror sessions")
    page.fill("#create-name", "edit-session")
    page.fill("#create-priority", "5")
    page.select_option("#create-traffic_mirror_filter_id", label="edit-filter")
    page.select_option("#create-traffic_mirror_sources", label="ECS-test/eth0")
    page.select_option("#create-traffic_mirror_target_id", label="ECS-target/eth0")
    page.click("#session-create button")
    session_id = page.url.rsplit("/", 1)[1]
    page.fill("#edit-packet_length", "128")
    page.click("#session-edit button")
    expect(page.locator("main")).to_contain_text("packet length 128")
    page.select_option("#add-sources", label="ECS-source/eth0")
    page.click("#sources-add button")
    page.check("#sources-remove input[type=checkbox] >> nth=0")
    page.click("#sources-remove button")
    page.click("#toggle-enabled")
    expect(page.locator("#session-name .status")).to_have_text("Disabled")
    with admin_client(server) as client:
        shown = client.show_session(session_id)
        ports = {p["id"]: p["binding:host_id"] for p in client.iter_ports()}
    assert [ports[p] for p in shown["traffic_mirror_sources"]] == ["ECS-source"]
    assert (shown["packet_length"], shown["enabled"]) == (128, False)
    page.click("#toggle-enabled")
    expect(page.locator("#session-name .status")).to_have_text("Enabled")

    # A filter in use cannot be deleted: the API says so, on the filter's page.
    page.goto(f"{server.endpoint}/console/filters/{filter_id}")
    page.fill("#delete-confirm", "delete")
    page.click("#filter-delete button")
    expect(page.locator("#delete-error")).to_be_visible()
    page.goto(f"{server.endpoint}/console/sessions/{session_id}")
    page.fill("#delete-confirm", "delete")
    page.click("#session-delete button")
    expect(page).to_have_url(re.compile(r"/console/sessions$"))
    page.goto(f"{server.endpoint}/console/rules/{rule_id}")
    page.click("#rule-delete button")
    expect(page.locator("#inbound-rules")).to_contain_text("No inbound rules.")
    page.fill("#delete-confirm", "delete")
    page.click("#filter-delete button")
    expect(page).to_have_url(re.compile(r"/console/filters$"))
    with admin_client(server) as client:
        assert [f for f in client.iter_filters() if f["id"] == filter_id] == []


def agent_client(server: ApiServer, host: str) -> VxtapClient:
    agent = server.agents[host]
    return VxtapClient(server.endpoint, agent["ak"], agent["sk"], agent["project_id"])


def report_as_agent(server: ApiServer, host: str, apply_error: str | None = None) -> str:
    """What `host`'s agent does after an apply: fetch its desired state with its own key,
    report that revision applied (or failed with `apply_error`); the revision."""
    with agent_client(server, host) as client:
        revision = client.desired_state(host).revision
        client.report_status(
            host,
            agent_version="0.1.0",
            applied_revision=revision,
            apply_error=apply_error,
            drift_repairs=0,
        )
    return revision


APPLY_ERROR = "nft: Error: Could not process rule: No such file or directory (table inet vxtap)"


def test_the_hosts_page_and_a_sessions_hosts_follow_the_agents_reports(
    server: ApiServer, page: Page, shots: Callable[[Page, str], None]
) -> None:
    """Status reports as agents send them (PUT .../status, each with its own host's key);
    behind is real: ECS-test reported a revision, then a new session changed its state."""
    sign_in(page, server)
    page.click("text=Hosts")
    expect(page).to_have_url(re.compile(r"/console/hosts$"))
    for host in SEED_PORTS:  # credentials-file keys, no report yet (or an earlier test's)
        expect(page.locator(f"#hosts [data-host='{host}']")).to_contain_text("credentials file")

    # The page is open while this happens; it must pick it up by itself.
    before = report_as_agent(server, "ECS-test")
    with admin_client(server) as client:
        ports = {f"{p['binding:host_id']}/{p['name']}": p["id"] for p in client.iter_ports()}
        fleet_filter = client.create_filter("fleet-filter")
        session = client.create_session(
            "fleet-session",
            filter_id=fleet_filter["id"],
            sources=[ports["ECS-source/eth0"], ports["ECS-test/eth0"]],
            target_id=ports["ECS-target/eth0"],
            priority=9,
        )
    current = report_as_agent(server, "ECS-source")
    report_as_agent(server, "ECS-target", apply_error=APPLY_ERROR)
    with admin_client(server) as client:
        assert client.show_host("ECS-test")["desired_revision"] != before

    refreshed = {"timeout": 25_000}  # the hosts page refreshes every 10 s
    expect(page.locator("#hosts [data-sync='ECS-source']")).to_have_text("in sync", **refreshed)
    expect(page.locator("#hosts [data-sync='ECS-test']")).to_have_text("behind", **refreshed)
    expect(page.locator("#hosts [data-sync='ECS-target']")).to_have_text("failing", **refreshed)
    expect(page.locator("#hosts-summary")).to_have_text(
        "3 hosts: 1 in sync, 1 behind, 1 failing, 0 without a report"
    )
    expect(page.locator("[data-host-note='ECS-target']")).to_have_text(
        f"last apply failed: {APPLY_ERROR}"
    )
    expect(page.locator("[data-host-note='ECS-test']")).to_contain_text(f"applied {before}")
    expect(page.locator("[data-host='ECS-source']")).to_contain_text(current)
    assert page.locator("[data-host-note='ECS-source']").count() == 0
    # Behind and failing stand out: their rows are tinted, an in-sync row is not.
    tint = "e => getComputedStyle(e.querySelector('td')).backgroundColor"
    white = page.eval_on_selector("#hosts [data-host='ECS-source']", tint)
    for host in ("ECS-test", "ECS-target"):
        assert page.eval_on_selector(f"#hosts [data-host='{host}']", tint) != white
    shots(page, "hosts")

    # Host detail: its status, its ports and what uses them.
    page.click("#hosts >> text=ECS-target")
    expect(page.locator("#host-name")).to_have_text("ECS-target")
    expect(page.locator("#host-status .apply-error")).to_contain_text(APPLY_ERROR)
    expect(page.locator("#host-ports")).to_contain_text("target of fleet-session")
    shots(page, "host")

    # The session's page: its source hosts and whether each applied the latest change.
    page.goto(f"{server.endpoint}/console/sessions/{session['id']}")
    hosts = page.locator("#source-hosts")
    expect(hosts.locator("[data-source-host]")).to_have_count(2)
    expect(hosts.locator("[data-sync='ECS-source']")).to_have_text("in sync")
    expect(hosts.locator("[data-sync='ECS-test']")).to_have_text("behind")
    # ECS-test's agent now applies and fails; the open page shows it by itself.
    report_as_agent(server, "ECS-test", apply_error=APPLY_ERROR)
    expect(hosts.locator("[data-sync='ECS-test']")).to_have_text("failing", timeout=15_000)
    expect(hosts.locator("[data-host-note='ECS-test']")).to_contain_text(APPLY_ERROR)
    report_as_agent(server, "ECS-test")
    expect(hosts.locator("[data-sync='ECS-test']")).to_have_text("in sync", timeout=15_000)
    expect(hosts.locator("[data-host-note]")).to_have_count(0)

    page.goto(f"{server.endpoint}/console/hosts/no-such-host")
    expect(page.locator("main .refusal")).to_contain_text("no-such-host is not enrolled")
    # A hostile name: the API's refusal, shown as text (escaped), not as markup.
    page.goto(f"{server.endpoint}/console/hosts/%3Cb%3Ex")
    expect(page.locator("main .refusal")).to_contain_text("must be a host name")
    expect(page.locator("main .refusal")).to_contain_text("<b>x")
    assert page.locator("main .refusal b").count() == 0
    with admin_client(server) as client:
        client.delete_session(session["id"])
        client.delete_filter(fleet_filter["id"])


def test_explain_names_the_member_of_a_target_group(server: ApiServer, page: Page) -> None:
    """A packet of an elb session: the page names the group and the member its copy goes
    to, word for word as `vxtap explain` does (the second project, so that the other
    tests' counts of the first stay as they are)."""
    with admin_client(server, 1) as client:
        (source,) = client.register_ports("tg-src", [Interface(device="eth0", ipv4=("10.7.0.1",))])
        collectors = [
            client.create_port("tg-col", f"eth{i}", ipv4=[f"10.7.1.{i}"]).id for i in range(3)
        ]
        group = client.create_target_group("ids", ports=collectors)
        flt = client.create_filter("all")
        client.create_rule(flt["id"], direction="ingress", priority=1, protocol="all")
        client.create_session(
            "to-ids", filter_id=flt["id"], sources=[source.id], target_id=group["id"],
            target_type="elb", priority=1,
        )  # fmt: skip
    # Healthy as the server's checker would mark members its collectors heard from; the
    # heartbeat an hour ahead keeps the checker from marking them down meanwhile.
    engine = create_engine(server.db_url)
    heard = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1)
    try:
        with engine.begin() as db:
            db.execute(update(MemberRow).values(healthy=True, last_heartbeat=heard))
    finally:
        engine.dispose()

    sign_in(page, server, server.other_ak, server.other_sk)
    explain_in_the_page(
        page, "tg-src/eth0", protocol="tcp", src="10.7.0.9", sport="40000", dst="10.7.0.1",
        dport="443",
    )  # fmt: skip
    expect(page.locator("#verdict")).to_have_text("Mirrored")
    explain = ["--port", "tg-src/eth0", "--direction", "ingress", "--protocol", "tcp"]
    explain += ["--src", "10.7.0.9", "--sport", "40000", "--dst", "10.7.0.1", "--dport", "443"]
    cli = subprocess.run(
        [sys.executable, "-m", "vxtap", "explain", *explain, "--json"],
        env={**os.environ, **cli_env(server, project=1)},
        capture_output=True,
        text=True,
        check=True,
    )
    member = json.loads(cli.stdout)["target_group"]["member"]
    assert member in collectors
    text = page.locator("#verdict-text").inner_text()
    assert f"to target group {group['id']}, member {member} (number" in text
