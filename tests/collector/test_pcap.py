"""pcap records and file series, read back by the real tcpdump and tshark."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vxtap.collector.pcap import GLOBAL_HEADER, PcapSeries, PcapStore, record, records_of
from vxtap.testing import frames as f
from vxtap.testing.pcap import tcpdump, tshark


def ping(seq: int, size: int = 1000) -> bytes:
    return f.ethernet(
        f.ipv4(
            f.icmp_echo(b"p" * size, ident=7, seq=seq), src="10.0.0.1", dst="10.0.0.2", protocol=1
        ),
        src="02:00:00:00:00:01",
        dst="02:00:00:00:00:02",
        ethertype=0x0800,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_truncated_and_whole_frames_read_back(tmp_path: Path) -> None:
    series = PcapSeries(tmp_path, 7)
    whole, cut = ping(1, 20), ping(2)
    series.write(
        *records_of(
            [
                record(1_700_000_000, 5, whole, len(whole)),
                record(1_700_000_001, 999_999_999, cut[:96], len(cut)),
            ]
        )
    )
    series.close()
    (path,) = series.files
    assert path.name.startswith("vni7-") and path.suffix == ".pcap"
    rows = tshark(
        path, "frame.len", "frame.cap_len", "frame.time_epoch", "icmp.seq", "_ws.expert.message"
    )
    assert [r[:2] for r in rows] == [["62", "62"], ["1042", "96"]]
    assert rows[0][2].startswith("1700000000.000000005")  # nanosecond timestamps survive
    assert rows[1][2].startswith("1700000001.999999999")
    out = tcpdump(path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "ICMP echo request, id 7, seq 1, length 28" in lines[0]
    # orig_len recorded: tcpdump knows the capture was cut, not the packet.
    assert "ICMP echo request, id 7, seq 2, length 1008" in lines[1]
    assert "truncated-ip" not in lines[1]


def test_rotation_by_size_keeps_every_file_whole(tmp_path: Path) -> None:
    limit = 2000
    series = PcapSeries(tmp_path, 1, rotate_size=limit)
    frames = [ping(i, 100 + i) for i in range(60)]
    # Batches of several records, as the receive loop hands them over.
    for start in range(0, 60, 7):
        series.write(
            *records_of(
                [
                    record(1_700_000_000 + i, 0, fr, len(fr))
                    for i, fr in enumerate(frames[start : start + 7], start)
                ]
            )
        )
    series.close()
    assert len(series.files) > 3
    seqs: list[int] = []
    for path in series.files:
        assert path.stat().st_size <= limit
        result = tcpdump(path)
        assert result.returncode == 0 and "truncated" not in result.stderr, result.stderr
        seqs += [int(r[0]) for r in tshark(path, "icmp.seq")]
    assert seqs == list(range(60))  # nothing lost, nothing doubled, in order
    assert series.records == 60


def test_a_record_larger_than_the_limit_gets_a_file_of_its_own(tmp_path: Path) -> None:
    series = PcapSeries(tmp_path, 1, rotate_size=200)
    big = ping(1, 1000)
    series.write(
        *records_of(
            [
                record(1, 0, ping(0, 10), 52),
                record(2, 0, big, len(big)),
                record(3, 0, ping(2, 10), 52),
            ]
        )
    )
    series.close()
    assert [len(tshark(p, "icmp.seq")) for p in series.files] == [1, 1, 1]


def test_rotation_by_time_also_while_idle(tmp_path: Path) -> None:
    clock = Clock()
    store = PcapStore(tmp_path, rotate_seconds=60, clock=clock)
    store.write(1, *records_of([record(1, 0, ping(1), 1042)]))
    store.write(2, *records_of([record(1, 0, ping(2), 1042)]))
    clock.now += 30
    store.write(1, *records_of([record(2, 0, ping(3), 1042)]))
    clock.now += 31
    store.tick()  # no traffic: the files still close on time
    assert all(s.current is None for s in store.series.values())
    store.write(1, *records_of([record(3, 0, ping(4), 1042)]))
    store.close()
    names = sorted(p.name for p in store.files)
    assert len(names) == 3 and sum(n.startswith("vni1-") for n in names) == 2
    assert [len(tshark(p, "icmp.seq")) for p in store.series[1].files] == [2, 1]


def test_never_overwrites_an_earlier_file(tmp_path: Path) -> None:
    clock = Clock()
    first = PcapSeries(tmp_path, 1, clock=clock)
    first.write(*records_of([record(1, 0, ping(1), 1042)]))
    first.close()
    second = PcapSeries(tmp_path, 1, clock=clock)  # same second, same sequence number
    second.write(*records_of([record(2, 0, ping(2), 1042)]))
    second.close()
    assert first.files[0] != second.files[0]
    assert len(tshark(first.files[0], "icmp.seq")) == 1


def test_a_cut_last_record_loses_only_that_record(tmp_path: Path) -> None:
    # What a SIGKILL in the middle of write(2) can leave: tcpdump reads the whole records.
    series = PcapSeries(tmp_path, 1)
    series.write(*records_of([record(i, 0, ping(i), 1042) for i in range(5)]))
    series.close()
    path = series.files[0]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 500])
    result = tcpdump(path)
    assert result.stdout.count("ICMP echo request") == 4
    assert "truncated dump file" in result.stderr


def test_bad_options_are_refused_before_any_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rotate size 10 is not larger than a pcap header"):
        PcapStore(tmp_path / "x", rotate_size=10)
    with pytest.raises(ValueError, match="rotate seconds must be positive"):
        PcapStore(tmp_path / "y", rotate_seconds=0)
    assert len(GLOBAL_HEADER) == 24
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_copy_cut_inside_the_tcp_header_reads_as_cut(tmp_path: Path) -> None:
    frame = f.ethernet(
        f.ipv4(
            f.tcp(b"x" * 500, sport=38944, dport=1234, seq=1),
            src="10.0.0.1",
            dst="10.0.0.2",
            protocol=6,
        ),
        src="02:00:00:00:00:01",
        dst="02:00:00:00:00:02",
        ethertype=0x0800,
    )
    series = PcapSeries(tmp_path, 1)
    series.write(*records_of([record(1, 0, frame[:40], len(frame))]))
    series.close()
    out = tcpdump(series.files[0])
    assert "10.0.0.1.38944 > 10.0.0.2.1234:  [|tcp]" in out.stdout, out.stdout
    assert tshark(series.files[0], "frame.len", "frame.cap_len") == [[str(len(frame)), "40"]]


def test_open_files_are_bounded_and_a_closed_series_continues_its_file(tmp_path: Path) -> None:
    clock = Clock()
    store = PcapStore(tmp_path, max_open_files=3, clock=clock)
    for round_ in range(3):
        for vni in range(1, 11):
            store.write(vni, *records_of([record(round_, 0, ping(round_), 1042)]))
            assert store.open_files <= 3
    assert store.files_created == 10 and store.files_closed == 30 - 3
    store.close()
    # One file per VNI, each a single valid pcap with all three rounds in order.
    for vni in range(1, 11):
        (path,) = store.series[vni].files
        assert [r[0] for r in tshark(path, "icmp.seq")] == ["0", "1", "2"]
        assert "truncated" not in tcpdump(path).stderr


def test_out_of_descriptors_closes_the_least_recent_file(tmp_path: Path) -> None:
    # A descriptor limit below max_open_files: opening finds none free (EMFILE) and
    # closes the least recently written file instead of failing.
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    store = PcapStore(tmp_path, max_open_files=10_000)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 5, hard))
    try:
        for vni in range(1, 31):
            store.write(vni, *records_of([record(1, 0, ping(vni), 1042)]))
    finally:
        store.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert store.files_created == 30 and store.files_closed >= 20
    assert all(len(tshark(p, "icmp.seq")) == 1 for p in store.files)


def test_a_closed_series_starts_a_new_file_when_its_file_is_gone_or_expired(
    tmp_path: Path,
) -> None:
    clock = Clock()
    store = PcapStore(tmp_path, max_open_files=1, rotate_seconds=60, clock=clock)
    store.write(1, *records_of([record(1, 0, ping(1), 1042)]))
    store.write(2, *records_of([record(1, 0, ping(1), 1042)]))  # closes VNI 1's file
    store.series[1].files[0].unlink()  # e.g. removed by a clean-up job meanwhile
    store.write(1, *records_of([record(2, 0, ping(2), 1042)]))  # closes VNI 2's file
    clock.now += 61
    store.tick()
    store.write(2, *records_of([record(2, 0, ping(2), 1042)]))
    store.close()
    assert [len(s.files) for s in (store.series[1], store.series[2])] == [2, 2]
    assert len(tshark(store.series[1].files[1], "icmp.seq")) == 1
    assert [len(tshark(p, "icmp.seq")) for p in store.series[2].files] == [1, 1]


def test_frames_of_vnis_beyond_the_limit_are_counted_not_stored(tmp_path: Path) -> None:
    store = PcapStore(tmp_path, max_vnis=2)
    written = [
        store.write(vni, *records_of([record(1, 0, ping(1), 1042)] * 3)) for vni in (1, 2, 3, 1)
    ]
    store.close()
    assert written == [True, True, False, True] and store.unstored == 3
    assert sorted(store.series) == [1, 2] and len(list(tmp_path.iterdir())) == 2
