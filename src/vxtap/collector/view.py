"""Tables of the counters: the live --stats view and the summary on exit."""

from __future__ import annotations

from rich.table import Table

from vxtap.collector.counters import Snapshot


def counters_table(snap: Snapshot, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name in ("VNI", "outer source", "packets", "bytes", "truncated", "malformed"):
        table.add_column(name, justify="left" if name == "outer source" else "right")
    for r in snap.rows:
        vni = str(r.vni) if r.vni is not None else "-"
        cells = (r.packets, r.bytes, r.truncated, r.malformed)
        table.add_row(vni, r.source, *(f"{c:,}" for c in cells))
    totals = ("packets", "bytes", "truncated", "malformed")
    table.add_section()
    table.add_row("all", "", *(f"{snap.total(f):,}" for f in totals))
    table.caption = (
        f"kernel ring: {snap.ring_received:,} received, {snap.ring_dropped:,} dropped (host loss)"
        f" | pcap: {snap.pcap_records:,} frames in {snap.pcap_files:,} files"
    )
    table.caption_justify = "left"
    return table
