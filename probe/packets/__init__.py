"""Packet-level evidence (issue 16): who answered, and where on the path the censor sits.

Socket-level measurements say *that* a handshake was reset or a DNS answer was forged;
the packets say *who* did it and *where*. One module per primitive, each an ``async``
function returning a frozen keyword-only dataclass (as :mod:`probe.measure.tcp`):

* :mod:`probe.packets.privileges` — can this process capture (``CAP_NET_RAW``)? One notice if not.
* :mod:`probe.packets.capture` — a bounded capture of the packets to and from a few addresses
  (an ``AF_PACKET`` socket with a kernel BPF filter, read in a thread off the event loop);
  pcap files through scapy (``kzprobe[packets]``).
* :mod:`probe.packets.dnsinject` — DNS queries to an address where no resolver listens and
  to the ISP resolver; every reply with its IP TTL / IP ID; the injector's hop.
* :mod:`probe.packets.forensics` — the RST (or silence) after the trigger vs. the SYN-ACK of
  the same server: TTL, IP ID, window.
* :mod:`probe.packets.centrace` — CenTrace-style localisation: TTL-limited copies of the
  trigger and of a benign request, hop by hop.
* :mod:`probe.packets.evidence` — which of these a blocked measurement gets, rate limits,
  and the ``x_packets`` record key.

Nothing here sends a packet the operating system would not send for an ordinary socket
(the TTL is set with ``IP_TTL``); raw sockets only *listen*. IPv4 only for now.
"""
