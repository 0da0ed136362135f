"""The console while a real `vxtap agent` mirrors real traffic, all in namespaces:

    mgmt (vxtap server, Chromium) m0 ══ mg0  ECS-source (vxtap agent, eth0 192.168.0.230)
    ECS-test (eth0 192.168.0.161) eth0 ══ eth0  ECS-source
    ECS-source u0 ══ eth0  ECS-target (10.99.0.2, a port made by hand)

The seed's filter, rule and session are made through the console's forms in headless
Chromium, which runs inside the management namespace (the only place the server is
reachable from, as in `vxtap lab`); ECS-test then opens TCP connections to port 1234
of ECS-source, the agent's kernel counters count the mirrored packets, and the
session's page shows them rising. The fleet status follows the agent: in sync once it
applied the session; behind once the agent is stopped and the session is edited; failing
from a status report sent with the agent's key as the agent sends it after a failed
apply; in sync again once the agent is started again and applies the edit.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from support.console import (
    CHROMIUM,
    chromium,
    create_seed_filter,
    create_seed_session,
    number,
    sign_in,
)
from vxtap import __version__
from vxtap.client import VxtapClient
from vxtap.dataplane.kernel import Dataplane
from vxtap.netns import Namespace, NamespaceThread, temporary_namespaces, veth
from vxtap.wire.answers import HostOut

HOST = "ECS-source"
HOSTS_LINK = "header nav a[href='/console/hosts']"
SERVER_ADDRESS = "10.202.0.1"
ENDPOINT = f"http://{SERVER_ADDRESS}:9696"
VXTAP = [sys.executable, "-m", "vxtap"]
NOTHING_YET = re.compile(r"^(–|0)$")
# What `nft` answers when the agent's table vanished under it (the agent reports
# "revision R: <error>" after a failed apply).
APPLY_FAILURE = "Error: Could not process rule: No such file or directory (table inet vxtap)"
# Runs in ECS-test: a TCP connection attempt to ECS-source:1234 every 50 ms (no one
# listens, so each is one SYN in and one RST out: inbound TCP 1234, the seed's rule).
KNOCKER = """
import socket, time
while True:
    try:
        socket.create_connection(("192.168.0.230", 1234), timeout=0.2).close()
    except OSError:
        pass
    time.sleep(0.05)
"""


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def _address(ns: Namespace, device: str, cidr: str) -> None:
    ns.run(["sysctl", "-qw", f"net.ipv6.conf.{device}.disable_ipv6=1"])
    ns.run(["ip", "addr", "add", cidr, "dev", device])


@pytest.mark.netns
def test_counters_on_the_page_rise_while_the_agent_mirrors(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    assert CHROMIUM
    admin = {"ak": "ADMIN" + secrets.token_hex(6), "sk": secrets.token_hex(16), "project_id": "p1"}
    agent = {**admin, "ak": "AGENT" + secrets.token_hex(6), "host": "ECS-source"}
    agent["sk"] = secrets.token_hex(16)
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps([admin, agent]))
    credentials.chmod(0o600)
    agent_credentials = tmp_path / "agent.json"
    agent_credentials.write_text(json.dumps([agent]))
    agent_credentials.chmod(0o600)
    processes: list[subprocess.Popen[bytes]] = []
    with temporary_namespaces("cmg", "csrc", "ctst", "ctgt") as (mgmt, source, test, target):
        veth(mgmt, "m0", source, "mg0")
        veth(test, "eth0", source, "eth0")
        veth(source, "u0", target, "eth0")
        for ns, device, cidr in (
            (mgmt, "m0", f"{SERVER_ADDRESS}/24"),
            (source, "mg0", "10.202.0.2/24"),
            (test, "eth0", "192.168.0.161/24"),
            (source, "eth0", "192.168.0.230/24"),
            (source, "u0", "10.99.0.1/24"),
            (target, "eth0", "10.99.0.2/24"),
        ):
            _address(ns, device, cidr)
        in_mgmt = NamespaceThread(mgmt)

        def api(call: Callable[[VxtapClient], object]) -> object:
            def run() -> object:
                with VxtapClient(ENDPOINT, admin["ak"], admin["sk"], admin["project_id"]) as c:
                    return call(c)

            return in_mgmt(run)

        try:
            server = [*VXTAP, "server", "--listen", f"{SERVER_ADDRESS}:9696"]
            server += ["--db", f"sqlite:///{tmp_path / 'vxtap.db'}"]
            server += ["--credentials", str(credentials)]
            # The child keeps its own descriptor of each log; ours are closed at once.
            with (tmp_path / "server.log").open("ab") as log:
                processes.append(mgmt.popen(server, stdout=log, stderr=log))

            def answers() -> bool:
                try:
                    return in_mgmt(lambda: httpx.get(f"{ENDPOINT}/healthz").status_code) == 200
                except httpx.TransportError:
                    return False

            wait_for(answers, 30, "the server")
            agent_argv = [*VXTAP, "agent", "--server", ENDPOINT, "--host-name", "ECS-source"]
            agent_argv += ["--credentials", str(agent_credentials)]
            agent_argv += ["--state-dir", str(tmp_path / "agent-state")]

            def start_agent() -> subprocess.Popen[bytes]:
                with (tmp_path / "agent.log").open("ab") as agent_log:
                    started = source.popen(agent_argv, stdout=agent_log, stderr=agent_log)
                processes.append(started)
                return started

            agent_process = start_agent()
            api(lambda c: c.create_port("ECS-target", "eth0", ipv4=["10.99.0.2"]))

            def registered() -> bool:
                ports = api(lambda c: list(c.iter_ports()))
                assert isinstance(ports, list)
                return any(p["binding:host_id"] == "ECS-source" for p in ports)

            wait_for(registered, 30, "the agent to register ECS-source's ports")

            # Chromium in the management namespace: a wrapper that Playwright starts.
            wrapper = tmp_path / "chromium-in-mgmt"
            wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {mgmt.name} {CHROMIUM} "$@"\n')
            wrapper.chmod(0o755)
            with chromium(str(wrapper)) as browser:
                page = browser.new_page(viewport={"width": 1360, "height": 900})
                page.set_default_timeout(20_000)
                sign_in(page, ENDPOINT, admin["ak"], admin["sk"])
                create_seed_filter(page)
                session_id = create_seed_session(page)
                processes.append(test.popen([sys.executable, "-c", KNOCKER]))
                _watch_counters_rise(page, session_id)
                applied = _session_page_shows_it_applied(
                    page, lambda: api(lambda c: c.show_host(HOST))
                )
                keep = os.environ.get("VXTAP_CONSOLE_SCREENSHOTS")
                if keep:
                    page.wait_for_timeout(12_000)  # a few agent reports on the graph
                    page.screenshot(path=f"{keep}/console-session-agent.png", full_page=True)
                _hosts_page_shows_it_in_sync(page, applied)
                page.go_back()

                # Behind: the agent is stopped, and the session is edited in the console.
                agent_process.terminate()
                agent_process.wait(timeout=15)
                page.fill("#edit-packet_length", "128")
                page.click("#session-edit button")
                expect(page.locator("main")).to_contain_text("packet length 128")
                host_row = page.locator(f"#source-hosts [data-sync='{HOST}']")
                expect(host_row).to_have_text("behind")
                note = page.locator(f"#source-hosts [data-host-note='{HOST}']")
                expect(note).to_contain_text(f"applied {applied}")
                page.click(HOSTS_LINK)
                expect(page.locator(f"#hosts [data-sync='{HOST}']")).to_have_text("behind")

                # Failing: the agent's report after a failed apply, with the agent's key.
                edited = api(lambda c: c.show_host(HOST))
                assert isinstance(edited, dict)
                failure = f"revision {edited['desired_revision']}: {APPLY_FAILURE}"
                in_mgmt(lambda: _report_failed_apply(agent, applied, failure))
                refreshed = {"timeout": 25_000}  # the hosts page refreshes every 10 s
                expect(page.locator(f"#hosts [data-sync='{HOST}']")).to_have_text(
                    "failing", **refreshed
                )
                expect(page.locator(f"[data-host-note='{HOST}']")).to_have_text(
                    f"last apply failed: {failure}"
                )
                page.goto(f"{ENDPOINT}/console/sessions/{session_id}")
                expect(host_row).to_have_text("failing")
                expect(note).to_contain_text(failure)

                # The agent again: it applies the edit and reports; the open page follows.
                start_agent()
                expect(host_row).to_have_text("in sync", timeout=40_000)
                expect(note).to_have_count(0)
        finally:
            for process in reversed(processes):
                if process.poll() is None:
                    process.terminate()
                    try:
                        process.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
            in_mgmt.close()
            Dataplane(netns=source.name).cleanup()


def _watch_counters_rise(page: Page, session_id: str) -> None:
    packets = page.locator("#session-packets")
    # The agent applies the session, counts in the kernel, reports every 3 s.
    expect(packets).not_to_have_text(NOTHING_YET, timeout=40_000)
    first = number(packets.inner_text())
    expect(packets).not_to_have_text(packets.inner_text(), timeout=20_000)
    assert number(packets.inner_text()) > first
    expect(page.locator("#session-pps")).not_to_have_text(NOTHING_YET, timeout=20_000)
    rule_packets = page.locator("#session-inbound-rules [data-live$='/packets']")
    assert number(rule_packets.inner_text()) > 0
    expect(page.locator("[data-host-report='ECS-source']")).not_to_have_text("never")
    assert session_id in page.url


def _session_page_shows_it_applied(page: Page, fleet_status: Callable[[], object]) -> str:
    """The session's page shows the agent's host in sync with the server's revision
    (as the API's fleet status has it); that revision."""
    expect(page.locator(f"#source-hosts [data-sync='{HOST}']")).to_have_text("in sync")
    status = fleet_status()
    assert isinstance(status, dict)
    host: HostOut = status  # type: ignore[assignment]
    assert host["sync"] == "in sync" and host["applied_revision"] == host["desired_revision"]
    revision = host["desired_revision"]
    expect(page.locator(f"#source-hosts [data-source-host='{HOST}']")).to_contain_text(revision)
    return revision


def _hosts_page_shows_it_in_sync(page: Page, revision: str) -> None:
    page.click(HOSTS_LINK)
    row = page.locator(f"#hosts [data-host='{HOST}']")
    expect(row.locator(f"[data-sync='{HOST}']")).to_have_text("in sync")
    expect(row).to_contain_text(revision)
    expect(row).to_contain_text(__version__)
    expect(row).to_contain_text("credentials file")
    expect(page.locator(f"[data-host-note='{HOST}']")).to_have_count(0)


def _report_failed_apply(agent: dict[str, str], applied: str, failure: str) -> None:
    """PUT .../hosts/ECS-source/status as the agent sends it after a failed apply."""
    with VxtapClient(ENDPOINT, agent["ak"], agent["sk"], agent["project_id"]) as client:
        client.report_status(
            HOST, agent_version=__version__, applied_revision=applied,
            apply_error=failure, drift_repairs=0,
        )  # fmt: skip
