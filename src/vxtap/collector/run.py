"""The collector's receive loop: ring blocks in; counters, lines, pcap, decap out.

No Python runs per packet stored or counted: each ring block goes through
BlockScan's compiled loop, and every output is batched per block (one write
per pcap file, one write to stdout). Only packets shown as lines or JSON are
decoded one by one in Python, at the rate a person reads them.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Literal, TextIO

import numpy as np
from rich.console import Console
from rich.live import Live

from vxtap.collector.blockscan import BlockScan, Bytes, as_array
from vxtap.collector.counters import DEFAULT_MAX_SERIES, CollectorCounters, Snapshot
from vxtap.collector.decap import DecapError, DecapInterfaces
from vxtap.collector.decode import decode, render_line, to_json
from vxtap.collector.heartbeat import HeartbeatSettings, ServerHeartbeats
from vxtap.collector.metrics import MetricsServer
from vxtap.collector.pcap import DEFAULT_MAX_VNIS, PcapStore
from vxtap.collector.ring import (
    BLOCK_PACKETS,
    BLOCK_PACKETS_OFFSET,
    Listen,
    PacketRing,
    PortHolder,
)
from vxtap.collector.view import counters_view

Output = Literal["lines", "json", "none"]
TICK_SECONDS = 1.0


@dataclass(frozen=True)
class Options:
    listen: Listen = Listen(port=4789)  # noqa: RUF009 (frozen value)
    vnis: frozenset[int] | None = None  # None: every VNI
    output: Output = "lines"
    pcap_dir: Path | None = None
    rotate_size: int | None = None
    rotate_seconds: float | None = None
    metrics: tuple[str, int] | None = None
    stats: bool = False
    decap: bool = False
    ring_blocks: int = 256
    ring_block_size: int = 1 << 18  # 256 KiB: small blocks reach the loop sooner
    max_series: int = DEFAULT_MAX_SERIES  # counter series (VNI, source); the rest folded
    pcap_max_open: int | None = None  # None: from the descriptor limit (pcap.py)
    pcap_max_vnis: int = DEFAULT_MAX_VNIS
    # Heartbeats to the server while receiving (target-group health); None: none sent.
    heartbeat: HeartbeatSettings | None = None


class Collector:
    def __init__(self, options: Options, out: TextIO = sys.stdout) -> None:
        self.options = options
        self.out = out
        self.err = Console(stderr=True)
        self.counters = CollectorCounters(options.max_series)
        self.stopping = False
        self.decap: DecapInterfaces | None = None
        self.holder: PortHolder | None = None
        self.ring: PacketRing | None = None
        self.ring_bytes: Bytes = np.zeros(0, np.uint8)
        self.scan: BlockScan | None = None
        self.vni_filter = np.array(sorted(options.vnis or ()), np.int64)  # empty: every VNI
        self.pcap: PcapStore | None = None
        self.warned_vnis = False  # said once that further VNIs are not stored
        self.metrics: MetricsServer | None = None
        self.live: Live | None = None
        self.heartbeats: ServerHeartbeats | None = None

    def stop(self, signum: int = 0, frame: FrameType | None = None) -> None:
        self.stopping = True

    # ---------------------------------------------------------------- set-up

    def open(self) -> None:
        o = self.options
        # Whatever can fail without leaving anything behind comes first; a failure
        # later undoes what was made (close), except an empty pcap directory.
        try:
            self.scan = BlockScan(o.ring_block_size)
            self.scan.warm_up()  # before the ring opens: nothing waits while it compiles
            self.ring = PacketRing(
                o.listen, block_size=o.ring_block_size, block_count=o.ring_blocks
            )
            self.ring_bytes = as_array(self.ring.map)
            if o.metrics is not None:
                self.metrics = MetricsServer(self.counters, *o.metrics)
            if o.decap:
                self.decap = DecapInterfaces(o.listen)
                for vni in sorted(o.vnis or ()):
                    self.decap.ensure(vni)
            else:
                self.holder = PortHolder(o.listen)
            if o.pcap_dir is not None:
                self.pcap = PcapStore(
                    o.pcap_dir,
                    rotate_size=o.rotate_size,
                    rotate_seconds=o.rotate_seconds,
                    max_open_files=o.pcap_max_open,
                    max_vnis=o.pcap_max_vnis,
                )
            if o.heartbeat is not None:  # last: beats say the collector is receiving
                self.heartbeats = ServerHeartbeats(o.heartbeat)
                self.heartbeats.start()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.heartbeats is not None:  # first: a collector that stops beats no more
            self.heartbeats.stop()
            self.heartbeats = None
        if self.live is not None:
            self.live.stop()
            self.live = None
        self.ring_bytes = np.zeros(0, np.uint8)  # the ring's mmap closes only without views
        for part in (self.metrics, self.ring, self.pcap, self.holder, self.decap):
            if part is not None:
                part.close()

    # ---------------------------------------------------------------- the loop

    def run(self) -> Snapshot:
        """Receive until SIGINT/SIGTERM (or stop()); returns the final counters."""
        previous = {s: signal.signal(s, self.stop) for s in (signal.SIGINT, signal.SIGTERM)}
        self.open()
        try:
            self.err.print(self.describe(), highlight=False, soft_wrap=True)
            if self.options.stats:
                self.live = Live(console=self.err, auto_refresh=False)
                self.live.start()
            self._loop()
            self._drain_after_stop()
            self._tick()
            return self.counters.snapshot()
        finally:
            self.close()
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _loop(self) -> None:
        ring = self.ring
        assert ring is not None
        next_tick = time.monotonic() + TICK_SECONDS
        while not self.stopping:
            offset = ring.ready_block()
            if offset is None:
                ring.wait(100)
            else:
                self._process_block(offset)
                ring.release(offset)
            if time.monotonic() >= next_tick:
                self._tick()
                next_tick = time.monotonic() + TICK_SECONDS

    def _drain_after_stop(self) -> None:
        """Take what the kernel still holds: the open block retires after its timeout."""
        ring = self.ring
        assert ring is not None
        deadline = time.monotonic() + 0.1
        while time.monotonic() < deadline:
            offset = ring.ready_block()
            if offset is None:
                time.sleep(0.01)
                continue
            self._process_block(offset)
            ring.release(offset)

    def _tick(self) -> None:
        assert self.ring is not None
        received, dropped = self.ring.statistics()
        with self.counters.lock:
            self.counters.ring_received += received
            self.counters.ring_dropped += dropped
        if self.pcap is not None:
            self.pcap.tick()
            with self.counters.lock:
                self.counters.pcap_open_files = self.pcap.open_files
        if self.live is not None:
            self.live.update(counters_view(self.counters.snapshot(), "vxtap collect"))
            self.live.refresh()

    def _process_block(self, offset: int) -> None:
        """One ring block: the per-packet work is BlockScan's compiled loop; what is
        left here runs once per block (counters, one pcap write per VNI) or per
        packet shown (a person reads those)."""
        ring, scan = self.ring, self.scan
        assert ring is not None and scan is not None
        count, first = BLOCK_PACKETS.unpack_from(ring.map, offset + BLOCK_PACKETS_OFFSET)
        show = self.options.output != "none" and not self.options.stats
        block = scan.scan(
            self.ring_bytes,
            offset + first,
            count,
            vnis=self.vni_filter,
            store=self.pcap is not None,
            show=show,
        )
        # Copies, before the ring block goes back to the kernel.
        shown = [(s.time_ns, ring.map[s.base : s.base + s.length]) for s in block.shown]
        counters = self.counters
        with counters.lock:
            for g in block.groups:
                counters.add(g.vni, g.source, g.packets, g.bytes, g.truncated, g.malformed)
        pcap = self.pcap
        if pcap is not None and block.slots:
            stored = 0
            for slot in block.slots:
                if pcap.write(slot.vni, slot.data, slot.ends):
                    stored += len(slot.ends)
                elif not self.warned_vnis:
                    self.warned_vnis = True
                    self.err.print(
                        f"[yellow]--pcap: {pcap.max_vnis:,} VNIs have files; frames of "
                        f"further VNIs (first: {slot.vni}) are counted, not stored[/]",
                        soft_wrap=True,
                    )
            with counters.lock:
                counters.pcap_records += stored
                counters.pcap_files = pcap.files_created
                counters.pcap_open_files = pcap.open_files
                counters.pcap_files_closed = pcap.files_closed
                counters.pcap_unstored = pcap.unstored
        if shown:
            self._show(shown)
        decap = self.decap
        if decap is not None:
            new_vnis = {s.vni for s in block.slots} - decap.names.keys() - decap.refused
            for vni in sorted(new_vnis):
                # A VNI that arrives must not stop the collector: say why, go on without.
                try:
                    made = decap.ensure(vni)
                except DecapError as e:
                    decap.refused.add(vni)
                    self.err.print(f"[yellow]--decap: {e}; VNI {vni} goes on without one[/]")
                    continue
                if made is None:
                    self.err.print(
                        f"[yellow]--decap: not creating an interface for VNI {vni}: "
                        f"limit of {decap.max_interfaces} reached[/]"
                    )

    def _show(self, shown: list[tuple[int, bytes]]) -> None:
        render: Callable[[int, bytes], str]
        if self.options.output == "json":

            def render(t: int, d: bytes) -> str:
                return json.dumps(to_json(decode(d, t)), separators=(",", ":"))
        else:

            def render(t: int, d: bytes) -> str:
                return render_line(decode(d, t))

        try:
            self.out.write("".join(render(t, d) + "\n" for t, d in shown))
            self.out.flush()
        except BrokenPipeError:
            self.stopping = True  # `vxtap collect | head`: the reader is gone

    def describe(self) -> str:
        o = self.options
        listen = o.listen
        where = str(listen.address) if listen.address is not None else "*"
        if listen.address is None and listen.family is not None:
            where = "0.0.0.0" if listen.family == 2 else "[::]"
        text = f"vxtap collect: listening on {where}:{listen.port}"
        text += f" on {listen.interface}" if listen.interface else " on all interfaces"
        if o.vnis is not None:
            text += f", VNIs {','.join(map(str, sorted(o.vnis)))}"
        if self.pcap is not None:
            text += f", pcap to {self.pcap.directory}"
        if self.metrics is not None and o.metrics is not None:
            text += f", metrics at http://{o.metrics[0]}:{o.metrics[1]}/metrics"
        if self.decap is not None:
            text += ", decap interfaces vxtap-vni<N>"
        if o.heartbeat is not None:
            text += f", {o.heartbeat.describe()}"
        return text

    def summary(self, snap: Snapshot) -> None:
        self.err.print(counters_view(snap, "vxtap collect: summary"))
