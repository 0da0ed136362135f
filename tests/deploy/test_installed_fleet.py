"""docs/deploy.md's set-up, from the wheel: a control plane and three hosts (two sources,
one collector) in network namespaces, each part installed with only its extra into a
fresh virtual environment outside the repository, each run as user nobody with only the
capabilities docs/deploy.md lists (the server none, the agents CAP_NET_ADMIN and
CAP_SYS_ADMIN, the collector CAP_NET_RAW), configured with the guide's TOML files; the
server over HTTPS with a certificate of a throwaway CA, each agent with its own host
credential from `vxtap host add`, up to mirrored packets arriving and both agents shown
in sync by `vxtap host list`.

What systemd would do is done by hand, as the units say: the state directory is user
nobody's (StateDirectory= with DynamicUser=), the secrets the units hand over with
LoadCredential= are copied the way systemd copies them (root's, mode 0400, an ACL entry
for the service's user, in a directory of their own).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from support.deploy import guide_block
from vxtap.lab.certificates import make_certificates
from vxtap.netns import Namespace, veth

NOBODY = 65534
CONTROL, SOURCE1, SOURCE2, COLLECTOR = "10.9.0.1", "10.9.0.11", "10.9.0.12", "10.9.0.20"
ENDPOINT = f"https://{CONTROL}:9696"
SOURCES = {"src1": "web1", "src2": "web2"}  # namespace: host name (the guide's)
COLLECTOR_HOST = "collector1"
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


def guide_config(heading: str, first_line: str, replacements: dict[str, str]) -> str:
    """A config file of docs/deploy.md as written there, with the test's addresses and
    directories in place of the example's."""
    text = guide_block(heading, first_line)
    for example, here in replacements.items():
        assert example in text, f"docs/deploy.md's {first_line} no longer says {example!r}"
        text = text.replace(example, here)
    return text


def load_credential(directory: Path, name: str, source: Path) -> Path:
    """What systemd's LoadCredential=NAME:SOURCE gives a service of user nobody: a copy
    in the unit's credentials directory (root's, 0500), root's, mode 0400, readable by
    the service's user through an ACL entry (systemd's exec-credential.c does the same)."""
    if not directory.exists():
        directory.mkdir(mode=0o500)
        subprocess.run(["setfacl", "-m", f"u:{NOBODY}:rx", str(directory)], check=True)
    copy = directory / name
    copy.write_bytes(source.read_bytes())
    copy.chmod(0o400)
    subprocess.run(["setfacl", "-m", f"u:{NOBODY}:r", str(copy)], check=True)
    return copy


def test_server_two_agents_and_a_collector_from_the_wheel_mirror_packets(
    hosts: Hosts, install: Callable[[str | None], Path]
) -> None:
    started = time.monotonic()
    server_bin, agent_bin, collector_bin = install("server"), install(None), install("collector")
    logs = hosts.home / "logs"
    logs.mkdir()

    def etc(host: str) -> Path:
        """The host's /etc/vxtap (root's, as install-units makes it)."""
        path = hosts.home / f"etc-vxtap-{host}"
        path.mkdir(exist_ok=True)
        return path

    # Certificates: a CA of the deployment's and a certificate for the control plane's
    # address (the guide makes them with openssl; a throwaway CA here). ca.pem goes to
    # every host, the key stays on the control plane, root's, mode 0600.
    tls = make_certificates(etc("ctl") / "tls", names=["control.example"], addresses=[CONTROL])
    assert stat.S_IMODE(tls.key.stat().st_mode) == 0o600
    for host in SOURCES:
        shutil.copy(tls.ca, etc(host) / "ca.pem")

    # The control plane, configured with the guide's server.toml: it names the certificate
    # and the key as LoadCredential= hands it over (the drop-in of docs/deploy.md).
    server_credentials = hosts.home / "credentials-vxtap-server"
    key = load_credential(server_credentials, "server.key", tls.key)
    state = hosts.own_dir("server")  # StateDirectory=vxtap-server: the database, the keys
    server_toml = guide_config(
        "The control plane",
        "# /etc/vxtap/server.toml",
        {
            "0.0.0.0:9696": f"{CONTROL}:9696",
            "/etc/vxtap/tls/": f"{tls.cert.parent}/",
            "/run/credentials/vxtap-server.service/": f"{server_credentials}/",
        },
    )
    assert tomllib.loads(server_toml) == {
        "listen": f"{CONTROL}:9696", "tls-cert": str(tls.cert), "tls-key": str(key)
    }  # fmt: skip
    (etc("ctl") / "server.toml").write_text(server_toml)
    hosts.start(
        "ctl",
        [*as_nobody([]), str(server_bin / "vxtap"), "server"],
        logs / "server.log",
        VXTAP_STATE_DIR=str(state),  # the unit's Environment= line
        VXTAP_SERVER_CONFIG=str(etc("ctl") / "server.toml"),
    )

    def server_answers() -> bool:
        probe = ["nc", "-z", "-w", "1", CONTROL, "9696"]
        return hosts.ns["ctl"].run(probe, check=False).returncode == 0

    wait_for("the server did not answer", server_answers, 60, [logs / "server.log"])
    # Its first start made the administrators' key and the agent signing key, private.
    for made in ("credentials.json", "agent-signing.key"):
        assert stat.S_IMODE((state / made).stat().st_mode) == 0o600, made
        assert (state / made).stat().st_uid == NOBODY, made

    # The administrator, on the control plane as root, with the base install's CLI.
    admin_env = {
        "VXTAP_ENDPOINT": ENDPOINT,
        "VXTAP_CA_BUNDLE": str(tls.ca),  # /etc/vxtap/tls/ca.pem
        "VXTAP_CREDENTIALS": str(state / "credentials.json"),
    }

    def cli(*args: str) -> Any:
        out = subprocess.run(
            hosts.ns["ctl"].exec_argv([str(agent_bin / "vxtap"), *args, "--json"]),
            capture_output=True, text=True, timeout=60, cwd="/", env=clean_env(**admin_env),
        )  # fmt: skip
        assert out.returncode == 0, f"vxtap {' '.join(args)}: {out.stderr}"
        return json.loads(out.stdout)

    # One credential per host, made on the control plane, copied to its host, handed to
    # the agent by the unit's LoadCredential= from /etc/vxtap/agent-credentials.json.
    agent_credentials: dict[str, Path] = {}
    for ns_name, host in SOURCES.items():
        issued = hosts.home / f"{host}.credentials.json"
        assert cli("host", "add", host, "--output", str(issued))["host"] == host
        assert stat.S_IMODE(issued.stat().st_mode) == 0o600
        installed = etc(ns_name) / "agent-credentials.json"
        subprocess.run(["install", "-m", "0600", str(issued), str(installed)], check=True)
        agent_credentials[ns_name] = load_credential(
            hosts.home / f"credentials-vxtap-agent-{ns_name}", "agent-credentials.json", installed
        )
        agent_toml = guide_config(
            "The hosts with sources (agents)",
            "# /etc/vxtap/agent.toml",
            {"control.example": CONTROL, "/etc/vxtap/": f"{etc(ns_name)}/"},
        )
        assert tomllib.loads(agent_toml) == {
            "endpoint": ENDPOINT, "cacert": str(etc(ns_name) / "ca.pem")
        }  # fmt: skip
        (etc(ns_name) / "agent.toml").write_text(agent_toml)

    def agent_argv(ns_name: str, capabilities: Sequence[str], state_dir: Path) -> list[str]:
        """The agent unit's ExecStart=, as user nobody with `capabilities` ambient."""
        return [*as_nobody(capabilities), str(agent_bin / "vxtap"), "agent", "--state-dir",
                str(state_dir)]  # fmt: skip

    def agent_env(ns_name: str) -> dict[str, str]:
        return {
            "VXTAP_AGENT_CONFIG": str(etc(ns_name) / "agent.toml"),
            "VXTAP_CREDENTIALS": str(agent_credentials[ns_name]),  # the unit's Environment=
        }

    # An agent without one of its capabilities says which, and stops.
    refused = subprocess.run(
        hosts.ns["src1"].exec_argv(agent_argv("src1", ["CAP_NET_ADMIN"], hosts.home / "x")),
        capture_output=True, text=True, timeout=60, env=clean_env(**agent_env("src1")), cwd="/",
    )  # fmt: skip
    assert (refused.returncode, refused.stderr) == (
        1,
        "error: missing kernel prerequisites: the capability CAP_SYS_ADMIN "
        "(bpf(2): finding the program's map again by id)\n",
    )

    # Two agents with exactly the documented capabilities.
    for ns_name in SOURCES:
        hosts.start(
            ns_name,
            agent_argv(ns_name, AGENT_CAPABILITIES, hosts.own_dir(f"agent-{ns_name}")),
            logs / f"agent-{ns_name}.log",
            **agent_env(ns_name),
        )
    # The collector: CAP_NET_RAW for its AF_PACKET ring; numba's cache where it may write
    # (the unit's CacheDirectory=); printing JSON instead of writing pcap files.
    (etc("tgt") / "collect.toml").write_text('interface = "eth0"\nring-mb = 4\n')
    mirrors = logs / "collector.jsonl"
    hosts.start(
        "tgt",
        [*as_nobody(COLLECTOR_CAPABILITIES), str(collector_bin / "vxtap"), "collect", "--json"],
        mirrors,
        VXTAP_COLLECT_CONFIG=str(etc("tgt") / "collect.toml"),
        NUMBA_CACHE_DIR=str(hosts.own_dir("numba-cache")),
    )

    def ports() -> set[str]:
        listed = cli("port", "list")
        items = listed.get("ports", listed) if isinstance(listed, dict) else listed
        return {f"{p.get('binding:host_id')}/{p.get('name')}" for p in items}

    agent_logs = [logs / f"agent-{ns_name}.log" for ns_name in SOURCES]
    wait_for(
        "the agents did not register",
        lambda: {"web1/eth0", "web2/eth0"} <= ports(),
        60,
        [*agent_logs, logs / "server.log"],
    )
    cli("port", "create", "--host", COLLECTOR_HOST, "--device", "eth0", "--ip", COLLECTOR)
    filter_id = cli("filter", "create", "icmp-in")["id"]
    cli("rule", "create", "--filter", filter_id, "--direction", "ingress", "--priority", "1",
        "--protocol", "ICMP", "--action", "accept", "--ethertype", "IPv4")  # fmt: skip
    cli("session", "create", "first", "--filter", filter_id, "--source", "web1/eth0",
        "--source", "web2/eth0", "--target", f"{COLLECTOR_HOST}/eth0", "--priority", "1",
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

    # web1 mirrors the echo request it receives, web2 the reply.
    wait_for(
        "no mirrored packet from both sources arrived",
        lambda: seen() == {SOURCE1, SOURCE2},
        60,
        [*agent_logs, mirrors, logs / "server.log"],
    )

    def fleet() -> dict[str, tuple[str | None, str]]:
        return {h["host"]: (h["enrolment"], h["sync"]) for h in cli("host", "list")}

    wait_for(
        "vxtap host list did not show both agents in sync",
        lambda: fleet() == {"web1": ("api", "in sync"), "web2": ("api", "in sync")},
        60,
        agent_logs,
    )
    for log in [logs / "server.log", *agent_logs]:
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, log.name
        assert "administrator's key" not in text, log.name
    print(f"from the wheel to mirrored packets: {time.monotonic() - started:.1f} s")
