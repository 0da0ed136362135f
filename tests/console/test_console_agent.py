"""The console while a real `vxtap agent` mirrors real traffic, all in namespaces:

    mgmt (vxtap server, Chromium) m0 ══ mg0  ECS-source (vxtap agent, eth0 192.168.0.230)
    ECS-test (eth0 192.168.0.161) eth0 ══ eth0  ECS-source
    ECS-source u0 ══ eth0  ECS-target (10.99.0.2, a port made by hand)

The seed's filter, rule and session are made through the console's forms in headless
Chromium, which runs inside the management namespace (the only place the server is
reachable from, as in `vxtap lab`); ECS-test then opens TCP connections to port 1234
of ECS-source, the agent's kernel counters count the mirrored packets, and the
session's page shows them rising.
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
from console_support import (
    CHROMIUM,
    chromium,
    create_seed_filter,
    create_seed_session,
    number,
    sign_in,
)
from playwright.sync_api import Page, expect

from vxtap.client import VxtapClient
from vxtap.dataplane.kernel import Dataplane
from vxtap.netns import Namespace, NamespaceThread, temporary_namespaces, veth

SERVER_ADDRESS = "10.202.0.1"
ENDPOINT = f"http://{SERVER_ADDRESS}:9696"
VXTAP = [sys.executable, "-m", "vxtap"]
NOTHING_YET = re.compile(r"^(–|0)$")
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
            log = (tmp_path / "server.log").open("ab")
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
            agent_log = (tmp_path / "agent.log").open("ab")
            processes.append(source.popen(agent_argv, stdout=agent_log, stderr=agent_log))
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
                _see_the_host_in_sync(page)
                keep = os.environ.get("VXTAP_CONSOLE_SCREENSHOTS")
                if keep:
                    page.wait_for_timeout(12_000)  # a few agent reports on the graph
                    page.screenshot(path=f"{keep}/console-session-agent.png", full_page=True)
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


def _see_the_host_in_sync(page: Page) -> None:
    """The Hosts page shows the fleet status: the source's agent applied the session."""
    page.click("nav >> text=Hosts")
    expect(page.locator("[data-sync='ECS-source']")).to_contain_text("in sync", timeout=20_000)
    keep = os.environ.get("VXTAP_CONSOLE_SCREENSHOTS")
    if keep:
        page.screenshot(path=f"{keep}/console-hosts.png", full_page=True)
    page.go_back()
    page.reload()  # the session page says which hosts applied it (as of loading)
    expect(page.locator("[data-host-sync='ECS-source']")).to_have_text("in sync")


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
