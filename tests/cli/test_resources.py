"""`vxtap filter|rule|session|port` driven as a user would, against a real `vxtap server`.

In-process through click's CliRunner (the server is a real subprocess), plus the
installed `vxtap` executable for what only a real process shows (no traceback).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from vxtap.cli import main
from vxtap.client import VxtapClient
from vxtap.model import Counter

UNKNOWN_ID = "00000000-0000-0000-0000-000000000000"
ENV_NAMES = ("VXTAP_ENDPOINT", "VXTAP_AK", "VXTAP_SK", "VXTAP_PROJECT_ID", "VXTAP_CREDENTIALS")


@dataclass
class Cli:
    """Runs `vxtap ...` in-process with the given environment (nothing inherited)."""

    env: dict[str, str | None]
    runner: CliRunner = field(default_factory=CliRunner)

    def run(self, *args: str, env: dict[str, str | None] | None = None) -> Result:
        return self.runner.invoke(
            main, list(args), env={**self.env, **(env or {})}, prog_name="vxtap"
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def fails(self, *args: str, env: dict[str, str | None] | None = None) -> str:
        """Run a command that must fail with one `error: ...` line; return that line."""
        result = self.run(*args, env=env)
        assert result.exit_code != 0, (args, result.output)
        assert isinstance(result.exception, SystemExit), result.exception  # no traceback
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert result.stdout == ""
        return lines[0]


@pytest.fixture
def cli(api_server: Any) -> Cli:
    env: dict[str, str | None] = dict.fromkeys(ENV_NAMES)
    env.update(
        VXTAP_ENDPOINT=api_server.endpoint,
        VXTAP_AK=api_server.ak,
        VXTAP_SK=api_server.sk,
        VXTAP_PROJECT_ID=api_server.project_id,
    )
    return Cli(env)


@pytest.fixture
def client(api_server: Any) -> Iterator[VxtapClient]:
    with VxtapClient(api_server.endpoint, api_server.ak, api_server.sk, api_server.project_id) as c:
        yield c


def _host(role: str) -> str:
    return f"{role}-{uuid.uuid4().hex[:6]}"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_seed_scenario_end_to_end(cli: Cli, client: VxtapClient) -> None:
    source_host, target_host = _host("ecs-source"), _host("ecs-target")
    source = cli.json(
        "port", "create", "--host", source_host, "--device", "eth0",
        "--ip", "192.168.0.230", "--mac", "fa:16:3e:7e:d6:bc",
    )  # fmt: skip
    target = cli.json(
        "port", "create", "--host", target_host, "--device", "eth0", "--ip", "192.168.0.164"
    )
    assert (source["host"], source["device"], source["ipv4"]) == (
        source_host,
        "eth0",
        ["192.168.0.230"],
    )

    mirror_filter = cli.json("filter", "create", "seed-filter", "--description", "inbound TCP 1234")
    rule = cli.json(
        "rule", "create", "--filter", mirror_filter["id"], "--direction", "ingress",
        "--priority", "1", "--protocol", "tcp", "--action", "accept", "--ethertype", "ipv4",
        "--source-cidr", "192.168.0.161/32", "--destination-cidr", "192.168.0.230/32",
        "--destination-ports", "1234-1234",
    )  # fmt: skip
    assert (rule["protocol"], rule["ethertype"], rule["direction"]) == ("TCP", "IPv4", "ingress")
    assert rule["destination_port_range"] == "1234-1234"

    session = cli.json(
        "session", "create", "seed-session", "--filter", mirror_filter["id"],
        "--source", f"{source_host}/eth0", "--target", f"{target_host}/eth0", "--priority", "1",
    )  # fmt: skip
    assert session["traffic_mirror_sources"] == [source["id"]]
    assert session["traffic_mirror_target_id"] == target["id"]
    assert (session["virtual_network_id"], session["packet_length"], session["enabled"]) == (
        1,
        96,
        True,
    )

    # What the agent on ECS-source will be told to do.
    state = client.desired_state(source_host)
    assert [s.id for s in state.sessions] == [session["id"]]
    assert [t.address for t in state.targets] == ["192.168.0.164"]

    # The tables people read.
    shown = cli.ok("filter", "show", mirror_filter["id"])
    for text in ("seed-filter", "ingress", "TCP", "192.168.0.161/32", "192.168.0.230/32"):
        assert text in shown
    assert "1234-1234" in shown and "any" in shown  # source ports: absent = any
    shown = cli.ok("session", "show", session["id"])
    assert f"{source_host}/eth0 ({source['id']})" in shown
    assert f"{target_host}/eth0 ({target['id']})" in shown
    listed = cli.ok("session", "list")
    assert session["id"] in listed and f"{source_host}/eth0" in listed


def test_json_round_trips_and_every_command(cli: Cli, client: VxtapClient) -> None:
    host_a, host_b = _host("a"), _host("b")
    port_a0 = cli.json("port", "create", "--host", host_a, "--device", "eth0", "--ip", "10.0.0.1")
    port_a1 = cli.json("port", "create", "--host", host_a, "--device", "eth1", "--ip", "fd00::2")
    assert port_a1["ipv6"] == ["fd00::2"] and port_a1["ipv4"] == []
    port_b = cli.json("port", "create", "--host", host_b, "--device", "eth0", "--ip", "10.0.0.2")

    # filters
    created = cli.json("filter", "create", "f1")
    assert cli.json("filter", "show", created["id"]) == created
    assert created["id"] in [f["id"] for f in cli.json("filter", "list")]
    assert [f["id"] for f in cli.json("filter", "list", "--name", "f1")] == [created["id"]]
    renamed = cli.json("filter", "update", created["id"], "--name", "f2", "--description", "d")
    assert (renamed["name"], renamed["description"]) == ("f2", "d")
    assert "f2" in cli.ok("filter", "list")

    # rules
    rule = cli.json(
        "rule", "create", "--filter", created["id"], "--direction", "egress", "--priority", "5",
        "--protocol", "udp", "--source-ports", "53-53",
    )  # fmt: skip
    assert cli.json("rule", "show", rule["id"]) == rule
    assert [r["id"] for r in cli.json("rule", "list", "--filter", created["id"])] == [rule["id"]]
    assert cli.json("rule", "list", "--filter", created["id"], "--direction", "ingress") == []
    changed = cli.json("rule", "update", rule["id"], "--priority", "6", "--action", "reject")
    assert (changed["priority"], changed["action"]) == (6, "reject")
    assert "53-53" in cli.ok("rule", "show", rule["id"])
    cleared = cli.json("rule", "update", rule["id"], "--source-ports", "any")
    assert not cleared.get("source_port_range")
    assert "53-53" not in cli.ok("rule", "show", rule["id"])
    assert rule["id"] in cli.ok("rule", "list")

    # sessions
    session = cli.json(
        "session", "create", "s1", "--filter", created["id"], "--source", port_a0["id"],
        "--target", f"{host_b}/eth0", "--priority", "2", "--vni", "7", "--packet-length", "128",
        "--disabled",
    )  # fmt: skip
    assert (session["virtual_network_id"], session["packet_length"], session["enabled"]) == (
        7,
        128,
        False,
    )
    assert cli.json("session", "show", session["id"]) == session
    assert [s["id"] for s in cli.json("session", "list", "--vni", "7", "--disabled")] == [
        session["id"]
    ]
    assert cli.json("session", "list", "--target", f"{host_a}/eth0") == []
    updated = cli.json("session", "update", session["id"], "--enabled", "--vni", "8")
    assert (updated["enabled"], updated["virtual_network_id"]) == (True, 8)
    added = cli.json("session", "add-sources", session["id"], f"{host_a}/eth1")
    assert added["traffic_mirror_sources"] == [port_a0["id"], port_a1["id"]]
    removed = cli.json("session", "remove-sources", session["id"], f"{host_a}/eth0")
    assert removed["traffic_mirror_sources"] == [port_a1["id"]]

    # stats: what agents reported, summed
    client.report_counters(
        host_a,
        {session["id"]: Counter(packets=5, bytes=640)},
        {rule["id"]: Counter(packets=5, bytes=640)},
    )
    stats = cli.json("session", "stats", session["id"])
    assert stats["sessions"] == {session["id"]: {"packets": 5, "bytes": 640}}
    assert stats["rules"] == {rule["id"]: {"packets": 5, "bytes": 640}}
    table = cli.ok("session", "stats")
    assert session["id"] in table and "640" in table and host_a in table

    # ports
    listed = cli.json("port", "list", "--host", host_a)
    assert sorted(p["name"] for p in listed) == ["eth0", "eth1"]
    assert cli.json("port", "show", f"{host_b}/eth0")["id"] == port_b["id"]
    assert cli.json("port", "show", port_b["id"])["binding:host_id"] == host_b
    assert "10.0.0.1" in cli.ok("port", "list")
    assert host_b in cli.ok("port", "show", port_b["id"])

    # deletes, in the order the references allow
    assert "deleted session" in cli.ok("session", "delete", session["id"])
    assert "deleted rule" in cli.ok("rule", "delete", rule["id"])
    assert "deleted filter" in cli.ok("filter", "delete", created["id"])
    out = cli.ok("port", "delete", f"{host_a}/eth0", port_a1["id"], port_b["id"])
    assert out.count("deleted port") == 3
    assert cli.json("port", "list", "--host", host_a) == []


def test_limit_and_marker_page_through_lists(cli: Cli) -> None:
    ids = [cli.json("filter", "create", f"paged-{i}")["id"] for i in range(3)]
    everything = [f["id"] for f in cli.json("filter", "list")]
    assert set(ids) <= set(everything)
    first = cli.json("filter", "list", "--limit", "2")
    assert [f["id"] for f in first] == everything[:2]
    rest = cli.json("filter", "list", "--marker", first[-1]["id"])
    assert [f["id"] for f in rest] == everything[2:]


def test_api_errors_are_one_line_and_change_nothing(cli: Cli) -> None:
    for command in ("filter", "rule", "session"):
        assert cli.fails(command, "show", UNKNOWN_ID).startswith("error: VPC.")
        assert cli.fails(command, "delete", UNKNOWN_ID).startswith("error: VPC.")
    assert cli.fails("session", "stats", UNKNOWN_ID).startswith("error: VPC.")
    mirror_filter = cli.json("filter", "create", "err")
    line = cli.fails(
        "rule", "create", "--filter", mirror_filter["id"], "--direction", "ingress",
        "--priority", "1", "--protocol", "tcp", "--source-cidr", "300.1.1.1/33",
    )  # fmt: skip
    assert line.startswith("error: VPC.") and "source_cidr_block" in line
    assert cli.json("rule", "list", "--filter", mirror_filter["id"]) == []
    line = cli.fails(
        "rule", "create", "--filter", mirror_filter["id"], "--direction", "ingress",
        "--priority", "1", "--protocol", "icmp", "--destination-ports", "80-80",
    )  # fmt: skip
    assert line.startswith("error: VPC.")
    assert cli.json("filter", "show", mirror_filter["id"])["ingress_rules"] == []


def test_port_create_refuses_an_address_that_is_not_one_hosts(cli: Cli) -> None:
    host = _host("flood")
    for address, kind in (("255.255.255.255", "limited broadcast"), ("ff02::1", "multicast")):
        line = cli.fails("port", "create", "--host", host, "--device", "eth0", "--ip", address)
        assert line.startswith("error: VPC.0002") and kind in line, line
        assert "port.ipv" in line
    assert cli.json("port", "list", "--host", host) == []


def test_in_use_and_unknown_port_names(cli: Cli) -> None:
    host = _host("inuse")
    source = cli.json("port", "create", "--host", host, "--device", "eth0", "--ip", "10.1.0.1")
    cli.json("port", "create", "--host", host, "--device", "eth9", "--ip", "10.1.0.2")
    mirror_filter = cli.json("filter", "create", "inuse")
    cli.json(
        "session", "create", "s", "--filter", mirror_filter["id"], "--source", source["id"],
        "--target", f"{host}/eth9", "--priority", "1",
    )  # fmt: skip
    assert cli.fails("filter", "delete", mirror_filter["id"]).startswith("error: VPC.")
    assert cli.fails("port", "delete", f"{host}/eth9").startswith("error: VPC.")

    line = cli.fails("port", "show", f"{host}/eth5")
    assert line == f"error: no port '{host}/eth5': host '{host}' has eth0, eth9"
    line = cli.fails("port", "show", "nohost-xyz/eth0")
    assert "no ports registered for host 'nohost-xyz'" in line
    assert "expected a port id or HOST/DEVICE" in cli.fails("port", "show", "a/b/c")
    assert cli.fails("port", "show", UNKNOWN_ID).startswith("error: VPC.")


def test_local_input_errors(cli: Cli) -> None:
    assert "is not an IPv4 or IPv6 address" in cli.fails(
        "port", "create", "--host", "h", "--device", "d", "--ip", "10.0.0.300"
    )
    assert "nothing to update" in cli.fails("filter", "update", UNKNOWN_ID)
    assert "nothing to update" in cli.fails("session", "update", UNKNOWN_ID)
    assert "nothing to update" in cli.fails("rule", "update", UNKNOWN_ID)
    line = cli.fails("rule", "create", "--filter", "x", "--direction", "in", "--priority", "1")
    assert "'--direction'" in line and "vxtap rule create --help" in line
    assert "Missing option '--source'" in cli.fails("session", "create", "s", "--filter", "f")


def test_connection_and_credential_errors(cli: Cli, api_server: Any, tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    line = cli.fails("filter", "list", env={"VXTAP_ENDPOINT": endpoint})
    assert line.startswith(f"error: cannot reach vxtap server at {endpoint}")

    no_credentials = dict.fromkeys(("VXTAP_AK", "VXTAP_SK", "VXTAP_PROJECT_ID"))
    line = cli.fails("filter", "list", env=no_credentials)
    assert line.startswith("error: no credentials: --ak, --sk, --project-id not given")

    line = cli.fails("filter", "list", env={"VXTAP_SK": "wrong-secret"})
    assert line.startswith("error: VPC.")

    # The server's own credentials file works on its own...
    file_only = {**no_credentials, "VXTAP_CREDENTIALS": str(api_server.credentials_path)}
    assert isinstance(json.loads(cli.run("filter", "list", "--json", env=file_only).stdout), list)
    result = cli.run(
        "filter", "list", "--json", "--credentials", str(api_server.credentials_path),
        env=no_credentials,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # --project-id picks that project's key from the file: another project sees nothing of ours.
    ours = cli.json("filter", "create", "scoped")
    other = {**file_only, "VXTAP_PROJECT_ID": api_server.other_project_id}
    result = cli.run("filter", "list", "--json", env=other)
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    assert cli.fails("filter", "show", ours["id"], env=other).startswith("error: VPC.")
    # ...and bad files are named.
    line = cli.fails(
        "filter", "list", "--credentials", str(tmp_path / "nope.json"), env=no_credentials
    )
    assert "cannot read credentials file" in line
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert "is accessible by others (mode 0644)" in cli.fails(
        "filter", "list", "--credentials", str(broken), env=no_credentials
    )
    broken.chmod(0o600)
    assert "not valid JSON" in cli.fails(
        "filter", "list", "--credentials", str(broken), env=no_credentials
    )
    line = cli.fails(
        "filter", "list", "--credentials", str(api_server.credentials_path),
        env={**no_credentials, "VXTAP_AK": "not-there"},
    )  # fmt: skip
    assert "access key 'not-there' is not in credentials file" in line
    assert "not an http" in cli.fails("filter", "list", env={"VXTAP_ENDPOINT": "127.0.0.1:9"})


def test_the_installed_command_prints_one_line_not_a_traceback(api_server: Any) -> None:
    executable = shutil.which("vxtap", path=os.path.dirname(sys.executable))
    assert executable is not None
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    env.update(
        VXTAP_ENDPOINT=api_server.endpoint,
        VXTAP_AK=api_server.ak,
        VXTAP_SK=api_server.sk,
        VXTAP_PROJECT_ID=api_server.project_id,
    )
    for args, starts in (
        (["session", "show", UNKNOWN_ID], "error: VPC."),
        (["filter", "list", "--endpoint", f"http://127.0.0.1:{_closed_port()}"], "error: cannot"),
    ):
        done = subprocess.run(
            [executable, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 1
        assert done.stdout == ""
        assert done.stderr.startswith(starts) and done.stderr.count("\n") == 1, done.stderr
    created = subprocess.run(
        [executable, "filter", "create", "from-a-shell", "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(created.stdout)["name"] == "from-a-shell"


def test_tables_in_a_pipe_are_plain_columns(cli: Cli) -> None:
    mirror_filter = cli.json("filter", "create", "plain")
    rule = cli.json(
        "rule", "create", "--filter", mirror_filter["id"], "--direction", "ingress",
        "--priority", "3", "--protocol", "udp", "--source-cidr", "any",
        "--destination-ports", "any",
    )  # fmt: skip
    assert "source_cidr_block" not in rule or not rule["source_cidr_block"]
    for args in (["filter", "show", mirror_filter["id"]], ["rule", "list"], ["filter", "list"]):
        lines = cli.ok(*args).splitlines()
        assert all(line == line.rstrip() for line in lines), args
        assert not any(set(line) <= set("─ ") and line for line in lines), args
    row = next(line for line in cli.ok("rule", "list").splitlines() if rule["id"] in line)
    assert row.split() == [
        rule["id"], "ingress", "3", "accept", "IPv4", "UDP", "any", "any", "any", "any",
        mirror_filter["id"],
    ]  # fmt: skip
