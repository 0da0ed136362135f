"""Tables of the counters: the live --stats view and the summary on exit."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from vxtap.collector.counters import Snapshot


def counters_view(snap: Snapshot, title: str) -> Group:
    """The table, then the totals as plain lines (never wrapped into the table)."""
    text = (
        f"kernel ring: {snap.ring_received:,} received, {snap.ring_dropped:,} dropped (host loss)\n"
        f"pcap: {snap.pcap_records:,} frames in {snap.pcap_files:,} files"
    )
    # Short lines: the summary goes to stderr, often 80 columns wide.
    if snap.pcap_files_closed:
        text += f"\npcap: {snap.pcap_files_closed:,} files closed early (open-file limit)"
    if snap.pcap_unstored:
        text += f"\npcap: {snap.pcap_unstored:,} frames not stored (VNI limit)"
    if snap.folded:
        text += (
            f"\ncounters: {snap.folded:,} datagrams folded into 'other'"
            f" (series limit {snap.max_series:,})"
        )
    lines = Text(text)
    lines.no_wrap = True
    return Group(counters_table(snap, title), lines)


def counters_table(snap: Snapshot, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name in ("VNI", "outer source", "packets", "bytes", "truncated", "malformed"):
        table.add_column(name, justify="left" if name == "outer source" else "right")
    for r in snap.rows:
        vni = "other" if r.other else str(r.vni) if r.vni is not None else "-"
        cells = (r.packets, r.bytes, r.truncated, r.malformed)
        table.add_row(vni, r.source, *(f"{c:,}" for c in cells))
    totals = ("packets", "bytes", "truncated", "malformed")
    table.add_section()
    table.add_row("all", "", *(f"{snap.total(f):,}" for f in totals))
    return table
