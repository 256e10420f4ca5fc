"""Can this process capture packets? (issue 16 part 4)

Packet-level evidence listens on an ``AF_PACKET`` socket, which needs ``CAP_NET_RAW``
(the systemd unit grants it: ``AmbientCapabilities=CAP_NET_RAW``). Without it, the probe
says once, at the start of the run, that packet-level evidence is off and why, and every
other test runs unchanged. pcap files additionally need scapy (``kzprobe[packets]``).
"""

from __future__ import annotations

import importlib.util
import socket
import sys
from dataclasses import dataclass

from probe.packets.capture import open_packet_socket

#: Bit of CAP_NET_RAW in /proc/self/status CapEff (linux/capability.h).
CAP_NET_RAW_BIT = 13


@dataclass(frozen=True, kw_only=True)
class Privileges:
    """What packet-level work this process may do.

    Attributes:
        capture: an ``AF_PACKET`` socket could be opened (``CAP_NET_RAW``).
        pcap: scapy is importable (pcap files can be written).
        reason: why ``capture`` is False (one line for the notice), else None.
    """

    capture: bool
    pcap: bool
    reason: str | None = None

    def notice(self) -> str | None:
        """The one notice a run prints when packet-level evidence is off, else None."""
        if self.capture:
            return None
        return (f"packet-level evidence is off: {self.reason}; every other test runs unchanged "
                "(the systemd unit grants CAP_NET_RAW; or: sudo setcap cap_net_raw+ep on the Python binary)")


def has_cap_net_raw() -> bool | None:
    """CAP_NET_RAW in the effective set (from /proc/self/status), None when unknown."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_RAW_BIT & 1)
    except (OSError, ValueError):
        return None
    return None


def check() -> Privileges:
    """Try to open the capture socket once (closed at once) and look for scapy."""
    pcap = importlib.util.find_spec("scapy") is not None
    if not sys.platform.startswith("linux") or not hasattr(socket, "AF_PACKET"):
        return Privileges(capture=False, pcap=pcap, reason=f"needs Linux AF_PACKET sockets (this is {sys.platform})")
    try:
        open_packet_socket().close()
    except PermissionError:
        return Privileges(capture=False, pcap=pcap, reason="no CAP_NET_RAW (raw sockets are refused to this process)")
    except OSError as exc:
        return Privileges(capture=False, pcap=pcap, reason=f"cannot open a packet socket: {exc.strerror or exc}")
    return Privileges(capture=True, pcap=pcap)
