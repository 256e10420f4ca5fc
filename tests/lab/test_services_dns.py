"""The ISP resolver's raw forward (:class:`probe.lab.services._Upstream`, issue 13): the query's
bytes under an id of its own, the reply's bytes back with the client's id. Loopback only."""

from __future__ import annotations

import asyncio

import dns.message
import dns.rdatatype

from probe.lab.services import Zone, _Upstream


class _Auth(asyncio.DatagramProtocol):
    def __init__(self, zone: Zone, *, silent: bool = False) -> None:
        self.zone, self.silent, self.seen_ids = zone, silent, []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        q = dns.message.from_wire(data)
        self.seen_ids.append(q.id)
        if not self.silent:
            self.transport.sendto(self.zone.answer(q, geo=True).to_wire(), addr)  # type: ignore[attr-defined]


async def _forward(silent: bool = False) -> tuple[bytes | None, dns.message.Message, _Auth]:
    zone = Zone([], {"a.example.kz": "198.18.0.10"})
    loop = asyncio.get_running_loop()
    auth_t, auth = await loop.create_datagram_endpoint(lambda: _Auth(zone, silent=silent),
                                                        local_addr=("127.0.0.1", 0))
    port = auth_t.get_extra_info("sockname")[1]
    up_t, up = await loop.create_datagram_endpoint(_Upstream, remote_addr=("127.0.0.1", port))
    q = dns.message.make_query("a.example.kz", dns.rdatatype.A)
    try:
        return await up.ask(q.to_wire(), 0.5), q, auth
    finally:
        up_t.close()
        auth_t.close()


def test_a_forwarded_reply_comes_back_with_the_clients_id_and_the_servers_answer() -> None:
    raw, q, auth = asyncio.run(_forward())
    assert raw is not None
    r = dns.message.from_wire(raw)
    assert r.id == q.id and q.is_response(r)
    assert [rd.address for rr in r.answer for rd in rr] == ["198.18.0.10"]
    assert len(auth.seen_ids) == 1  # under an id of its own (random: may equal the client's only by chance)


def test_a_silent_server_gives_none_after_the_timeout() -> None:
    raw, _q, auth = asyncio.run(_forward(silent=True))
    assert raw is None and len(auth.seen_ids) == 1

