"""The ISP's resolver and the on-path injector read a query alike (one ``_query_site``) and answer
each scenario DNS action as before the merge. No namespaces needed: a fake UDP endpoint records
what would be sent."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from probe.lab.services import ISPServices
from probe.lab.topology import BOGON_IP, INJECT_IP, RELAY_IP, SNIPROXY_IP

ACTIONS = {"timeout": "t", "nxdomain": "nx", "servfail": "sf", "bogon": "bg", "blockpage:10.9.8.7": "bp",
           "sniproxy": "sp", "relay": "rl", "inject": "in"}


class _Sent:
    def __init__(self) -> None:
        self.replies: list[dns.message.Message] = []

    def send(self, msg: dns.message.Message, addr: Any) -> None:
        self.replies.append(msg)


def _isp(tmp_path: Path) -> ISPServices:
    sites = [{"domain": f"{short}.example.kz", "display": f"{short}.example.kz", "ip": "198.18.0.10", "dns": action}
             for action, short in ACTIONS.items()]
    return ISPServices({"sites": sites, "rundir": str(tmp_path), "latency_s": 0.0})


def _query(name: str) -> bytes:
    return dns.message.make_query(name, dns.rdatatype.A).to_wire()


def _answer(r: dns.message.Message) -> str:
    return dns.rcode.to_text(r.rcode()) + "".join(f" {rd.address}" for rrset in r.answer for rd in rrset)


def test_query_site(tmp_path: Path) -> None:
    isp = _isp(tmp_path)
    got = isp._query_site(_query("BG.Example.KZ."))  # case and the final dot do not matter
    assert got is not None and got[1] == "bogon" and got[0].question[0].rdtype == dns.rdatatype.A
    assert isp._query_site(_query("elsewhere.example"))[1] == "ok"  # type: ignore[index]
    assert isp._query_site(b"\x00\x01garbage") is None
    assert isp._query_site(dns.message.Message(id=7).to_wire()) is None  # no question


@pytest.mark.parametrize(("short", "resolver", "injector"), [
    ("t", [], []),
    ("nx", ["NXDOMAIN"], []),
    ("sf", ["SERVFAIL"], []),
    ("bg", [f"NOERROR {BOGON_IP}"], [f"NOERROR {BOGON_IP}"]),
    ("bp", ["NOERROR 10.9.8.7"], ["NOERROR 10.9.8.7"]),
    ("sp", [f"NOERROR {SNIPROXY_IP}"], []),
    ("rl", [f"NOERROR {RELAY_IP}"], []),
])
def test_resolver_and_injector_answers(tmp_path: Path, short: str, resolver: list[str], injector: list[str]) -> None:
    isp = _isp(tmp_path)
    for handler, want in ((isp._resolve, resolver), (isp._inject_onpath, injector)):
        sent = _Sent()
        asyncio.run(handler(sent, _query(f"{short}.example.kz"), ("10.77.0.2", 5353)))  # type: ignore[arg-type]
        assert [_answer(r) for r in sent.replies] == want, handler.__name__


def test_the_injector_forges_only_censored_names(tmp_path: Path) -> None:
    isp = _isp(tmp_path)
    for name, want in (("in.example.kz", [f"NOERROR {INJECT_IP}"]), ("elsewhere.example", []), ("t.example.kz", [])):
        sent = _Sent()
        asyncio.run(isp._inject_onpath(sent, _query(name), ("10.77.0.2", 5353)))  # type: ignore[arg-type]
        assert [_answer(r) for r in sent.replies] == want, name
    sent = _Sent()
    asyncio.run(isp._resolve(sent, b"junk", ("10.77.0.2", 5353)))  # type: ignore[arg-type]
    assert sent.replies == []


async def test_the_proxy_on_callers_sockets_resets_an_unknown_name() -> None:
    """The internet's ``sniproxy`` is the ISP relay (one implementation, probe.lab.relay) listening on
    sockets the services made (``start_on``): an unknown Host is reset, as the relay does."""
    import socket

    from probe.lab.relay import NameRelay

    relay = NameRelay({"known.example.kz": "127.0.0.1"}, latency_s=0.0)
    socks = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        s.setblocking(False)
        socks.append(s)
    await relay.start_on(socks[0], socks[1])
    try:
        reader, writer = await asyncio.open_connection(*socks[1].getsockname())
        writer.write(b"GET / HTTP/1.1\r\nHost: unknown.example\r\n\r\n")
        await writer.drain()
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert relay.stats["relay.http.unknown_name"] == 1
    finally:
        await relay.aclose()
