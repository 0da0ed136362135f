"""pcap files of the inner frames: one rotated file series per VNI.

Format: classic pcap with nanosecond timestamps (magic 0xa1b23c4d), link type
Ethernet, which tcpdump, tshark, Wireshark, Suricata and Zeek all read. Each
record carries the captured length (what arrived, possibly cut to the session's
packet_length) and the original length (from the inner IP header), so readers
show cut copies as cut ("[|tcp]", "Packet size limited during capture").

Crash guarantee (see docs/collector.md): records are collected per receive batch
(one ring block) and handed to the kernel whole, with one write(2) per file and
batch, before the ring block is given back to the kernel. A killed process therefore
leaves every file it had written as a valid pcap; only the final write can be
cut short, losing at most the last (partial) record of the current file. What
a SIGKILL loses beyond that is what was never written: the batch being
processed and what still sat in the ring, exactly like `tcpdump -U -w`.
Completed files (rotated away) are always whole. No fsync: a power loss can
lose what the page cache held.

Hand-written rather than a library: the format is 24 + 16 bytes of header, and
the writers on PyPI (dpkt, scapy) add per-packet object work and buffering
that would break the guarantee above.
"""

from __future__ import annotations

import bisect
import errno
import itertools
import os
import resource
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

MAGIC_NANOSECONDS = 0xA1B23C4D
LINKTYPE_ETHERNET = 1
SNAPLEN = 262144
GLOBAL_HEADER = struct.pack("<IHHiIII", MAGIC_NANOSECONDS, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET)
RECORD_HEADER = struct.Struct("<IIII")  # ts_sec, ts_nsec, captured length, original length
MAX_OPEN_FILES = 512  # pcap files open at once, at most (see PcapStore)
# VNIs with a file series, at most: each has a small object in memory and files on
# disk, and anyone who can send UDP to the collector chooses the VNIs (2^24 of them).
DEFAULT_MAX_VNIS = 16384


def record(sec: int, nsec: int, frame: bytes, original_length: int) -> bytes:
    """One pcap record: header plus the captured frame."""
    return RECORD_HEADER.pack(sec, nsec, len(frame), max(original_length, len(frame))) + frame


Records = bytes | memoryview  # whole records (header + frame) back to back


def records_of(records: Sequence[bytes]) -> tuple[bytes, list[int]]:
    """Records as one run and the end offset of each (tests, fixtures)."""
    return b"".join(records), list(itertools.accumulate(map(len, records)))


def _write_all(fd: int, data: Records) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class PcapSeries:
    """The files of one VNI: `vni<N>-<UTC open time>-<seq>.pcap` in `directory`.

    A new file starts when the next record would make the current one larger
    than `rotate_size` bytes, or when it has been open `rotate_seconds`. A
    record larger than rotate_size still gets written (alone in its file).
    """

    def __init__(
        self,
        directory: Path,
        vni: int,
        *,
        rotate_size: int | None = None,
        rotate_seconds: float | None = None,
        clock: Callable[[], float] = time.time,
        free_descriptor: Callable[[], bool] | None = None,
    ) -> None:
        if rotate_size is not None and rotate_size <= len(GLOBAL_HEADER):
            raise ValueError(f"rotate size {rotate_size} is not larger than a pcap header")
        if rotate_seconds is not None and rotate_seconds <= 0:
            raise ValueError(f"rotate seconds must be positive, not {rotate_seconds}")
        self.directory = directory
        self.vni = vni
        self.rotate_size = rotate_size
        self.rotate_seconds = rotate_seconds
        self.clock = clock
        # Called when opening a file finds no descriptor free (EMFILE/ENFILE): closes
        # another file and says whether it did (then the open is tried again).
        self.free_descriptor = free_descriptor
        self.files: list[Path] = []  # every file this series created, the current one last
        self.records = 0
        self._fd: int | None = None
        self._size = 0
        self._opened_at = 0.0
        self._seq = 0
        self._suspended = False  # the current file was closed only to free its descriptor

    @property
    def current(self) -> Path | None:
        return self.files[-1] if self._fd is not None else None

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def suspend(self) -> None:
        """Close the current file without ending it: the next record is appended to
        it (one global header per file, so the file stays one valid pcap)."""
        if self._fd is not None:
            self._close()
            self._suspended = True

    def _os_open(self, path: Path, flags: int) -> int:
        while True:
            try:
                return os.open(path, flags, 0o644)
            except OSError as error:
                no_descriptor = error.errno in (errno.EMFILE, errno.ENFILE)
                if not (no_descriptor and self.free_descriptor and self.free_descriptor()):
                    raise

    def _open(self) -> None:
        if self._suspended:
            self._suspended = False
            try:
                # Continue the file (no O_CREAT: one removed meanwhile starts a new file).
                self._fd = self._os_open(self.files[-1], os.O_WRONLY | os.O_APPEND)
                return
            except FileNotFoundError:
                pass
        now = self.clock()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        while True:
            self._seq += 1
            path = self.directory / f"vni{self.vni}-{stamp}-{self._seq:04d}.pcap"
            try:
                # O_EXCL: never overwrite a file of an earlier run.
                fd = self._os_open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND)
            except FileExistsError:
                continue
            break
        _write_all(fd, GLOBAL_HEADER)
        self._fd, self._size, self._opened_at = fd, len(GLOBAL_HEADER), now
        self.files.append(path)

    def _close(self) -> None:
        self._suspended = False
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _expired(self) -> bool:
        return self.rotate_seconds is not None and (
            self.clock() - self._opened_at >= self.rotate_seconds
        )

    def write(self, data: Records, ends: Sequence[int]) -> None:
        """Append whole records (`data`; record i ends at ends[i]), rotating between
        records as configured."""
        if (self._fd is not None or self._suspended) and self._expired():
            self._close()
        view = memoryview(data)
        limit = self.rotate_size
        done = 0  # bytes of data written
        while done < len(view):
            if self._fd is None:
                self._open()
            # The records that still fit in this file (at least one: a record larger
            # than the limit goes alone into a file of its own).
            if limit is None:
                cut = len(view)
            else:
                room = limit - self._size
                k = bisect.bisect_right(ends, done + room)
                cut = ends[k - 1] if k and ends[k - 1] > done else 0
                if not cut:
                    if self._size > len(GLOBAL_HEADER):
                        self._close()
                        continue
                    cut = ends[bisect.bisect_right(ends, done)]
            records = bisect.bisect_right(ends, cut) - bisect.bisect_right(ends, done)
            self._emit(view[done:cut], records)
            done = cut

    def _emit(self, data: Records, records: int) -> None:
        assert self._fd is not None
        _write_all(self._fd, data)
        self._size += len(data)
        self.records += records

    def tick(self) -> None:
        """Close the current file when its time is up, also while no traffic comes."""
        if (self._fd is not None or self._suspended) and self._expired():
            self._close()

    def close(self) -> None:
        self._close()


class PcapStore:
    """One PcapSeries per VNI, created when its first frame arrives.

    At most `max_open_files` files are open at once (one datagram on each of
    thousands of VNIs must not exhaust the process's descriptors): opening one
    more first closes the least recently written, whose series continues that
    same file when its VNI comes back. Should the process still run out of
    descriptors (a lower limit than expected), the least recently written file
    is closed and the open tried again.

    At most `max_vnis` VNIs get a series; frames of further VNIs are not stored
    (`write` says so, and `unstored` counts them).
    """

    def __init__(
        self,
        directory: Path,
        *,
        rotate_size: int | None = None,
        rotate_seconds: float | None = None,
        max_open_files: int | None = None,
        max_vnis: int = DEFAULT_MAX_VNIS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Validate the options before creating anything.
        PcapSeries(directory, 0, rotate_size=rotate_size, rotate_seconds=rotate_seconds)
        if max_open_files is None:
            max_open_files = default_max_open_files()
        if max_open_files < 1:
            raise ValueError(f"at least one pcap file must be open at a time, not {max_open_files}")
        if max_vnis < 1:
            raise ValueError(f"at least one VNI must be stored, not {max_vnis}")
        directory.mkdir(parents=True, exist_ok=True)
        if not os.access(directory, os.W_OK):
            raise PermissionError(f"pcap directory {directory} is not writable")
        self.directory = directory
        self.rotate_size = rotate_size
        self.rotate_seconds = rotate_seconds
        self.max_open_files = max_open_files
        self.max_vnis = max_vnis
        self.unstored = 0  # frames of VNIs beyond max_vnis, not stored
        self.clock = clock
        self.series: dict[int, PcapSeries] = {}
        # The series with an open file, least recently written first.
        self._open: OrderedDict[int, PcapSeries] = OrderedDict()
        self.files_created = 0
        self.files_closed = 0  # files closed early to stay within max_open_files

    def write(self, vni: int, data: Records, ends: Sequence[int]) -> bool:
        """Append whole records to the VNI's series (see PcapSeries.write); False when
        the VNI has no series and `max_vnis` have one already (nothing is written)."""
        series = self.series.get(vni)
        if series is None:
            if len(self.series) >= self.max_vnis:
                self.unstored += len(ends)
                return False
            series = PcapSeries(
                self.directory,
                vni,
                rotate_size=self.rotate_size,
                rotate_seconds=self.rotate_seconds,
                clock=self.clock,
                free_descriptor=self._close_least_recent,
            )
            self.series[vni] = series
        if series.is_open:
            self._open.move_to_end(vni)
        else:
            self._open.pop(vni, None)
            while len(self._open) >= self.max_open_files:
                self._close_least_recent()
        before = len(series.files)
        try:
            series.write(data, ends)
        finally:
            self.files_created += len(series.files) - before
            if series.is_open:
                self._open[vni] = series
        return True

    def _close_least_recent(self) -> bool:
        """Close the file written longest ago (its series continues it later)."""
        if not self._open:
            return False
        _, series = self._open.popitem(last=False)
        series.suspend()
        self.files_closed += 1
        return True

    def tick(self) -> None:
        """Close files whose time is up. Only the open ones are looked at: a closed
        series' file that expired meanwhile is ended at its next write."""
        for series in self._open.values():
            series.tick()
        for vni in [v for v, s in self._open.items() if not s.is_open]:
            del self._open[vni]

    def close(self) -> None:
        for series in self.series.values():
            series.close()
        self._open.clear()

    @property
    def open_files(self) -> int:
        return len(self._open)

    @property
    def files(self) -> list[Path]:
        return [f for s in self.series.values() for f in s.files]


def default_max_open_files() -> int:
    """Half the process's descriptor limit, at most 512: the rest stays for the ring,
    sockets, the metrics server and decap's netlink sockets."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_OPEN_FILES
    return max(1, min(MAX_OPEN_FILES, soft // 2))
