"""The few netlink messages vxtap sends itself: the nft table's chains, a rule-count
dump, and a tc bpf filter attached by file descriptor.

Hand-written rather than pyroute2: importing pyroute2 cost the agent ~10 MiB of memory,
and it decodes every attribute of every reply in Python (docs/dataplane.md, "Kernel
reads and writes, without pyroute2").
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Sequence

from vxtap.dataplane.kernel.shell import DataplaneError
from vxtap.setns import enter_namespace

# Netlink families (linux/netlink.h); the agent's change notifications use them too.
NETLINK_ROUTE, NETLINK_NETFILTER = 0, 12
# nf_tables over netlink (linux/netfilter/nf_tables.h, linux/netfilter/nfnetlink.h).
NFPROTO_NETDEV = 5
# NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_*
NFT_MSG_GETTABLE, NFT_MSG_GETCHAIN, NFT_MSG_GETRULE = (10 << 8) | 1, (10 << 8) | 4, (10 << 8) | 7
NFTA_TABLE_NAME = 1
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME = 1, 3
NFTA_RULE_TABLE, NFTA_RULE_CHAIN = 1, 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_REPLACE, NLM_F_CREATE = 0x100, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3
# tc filters over rtnetlink (linux/rtnetlink.h, linux/pkt_cls.h).
RTM_NEWTFILTER = 44
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_BPF_CLASSID, TCA_BPF_FD, TCA_BPF_NAME, TCA_BPF_FLAGS = 3, 6, 7, 8
TCA_BPF_FLAG_ACT_DIRECT = 1
ETH_P_ALL = 0x0003


def attr(kind: int, value: str) -> bytes:
    """A netlink string attribute, NUL-terminated and padded to 4 bytes."""
    return attr_raw(kind, value.encode() + b"\0")


def attr_u32(kind: int, value: int) -> bytes:
    return attr_raw(kind, struct.pack("=I", value))


def attr_raw(kind: int, data: bytes) -> bytes:
    encoded = struct.pack("=HH", 4 + len(data), kind) + data
    return encoded + b"\0" * (-len(encoded) % 4)


def chain_names(replies: Sequence[bytes], table: str) -> list[str]:
    """The names of `table`'s chains among NFT_MSG_NEWCHAIN replies. Reads each reply's
    attributes only up to the name (the table and handle come first): a dump holds
    thousands of chains, and each has about ten attributes."""
    wanted = table.encode() + b"\0"
    unpack = struct.Struct("=HH").unpack_from
    names: list[str] = []
    for reply in replies:
        offset, in_table = 0, False
        while offset + 4 <= len(reply):
            length, kind = unpack(reply, offset)
            if length < 4:
                break
            kind &= 0x3FFF  # without the nested and byte-order flags
            if kind == NFTA_CHAIN_TABLE:
                in_table = reply[offset + 4 : offset + length] == wanted
            elif kind == NFTA_CHAIN_NAME:
                if in_table:
                    names.append(reply[offset + 4 : offset + length].rstrip(b"\0").decode())
                break
            offset += (length + 3) & ~3
    return names


def request(sock: socket.socket, seq: int, kind: int, flags: int, body: bytes) -> list[bytes]:
    """Send one request and return its replies' payloads (after the netlink header): a
    get's one reply, a dump's (NLM_F_DUMP) up to NLMSG_DONE, none for an acknowledged
    change (NLM_F_ACK). OSError when the kernel refuses it."""
    sock.send(struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body)
    replies: list[bytes] = []
    while True:
        data = sock.recv(1 << 20)
        offset = 0
        while offset + 16 <= len(data):
            length, reply, _, reply_seq, _ = struct.unpack_from("=IHHII", data, offset)
            if reply_seq == seq:
                if reply == NLMSG_DONE:
                    return replies
                if reply == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", data, offset + 16)
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return replies
                replies.append(data[offset + 16 : offset + length])
                if not flags & (NLM_F_DUMP | NLM_F_ACK):
                    return replies
            offset += (length + 3) & ~3


def nft_request(sock: socket.socket, seq: int, kind: int, flags: int, attrs: bytes) -> list[bytes]:
    """An nf_tables request in the netdev family; the replies' attributes."""
    nfgenmsg = struct.pack("=BBH", NFPROTO_NETDEV, 0, 0)
    return [r[4:] for r in request(sock, seq, kind, flags, nfgenmsg + attrs)]


def open_socket(netns: str | None, protocol: int) -> socket.socket:
    """A bound netlink socket in namespace `netns` (None: the current one), with a 10 s
    timeout. A socket stays in the namespace it was created in, so it is created on a
    short-lived thread that enters the namespace (setns(2) moves only that thread)."""

    def create() -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        sock.settimeout(10)
        sock.bind((0, 0))
        return sock

    if netns is None:
        return create()
    made: list[socket.socket] = []
    failed: list[OSError] = []

    def in_namespace() -> None:
        try:
            enter_namespace(netns)
            made.append(create())
        except OSError as error:
            failed.append(error)

    thread = threading.Thread(target=in_namespace, name=f"netns-{netns}")
    thread.start()
    thread.join()
    if failed:
        raise DataplaneError(f"netlink socket in namespace {netns}: {failed[0]}")
    return made[0]


def replace_bpf_filter(netns: str | None, index: int, parent: int, prog_fd: int, name: str) -> None:
    """`tc filter replace dev .. pref 1 handle 1 bpf da classid 1 fd PROG name NAME`:
    tc(8) cannot attach a program by file descriptor, so one RTM_NEWTFILTER is sent."""
    options = (
        attr_u32(TCA_BPF_CLASSID, 1)
        + attr_u32(TCA_BPF_FD, prog_fd)
        + attr(TCA_BPF_NAME, name)
        + attr_u32(TCA_BPF_FLAGS, TCA_BPF_FLAG_ACT_DIRECT)
    )
    info = (1 << 16) | socket.htons(ETH_P_ALL)  # preference 1, every protocol
    body = struct.pack("=BBHiIII", socket.AF_UNSPEC, 0, 0, index, 1, parent, info)
    body += attr(TCA_KIND, "bpf") + attr_raw(TCA_OPTIONS, options)
    flags = NLM_F_ACK | NLM_F_REPLACE | NLM_F_CREATE
    sock = open_socket(netns, NETLINK_ROUTE)
    try:
        request(sock, 1, RTM_NEWTFILTER, flags, body)
    finally:
        sock.close()
