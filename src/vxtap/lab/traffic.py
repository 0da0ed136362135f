"""The seed's step 3, as written: `nc -l PORT` on one server, `nc ADDR PORT` on
another, lines typed one after the other (and answered, when the scenario
says so). Production traffic is real kernel TCP/UDP between namespaces."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from vxtap.lab.runtime import LabError
from vxtap.lab.scenario import Conversation, Scenario, shorten
from vxtap.lab.topology import Topology
from vxtap.lab.verify import Delivery
from vxtap.model import Protocol

Say = Callable[[str], None]


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdin is not None:  # our end of its pipe: one descriptor per conversation
        proc.stdin.close()


def converse(
    topology: Topology, scenario: Scenario, talk: Conversation, workdir: Path, say: Say
) -> Delivery:
    server = scenario.server(talk.server)
    listener_ns, client_ns = topology.server(talk.server), topology.server(talk.client)
    udp = talk.protocol is Protocol.UDP
    flag = ["-u"] if udp else []
    received = workdir / f"received-{talk.server}-{talk.port}-{talk.client}.txt"
    answers = workdir / f"answers-{talk.client}-{talk.port}-{talk.server}.txt"
    listen_argv = ["nc", *flag, "-l", str(talk.port)]
    connect_argv = ["nc", *flag, server.ipv4, str(talk.port)]
    say(f"[{talk.server}] $ {' '.join(listen_argv)}")
    with received.open("wb") as sink:
        listener = listener_ns.popen(listen_argv, stdin=subprocess.PIPE, stdout=sink)
    client: subprocess.Popen[bytes] | None = None
    try:
        ss = ["ss", "-Hln", "-u" if udp else "-t", f"sport = :{talk.port}"]
        if not _wait(lambda: bool(listener_ns.run(ss, check=False).stdout.strip()), 5):
            raise LabError(f"nc -l {talk.port} on {talk.server} is not listening after 5 s")
        say(f"[{talk.client}] $ {' '.join(connect_argv)}")
        with answers.open("wb") as sink:
            client = client_ns.popen(connect_argv, stdin=subprocess.PIPE, stdout=sink)
        assert client.stdin is not None and listener.stdin is not None
        expected = b""
        for index, line in enumerate(talk.lines):
            client.stdin.write(f"{line}\n".encode())
            client.stdin.flush()
            expected += f"{line}\n".encode()
            say(f"[{talk.client}] {shorten(line)}")
            want = expected
            _wait(lambda want=want: received.read_bytes() == want, 3)  # type: ignore[misc]
            if index < len(talk.replies):
                listener.stdin.write(f"{talk.replies[index]}\n".encode())
                listener.stdin.flush()
                say(f"[{talk.server}] {talk.replies[index]}")
                replied = "".join(f"{r}\n" for r in talk.replies[: index + 1]).encode()
                _wait(lambda replied=replied: answers.read_bytes() == replied, 3)  # type: ignore[misc]
            time.sleep(0.2)  # two separate segments, as typed by a person
    finally:
        if client is not None:
            _stop(client)
        _stop(listener)
    text = received.read_text(errors="replace")
    say(f"[{talk.server}] received: {' / '.join(map(shorten, text.splitlines()))}")
    answered = answers.read_text(errors="replace")
    if talk.replies:
        say(f"[{talk.client}] received: {' / '.join(map(shorten, answered.splitlines()))}")
    return Delivery(talk, text, answered)
