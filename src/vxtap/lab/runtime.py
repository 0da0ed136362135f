"""The lab's own bookkeeping: its directory, its namespaces and its processes.

Everything the lab starts is recorded in `<lab dir>/lab.json` before or as it
is created (namespace names first, then each process with its PID and the
kernel's start time for it), so that `down` -- also after a crash or a failed
`up` -- removes exactly what the lab made and stops only processes it started:
a PID is signalled only while /proc still shows the same start time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vxtap.netns import PREFIX, Namespace

DEFAULT_LAB_DIR = Path("/run/vxtap-lab")
DEFAULT_NAMESPACE_PREFIX = f"{PREFIX}lab-"


class LabError(RuntimeError):
    """A step of the lab failed; the message says which and why."""


OWN_FILES = {"lab.json", "lab.tmp", "credentials.json", "agent-signing.key"}
OWN_FILE_PREFIXES = ("server.db",)  # with SQLite's -wal and -shm
OWN_DIRS = {"logs", "agents", "tls"}


@dataclass
class ProcessRecord:
    role: str
    namespace: str
    pid: int
    start_time: int
    argv: list[str]
    log: str


@dataclass
class LabRecord:
    scenario: str = ""
    breaks: list[str] = field(default_factory=list)
    namespace_prefix: str = DEFAULT_NAMESPACE_PREFIX
    namespaces: list[str] = field(default_factory=list)
    processes: list[ProcessRecord] = field(default_factory=list)
    endpoint: str = ""
    ids: dict[str, str] = field(default_factory=dict)  # scenario name -> id the API assigned
    ready: bool = False  # `up` finished: the agents applied every session


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; it ends at the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


class LabDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def record_file(self) -> Path:
        return self.path / "lab.json"

    def load(self) -> LabRecord | None:
        try:
            raw = json.loads(self.record_file.read_text())
        except FileNotFoundError:
            return None
        processes = [ProcessRecord(**p) for p in raw.pop("processes", [])]
        return LabRecord(**raw, processes=processes)

    def save(self, record: LabRecord) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.record_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record), indent=2))
        tmp.replace(self.record_file)

    def remove(self) -> None:
        """Remove what the lab put in its directory, then the directory if empty.
        Only the lab's own names: `--dir` may have been pointed anywhere."""
        if not self.path.is_dir():
            return
        for entry in self.path.iterdir():
            if entry.name in OWN_FILES or entry.name.startswith(OWN_FILE_PREFIXES):
                entry.unlink()
            elif entry.name in OWN_DIRS or entry.name.startswith("verify-"):
                shutil.rmtree(entry)
        with contextlib.suppress(OSError):
            self.path.rmdir()


# The processes this interpreter started, by PID: `stop` reaps them through their
# Popen, so none is left looking "still running" to its finalizer (a ResourceWarning)
# and an exit status is never collected behind subprocess's back. Processes of an
# earlier `vxtap lab up` are not here; `stop` watches /proc for those.
_started: dict[int, subprocess.Popen[bytes]] = {}


def start(
    lab: LabDir,
    record: LabRecord,
    role: str,
    namespace: Namespace,
    argv: Sequence[str],
    *,
    stdin: int | None = subprocess.DEVNULL,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` inside `namespace`, logging to `log_path` (a new file;
    default `<lab>/logs/<role>.log`), and record it before returning."""
    if log_path is None:
        log_path = lab.path / "logs" / f"{role}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = namespace.popen(
            list(argv),
            stdin=stdin,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    _started[proc.pid] = proc
    started = process_start_time(proc.pid)
    record.processes.append(
        ProcessRecord(role, namespace.name, proc.pid, started or 0, list(argv), str(log_path))
    )
    lab.save(record)
    return proc


def stop(process: ProcessRecord, *, grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; only if the PID is still the
    process the lab started."""
    child = _started.pop(process.pid, None)
    if child is not None:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        return
    if process_start_time(process.pid) != process.start_time:
        return
    try:
        os.kill(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            waited, _ = os.waitpid(process.pid, os.WNOHANG)
        except ChildProcessError:  # not our child (an earlier `up`): poll /proc
            waited = 0 if process_start_time(process.pid) == process.start_time else process.pid
        if waited == process.pid:
            return
        time.sleep(0.05)
    if process_start_time(process.pid) == process.start_time:
        os.kill(process.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(process.pid, 0)
