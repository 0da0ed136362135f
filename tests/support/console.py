"""Helpers of the console's browser tests (a plain module: conftest modules cannot be
imported): Chromium, signing in, the seed's forms."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM = shutil.which("chromium")
# The seed's inbound rule (the user's document; `vxtap lab show seed`), as the form takes it.
SEED_RULE = {
    "direction": "ingress",
    "priority": "1",
    "protocol": "TCP",
    "action": "accept",
    "ethertype": "IPv4",
    "source_cidr_block": "192.168.0.161/32",
    "destination_cidr_block": "192.168.0.230/32",
    "destination_port_range": "1234-1234",
}


@contextmanager
def chromium(executable: str | None = None) -> Iterator[Browser]:
    """Debian's Chromium (or a wrapper that starts it), headless; nothing is downloaded."""
    assert CHROMIUM, "Debian's chromium package is missing (scripts/setup.sh installs it)"
    with sync_playwright() as playwright:
        # --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(
            executable_path=executable or CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            launched.close()


def sign_in(page: Page, endpoint: str, ak: str, sk: str) -> None:
    page.goto(f"{endpoint}/console/signin")
    page.fill("#ak", ak)
    page.fill("#sk", sk)
    page.click("#signin")


def fill_form(page: Page, form: str, fields: dict[str, str]) -> None:
    for name, value in fields.items():
        selector = f"#{form}-{name}"
        if page.eval_on_selector(selector, "e => e.tagName") == "SELECT":
            page.select_option(selector, value)
        else:
            page.fill(selector, value)


def create_seed_filter(page: Page) -> str:
    """seed-filter and its inbound TCP rule through the forms; the filter's id."""
    page.click("text=Mirror filters")
    page.fill("#create-name", "seed-filter")
    page.click("#filter-create button")
    expect(page.locator("#filter-name")).to_have_text("seed-filter")
    filter_id = page.url.rsplit("/", 1)[1]
    fill_form(page, "rule", SEED_RULE)
    page.click("#rule-create button")
    expect(page.locator("#inbound-rules tbody tr")).to_have_count(1)
    return filter_id


def create_seed_session(page: Page) -> str:
    """seed-session (ECS-source/eth0 -> ECS-target/eth0, VNI 1, length 96, priority 1)."""
    page.click("text=Mirror sessions")
    page.fill("#create-name", "seed-session")
    page.fill("#create-priority", "1")
    page.fill("#create-virtual_network_id", "1")
    page.fill("#create-packet_length", "96")
    page.select_option("#create-traffic_mirror_filter_id", label="seed-filter")
    page.select_option("#create-traffic_mirror_sources", label="ECS-source/eth0")
    page.select_option("#create-traffic_mirror_target_id", label="ECS-target/eth0")
    page.click("#session-create button")
    expect(page.locator("#session-name")).to_contain_text("seed-session")
    return page.url.rsplit("/", 1)[1]


def number(text: str) -> int:
    return int(text.replace(",", ""))
