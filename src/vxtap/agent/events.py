"""Kernel change notifications that wake the agent: links, addresses, tc filters, nftables.

The content of the messages is not parsed: any notification means "look again"
(rediscover interfaces, check the kernel against the plan), which is cheaper and
simpler than tracking each object. Plain netlink sockets from the standard
library suffice for that (the agent does not import pyroute2: docs/dataplane.md).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import threading
from dataclasses import dataclass

from vxtap.dataplane.kernel.netlink import NETLINK_NETFILTER, NETLINK_ROUTE

# Multicast groups (linux/rtnetlink.h, linux/netfilter/nfnetlink.h).
RTMGRP_LINK, RTMGRP_TC, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x8, 0x10, 0x100
NFNLGRP_NFTABLES = 7


@dataclass(frozen=True)
class Changes:
    links: bool = False  # a link, address or tc filter changed
    nftables: bool = False  # some nftables object changed
    woken: bool = False  # `KernelEvents.wake` was called (the channel received a state)

    @property
    def kernel(self) -> bool:
        return self.links or self.nftables


class KernelEvents:
    def __init__(self) -> None:
        self.route = self._subscribe(
            NETLINK_ROUTE, RTMGRP_LINK | RTMGRP_TC | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
        )
        self.nft = self._subscribe(NETLINK_NETFILTER, 1 << (NFNLGRP_NFTABLES - 1))
        # Another thread's way to end a wait early (a pipe: select() takes it as is).
        self.wake_read, self.wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.closing = threading.Lock()  # no wake-up writes to a closed (reused) descriptor
        self.closed = False

    @staticmethod
    def _subscribe(protocol: int, groups: int) -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, groups))
        sock.setblocking(False)
        return sock

    def wait(self, timeout: float) -> Changes:
        """Block until a notification or a wake-up arrives or `timeout` passes."""
        watched = [self.route.fileno(), self.nft.fileno(), self.wake_read]
        readable, _, _ = select.select(watched, [], [], timeout)
        if not readable:
            return Changes()
        woken = self.wake_read in readable
        if woken:
            with contextlib.suppress(BlockingIOError):
                while os.read(self.wake_read, 4096):
                    pass
        drained = self.drain()
        return Changes(links=drained.links, nftables=drained.nftables, woken=woken)

    def wake(self) -> None:
        """End the current (or next) `wait` early; safe from any thread."""
        with self.closing:
            if self.closed:
                return
            # A full pipe means a wake-up is pending anyway.
            with contextlib.suppress(BlockingIOError):
                os.write(self.wake_write, b"!")

    def drain(self) -> Changes:
        """Discard pending notifications (e.g. those the agent's own apply caused)."""
        return Changes(links=self._drain(self.route), nftables=self._drain(self.nft))

    @staticmethod
    def _drain(sock: socket.socket) -> bool:
        seen = False
        while True:
            try:
                sock.recv(1 << 16)
            except BlockingIOError:
                return seen
            except OSError as error:
                if error.errno != errno.ENOBUFS:
                    raise
                # Overflow: notifications were lost, so something certainly changed.
            seen = True

    def close(self) -> None:
        self.route.close()
        self.nft.close()
        with self.closing:
            self.closed = True
            os.close(self.wake_read)
            os.close(self.wake_write)
