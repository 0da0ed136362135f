"""The Prometheus /metrics endpoint (`--metrics ADDR:PORT`).

Metrics are built from a counters snapshot at scrape time (a custom collector),
so the receive loop never touches prometheus_client objects per packet.
"""

from __future__ import annotations

from collections.abc import Iterator
from threading import Thread
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from vxtap.collector.counters import CollectorCounters


class CountersCollector:
    def __init__(self, counters: CollectorCounters) -> None:
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        snap = self.counters.snapshot()
        labels = ["vni", "source"]
        families = {
            "packets": CounterMetricFamily(
                "vxtap_collector_packets",
                "Datagrams received per VNI and outer source",
                labels=labels,
            ),
            "bytes": CounterMetricFamily(
                "vxtap_collector_bytes", "Inner frame bytes received", labels=labels
            ),
            "truncated": CounterMetricFamily(
                "vxtap_collector_truncated",
                "Copies cut shorter than the original frame",
                labels=labels,
            ),
            "malformed": CounterMetricFamily(
                "vxtap_collector_malformed",
                'Malformed datagrams or inner frames (vni="none": no usable VXLAN header)',
                labels=labels,
            ),
        }
        for row in snap.rows:
            vni = "other" if row.other else str(row.vni) if row.vni is not None else "none"
            values = [vni, row.source]
            for field, family in families.items():
                family.add_metric(values, getattr(row, field))
        yield from families.values()
        yield CounterMetricFamily(
            "vxtap_collector_ring_dropped",
            "Datagrams the kernel dropped because the collector did not keep up (host loss)",
            value=snap.ring_dropped,
        )
        yield CounterMetricFamily(
            "vxtap_collector_ring_received",
            "Datagrams the kernel queued to the collector",
            value=snap.ring_received,
        )
        yield CounterMetricFamily(
            "vxtap_collector_pcap_records", "Frames written to pcap files", value=snap.pcap_records
        )
        yield GaugeMetricFamily(
            "vxtap_collector_pcap_files", "pcap files created", value=snap.pcap_files
        )
        yield GaugeMetricFamily(
            "vxtap_collector_pcap_open_files", "pcap files open", value=snap.pcap_open_files
        )
        yield CounterMetricFamily(
            "vxtap_collector_pcap_files_closed",
            "pcap files closed to stay within the open-file limit (continued when written again)",
            value=snap.pcap_files_closed,
        )
        yield CounterMetricFamily(
            "vxtap_collector_pcap_unstored",
            "Frames not stored: their VNI would pass the limit of VNIs with pcap files",
            value=snap.pcap_unstored,
        )
        yield CounterMetricFamily(
            "vxtap_collector_folded",
            'Datagrams counted in the vni="other" series: their own (VNI, source) series '
            "would pass the series limit",
            value=snap.folded,
        )
        yield GaugeMetricFamily(
            "vxtap_collector_series",
            '(VNI, source) counter series, not counting "other"',
            value=snap.series,
        )


class MetricsServer:
    def __init__(self, counters: CollectorCounters, host: str, port: int) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(CountersCollector(counters))
        try:
            started: Any = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            raise OSError(e.errno, f"--metrics {host}:{port}: {e.strerror}") from None
        self.server: WSGIServer | None = started[0] if isinstance(started, tuple) else None
        self.thread: Thread | None = started[1] if isinstance(started, tuple) else None

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
