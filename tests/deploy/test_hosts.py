"""docs/deploy.md's set-up, from the wheel: a control plane and three hosts (two sources,
one collector) in network namespaces, each part installed with only its extra into a
fresh virtual environment outside the repository, each run as user nobody with only the
capabilities docs/deploy.md lists (the server none, the agents CAP_NET_ADMIN and
CAP_SYS_ADMIN, the collector CAP_NET_RAW), up to mirrored packets arriving.

What is not here yet: TLS and one credential per host (the agents use a project key).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from vxtap.netns import Namespace, veth

NOBODY = 65534
CONTROL, SOURCE1, SOURCE2, COLLECTOR = "10.9.0.1", "10.9.0.11", "10.9.0.12", "10.9.0.20"
ENDPOINT = f"http://{CONTROL}:9696"
KEY = {"ak": "AKDEPLOYTEST0001", "sk": "deploy-test-secret", "project_id": "p" * 32}
AGENT_CAPABILITIES = ("CAP_NET_ADMIN", "CAP_SYS_ADMIN")
COLLECTOR_CAPABILITIES = ("CAP_NET_RAW",)
VNI = 7


def as_nobody(capabilities: Sequence[str]) -> list[str]:
    caps = ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in capabilities)])
    return [
        "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
        f"--inh-caps={caps}", f"--ambient-caps={caps}", f"--bounding-set={caps}",
    ]  # fmt: skip


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a host that has no repository: no PYTHONPATH, no VXTAP_*."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("VXTAP_")}
    return {**env, **extra}


class Hosts:
    def __init__(self, make_namespace: Callable[[str], Namespace], home: Path) -> None:
        self.home = home
        self.switch = make_namespace("dsw")
        self.switch.run(["ip", "link", "add", "br0", "type", "bridge"])
        self.switch.run(["ip", "link", "set", "br0", "up"])
        self.ns: dict[str, Namespace] = {}
        for name, address in (("ctl", CONTROL), ("src1", SOURCE1), ("src2", SOURCE2),
                              ("tgt", COLLECTOR)):  # fmt: skip
            ns = self.ns[name] = make_namespace(f"d{name}")
            veth(ns, "eth0", self.switch, f"p-{name}")
            self.switch.run(["ip", "link", "set", f"p-{name}", "master", "br0"])
            ns.run(["ip", "addr", "add", f"{address}/24", "dev", "eth0"])
            ns.run(["ip", "link", "set", "lo", "up"])
        self.processes: list[subprocess.Popen[bytes]] = []

    def own_dir(self, name: str) -> Path:
        """A directory of user nobody's."""
        path = self.home / name
        path.mkdir(mode=0o700)
        os.chown(path, NOBODY, NOBODY)
        return path

    def start(self, host: str, argv: Sequence[str], log: Path, **env: str) -> None:
        with log.open("wb") as out:
            self.processes.append(
                self.ns[host].popen(
                    list(argv), stdout=out, stderr=subprocess.STDOUT, env=clean_env(**env), cwd="/"
                )
            )

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def hosts(make_namespace: Callable[[str], Namespace]) -> Iterator[Hosts]:
    home = Path(tempfile.mkdtemp(prefix="vxtap-hosts-"))
    home.chmod(0o755)
    made = Hosts(make_namespace, home)
    try:
        yield made
    finally:
        made.stop()
        shutil.rmtree(home)


def wait_for(what: str, check: Callable[[], bool], seconds: float, logs: Sequence[Path]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tails = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}" for log in logs)
    raise AssertionError(f"{what} within {seconds} s\n{tails}")


def test_server_two_agents_and_a_collector_from_the_wheel_mirror_packets(
    hosts: Hosts, install: Callable[[str | None], Path]
) -> None:
    started = time.monotonic()
    server_bin, agent_bin, collector_bin = install("server"), install(None), install("collector")
    credentials = hosts.own_dir("etc") / "credentials.json"
    credentials.write_text(json.dumps([KEY]))
    os.chown(credentials, NOBODY, NOBODY)
    credentials.chmod(0o600)
    logs = hosts.home / "logs"
    logs.mkdir()

    # Configured as docs/deploy.md does: a TOML file per part, the agents' credential
    # in VXTAP_CREDENTIALS (what the unit's LoadCredential= gives them).
    etc = hosts.home / "etc-vxtap"
    etc.mkdir()
    (etc / "server.toml").write_text(f'listen = "{CONTROL}:9696"\ncredentials = "{credentials}"\n')
    # The control plane: no capabilities at all.
    hosts.start(
        "ctl",
        [*as_nobody([]), str(server_bin / "vxtap"), "server"],
        logs / "server.log",
        VXTAP_STATE_DIR=str(hosts.own_dir("server")),
        VXTAP_SERVER_CONFIG=str(etc / "server.toml"),
    )

    def cli(*args: str) -> Any:
        out = subprocess.run(
            hosts.ns["ctl"].exec_argv([str(agent_bin / "vxtap"), *args, "--json"]),
            capture_output=True, text=True, timeout=60, cwd="/",
            env=clean_env(VXTAP_ENDPOINT=ENDPOINT, VXTAP_AK=KEY["ak"], VXTAP_SK=KEY["sk"],
                          VXTAP_PROJECT_ID=KEY["project_id"]),
        )  # fmt: skip
        assert out.returncode == 0, f"vxtap {' '.join(args)}: {out.stderr}"
        return json.loads(out.stdout)

    def server_answers() -> bool:
        probe = ["nc", "-z", "-w", "1", CONTROL, "9696"]
        return hosts.ns["ctl"].run(probe, check=False).returncode == 0

    wait_for("the server did not answer", server_answers, 60, [logs / "server.log"])

    # An agent without one of its capabilities says which, and stops.
    refused = subprocess.run(
        hosts.ns["src1"].exec_argv(
            [*as_nobody(["CAP_NET_ADMIN"]), str(agent_bin / "vxtap"), "agent", "--server",
             ENDPOINT, "--credentials", str(credentials), "--state-dir", str(hosts.home / "x")]
        ),
        capture_output=True, text=True, timeout=60, env=clean_env(), cwd="/",
    )  # fmt: skip
    assert (refused.returncode, refused.stderr) == (
        1,
        "error: missing kernel prerequisites: the capability CAP_SYS_ADMIN "
        "(bpf(2): finding the program's map again by id)\n",
    )

    # Two agents with exactly the documented capabilities.
    for host in ("src1", "src2"):
        (etc / f"agent-{host}.toml").write_text(
            f'server = "{ENDPOINT}"\nhost-name = "{host}"\n'
            f'state-dir = "{hosts.own_dir(f"agent-{host}")}"\n'
        )
        hosts.start(
            host,
            [*as_nobody(AGENT_CAPABILITIES), str(agent_bin / "vxtap"), "agent"],
            logs / f"agent-{host}.log",
            VXTAP_AGENT_CONFIG=str(etc / f"agent-{host}.toml"),
            VXTAP_CREDENTIALS=str(credentials),
        )
    # The collector: CAP_NET_RAW for its AF_PACKET ring; numba's cache where it may write.
    mirrors = logs / "collector.jsonl"
    hosts.start(
        "tgt",
        [*as_nobody(COLLECTOR_CAPABILITIES), str(collector_bin / "vxtap"), "collect", "-i",
         "eth0", "--json", "--ring-mb", "4"],
        mirrors, NUMBA_CACHE_DIR=str(hosts.own_dir("numba-cache")),
    )  # fmt: skip

    def ports() -> set[str]:
        listed = cli("port", "list")
        items = listed.get("ports", listed) if isinstance(listed, dict) else listed
        return {f"{p.get('binding:host_id')}/{p.get('name')}" for p in items}

    agent_logs = [logs / "agent-src1.log", logs / "agent-src2.log"]
    wait_for(
        "the agents did not register", lambda: {"src1/eth0", "src2/eth0"} <= ports(), 60, agent_logs
    )
    cli("port", "create", "--host", "tgt", "--device", "eth0", "--ip", COLLECTOR)
    filter_id = cli("filter", "create", "icmp-in")["id"]
    cli("rule", "create", "--filter", filter_id, "--direction", "ingress", "--priority", "1",
        "--protocol", "ICMP", "--action", "accept", "--ethertype", "IPv4")  # fmt: skip
    cli("session", "create", "deploy", "--filter", filter_id, "--source", "src1/eth0",
        "--source", "src2/eth0", "--target", "tgt/eth0", "--priority", "1",
        "--vni", str(VNI))  # fmt: skip

    def seen() -> set[str]:
        """The outer sources of the mirrored ICMP packets the collector printed."""
        hosts.ns["src2"].run(["ping", "-c", "1", "-W", "1", SOURCE1], check=False)
        found = set()
        for line in mirrors.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                packet = json.loads(line)
                if packet.get("vni") == VNI and packet.get("ip", {}).get("protocol") == 1:
                    found.add(packet["outer"]["src"])
        return found

    # src1 mirrors the echo request it receives, src2 the reply.
    wait_for(
        "no mirrored packet from both sources arrived",
        lambda: seen() == {SOURCE1, SOURCE2},
        60,
        [*agent_logs, mirrors, logs / "server.log"],
    )
    for log in [logs / "server.log", *agent_logs]:
        assert "Traceback" not in log.read_text(errors="replace"), log.name
    print(f"from the wheel to mirrored packets: {time.monotonic() - started:.1f} s")
