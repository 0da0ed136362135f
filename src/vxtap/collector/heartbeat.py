"""The collector's heartbeats to `vxtap server`: "this host's collector is receiving".

A target group's member is healthy while heartbeats name it (docs/elb.md, "Health"):
with `--endpoint` and `--credentials`, `vxtap collect` sends `PUT
/internal/v1/{project}/hosts/{host}/collector-heartbeat` every `INTERVAL_S`, naming
the device it receives on (`--interface`), or none (every port of the host) when it
receives on all of them.

The beats go from a thread of their own with their own HTTP client, so a server that
hangs or refuses never delays the receive loop: at worst a beat is late or lost, and
the server marks the members down (which is what a collector that cannot reach the
server must look like anyway). One log line when beats start failing or fail
differently, one when they work again, as the agent's channel does
(`vxtap.agent.channel.Reachability`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vxtap import auth
from vxtap.client import ApiError, VxtapClient, VxtapClientError

log = logging.getLogger("vxtap.collector")

# How often a beat is sent; the server marks a member down after 1.5 s without one
# (`vxtap.store.health.SILENCE_S`), so two beats may be lost without a flap.
INTERVAL_S = 0.5
# One beat's request gives up after this: the next one is due anyway.
TIMEOUT_S = 1.0
# Stopping waits at most this long for a beat in flight.
STOP_WAIT_S = TIMEOUT_S + 1.0


@dataclass(frozen=True)
class HeartbeatSettings:
    """Where and as whom the collector beats (`vxtap collect --endpoint ...`)."""

    endpoint: str
    credential: auth.Credential
    host: str
    # The devices the collector receives on; None: all of the host's ports.
    devices: tuple[str, ...] | None = None
    ca_bundle: Path | None = None
    interval: float = INTERVAL_S

    def describe(self) -> str:
        which = ", ".join(self.devices) if self.devices else "all its ports"
        return f"heartbeats to {self.endpoint} as host {self.host} ({which})"


def _describe(error: Exception) -> str:
    if isinstance(error, ApiError):
        return f"the server refused it ({error})"
    return str(error) or type(error).__name__


class Heartbeats:
    """Calls `beat` every `interval` seconds on a daemon thread until `stop()`.

    `beat` raises on failure; failures are logged once per change of what failed.
    """

    def __init__(self, beat: Callable[[], None], interval: float = INTERVAL_S) -> None:
        self.beat = beat
        self.interval = interval
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.failure: str | None = None  # the current failure, None while beats work
        self.sent = 0  # beats the server accepted
        self.failed = 0  # beats that failed

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="vxtap-heartbeat", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(STOP_WAIT_S)
            self.thread = None

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self.stopping.is_set():
            self.once()
            # On the schedule, not after the beat: a slow answer makes the next beat
            # come sooner, and a beat later than a whole interval is skipped, not queued.
            next_at += self.interval
            now = time.monotonic()
            if next_at < now:
                next_at = now
            self.stopping.wait(next_at - now)

    def once(self) -> None:
        try:
            self.beat()
        except (VxtapClientError, OSError) as error:
            self.failed += 1
            failure = _describe(error)
            if failure != self.failure:
                log.warning(
                    "collector heartbeat failed: %s; retrying every %ss", failure, self.interval
                )
            self.failure = failure
            return
        except Exception as error:  # a bug must not end the beats silently
            self.failed += 1
            failure = f"{type(error).__name__}: {error}"
            if failure != self.failure:
                log.exception("collector heartbeat failed")
            self.failure = failure
            return
        self.sent += 1
        if self.failure is not None:
            log.info("collector heartbeats reach the server again")
            self.failure = None


class ServerHeartbeats(Heartbeats):
    """`Heartbeats` to a real server, with a client of its own (closed by `stop`)."""

    def __init__(self, settings: HeartbeatSettings) -> None:
        credential = settings.credential
        self.client = VxtapClient(
            settings.endpoint,
            credential.ak,
            credential.sk,
            credential.project_id,
            timeout=TIMEOUT_S,
            ca_bundle=settings.ca_bundle,
        )
        self.settings = settings
        super().__init__(self._beat, settings.interval)

    def _beat(self) -> None:
        self.client.collector_heartbeat(self.settings.host, self.settings.devices)

    def stop(self) -> None:
        super().stop()
        self.client.close()
