"""Builders and fixtures for vxtap's tests and benchmarks (as mitmproxy's `mitmproxy.test`
and pyroute2's `pyroute2.fixtures` ship theirs): hand-made frames and VXLAN datagrams
(`frames`), pcap files read back by the real tcpdump and tshark (`pcap`), and
throwaway network namespaces that are removed also on failure (`namespaces`).

Nothing in the product imports this package.
"""
