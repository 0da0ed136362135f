"""`vxtap collect`: the target side of traffic mirroring.

Pure core: `decode` (VXLAN + inner frame -> values, one-line and JSON
rendering), `pcap` record encoding and file series, `counters`.
Thin adapters: `ring` (AF_PACKET TPACKET_V3 reception), `decap` (one kernel
VXLAN interface per VNI), `metrics` (Prometheus), `view` (rich --stats), and
`run` (the loop that ties them together).
"""
