"""probe.fastrec.builder: the records it builds are the class's own (issue 14 part 7)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from probe.control_result import ControlEndpoint, ControlHTTP, ControlResult
from probe.fastrec import BuilderError, builder
from probe.measure.dns import DNSAnswer, DNSQuery, DNSReply
from probe.measure.http import HTTPFetch, HTTPRequest, HTTPResponse
from probe.measure.tcp import TCPConnect
from probe.measure.tls import TLSHandshake
from probe.nettests.web import EndpointObservation, WebObservations
from probe.targets import Target

TCP = TCPConnect(ip="192.0.2.1", port=443, t0=0.5, t=0.75, failure=None)
TLS = TLSHandshake(ip="192.0.2.1", port=443, server_name="example.org", alpn_offered=("h2",), t0=1.0, t=1.5,
                   failure="ssl_unknown_authority", peer_certificates=("QUJD",), chain_source="leaf_only")
RESP = HTTPResponse(status_code=200, headers=(("Server", "x"),), body_length=3, body_truncated=False,
                    body_sha256="", body_b64="YWJj", title="t")
REQ = HTTPRequest(url="http://example.org/", ip="192.0.2.1", port=80, method="GET", request_headers=(), t0=0.0,
                  t=0.25, failure=None, response=RESP)
ANSWER = DNSAnswer(answer_type="A", ipv4="192.0.2.1")
TARGET = Target(input="http://example.org/", domain="example.org", scheme="http", port=80,
                original="http://example.org", list_name="ooni", line=0)
CTL = ControlResult(source="helper", failure=None, dns_addresses=("192.0.2.1",),
                    endpoints={"192.0.2.1:443": ControlEndpoint(ip="192.0.2.1", port=443, tcp_failure=None)},
                    http=ControlHTTP(failure=None, status_code=200, headers=(("Server", "x"),), title="t",
                                     body_length=3))

#: Each class the OONI re-judging builds through builder(), with the fields it is given there
#: (some left to their defaults).
CASES: list[tuple[type, dict[str, Any]]] = [
    (DNSAnswer, {"answer_type": "AAAA", "ipv6": "2001:db8::1", "ttl": 60}),
    (DNSReply, {"t": 0.1, "raw_b64": "", "source": "udp", "rcode": "NOERROR", "flags": 0x8180, "answers": (ANSWER,),
                "parse_error": None}),
    (DNSQuery, {"hostname": "example.org", "query_type": "A", "engine": "system", "resolver_address": "", "t0": 0.0,
                "t": 0.1, "failure": None, "answers": (ANSWER,), "replies": ()}),
    (TCPConnect, {"ip": "192.0.2.1", "port": 80, "t0": 0.0, "t": 0.1, "failure": "connection_refused"}),
    (TLSHandshake, {f.name: getattr(TLS, f.name) for f in dataclasses.fields(TLS)}),
    (TLSHandshake, {"ip": "192.0.2.1", "port": 443, "server_name": None, "alpn_offered": (), "t0": 0.0, "t": 0.0,
                    "failure": None}),
    (HTTPResponse, {f.name: getattr(RESP, f.name) for f in dataclasses.fields(RESP)}),
    (HTTPRequest, {"url": "http://example.org/", "ip": None, "port": None, "method": "GET", "request_headers": (),
                   "t0": 0.0, "t": 0.0, "failure": "generic_timeout_error", "response": None}),
    (HTTPFetch, {"requests": (REQ,), "failure": None}),
    (ControlEndpoint, {"ip": "192.0.2.1", "port": 443, "tcp_failure": None, "tls_attempted": True,
                       "tls_failure": "ssl_invalid_hostname"}),
    (ControlHTTP, {"failure": None, "status_code": 200, "headers": (), "title": None, "body_length": 0}),
    (ControlResult, {"source": "helper", "failure": None, "dns_failure": None, "dns_addresses": ("192.0.2.1",)}),
    (ControlResult, {f.name: getattr(CTL, f.name) for f in dataclasses.fields(CTL)}),
    (Target, {"input": "http://example.org/", "domain": "example.org", "scheme": "http", "port": 80,
              "original": "http://example.org", "list_name": "ooni", "line": 0}),
    (EndpointObservation, {"ip": "192.0.2.1", "port": 443, "source": "both", "tcp": TCP, "tls": TLS, "mitm": None,
                           "tls_check": False}),
    (WebObservations, {"target": TARGET, "queries": (), "dns_control": CTL, "control": CTL, "endpoints": (),
                       "skipped": (), "http": None, "dns_blockpages": (), "http_blockpages": ()}),
]


@pytest.mark.parametrize(("cls", "kw"), CASES, ids=[f"{c.__name__}-{i}" for i, (c, _) in enumerate(CASES)])
def test_a_built_record_is_the_classs_own(cls: type, kw: dict[str, Any]) -> None:
    made, own = builder(cls)(**kw), cls(**kw)
    assert type(made) is cls
    assert made == own
    try:
        own_hash = hash(own)
    except TypeError:  # a record holding a dict (ControlResult.endpoints) is unhashable either way
        with pytest.raises(TypeError):
            hash(made)
    else:
        assert hash(made) == own_hash
    assert repr(made) == repr(own)
    for f in dataclasses.fields(cls):  # every field, given or defaulted
        assert getattr(made, f.name) == getattr(own, f.name), f.name
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.x_new = 1  # still frozen


def test_a_default_factory_gives_each_record_its_own_value() -> None:
    build = builder(ControlResult)
    a = build(source="helper", failure=None)
    b = build(source="helper", failure=None)
    assert a.endpoints == {} and a.endpoints is not b.endpoints


@dataclasses.dataclass(kw_only=True)
class _Mutable:
    a: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Checked:
    a: int

    def __post_init__(self) -> None:
        if self.a < 0:
            raise ValueError("a < 0")


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class _Slotted:
    a: int


@dataclasses.dataclass(frozen=True)
class _Positional:
    a: int


@pytest.mark.parametrize("cls", [_Mutable, _Checked, _Slotted, _Positional, int])
def test_classes_whose_init_does_more_are_refused(cls: type) -> None:
    with pytest.raises(BuilderError, match=cls.__name__):
        builder(cls)


def test_mypy_checks_a_builders_keywords(tmp_path: Any) -> None:
    """A builder has its class's signature for mypy (``Callable[P, T]``): a misspelt keyword or a wrong type
    is a static-check finding, as for the class itself (review: typed ``Callable[..., T]`` it was not, and a
    misspelt keyword only became an extra attribute at run time)."""
    mypy_api = pytest.importorskip("mypy.api")
    src = tmp_path / "snippet.py"
    src.write_text(
        "import dataclasses\n"
        "from probe.fastrec import builder\n\n"
        "@dataclasses.dataclass(frozen=True, kw_only=True)\n"
        "class R:\n"
        "    a: int\n"
        "    b: str = ''\n\n"
        "new_r = builder(R)\n"
        "ok = new_r(a=1, b='x')\n"
        "bad_name = new_r(a=1, bb='x')\n"
        "bad_type = new_r(a='1')\n", encoding="utf-8")
    out, _, status = mypy_api.run([str(src), "--no-incremental", "--follow-imports=silent",
                                   "--cache-dir", str(tmp_path / ".mypy_cache")])
    assert status == 1, out
    assert 'snippet.py:11: error: Unexpected keyword argument "bb"' in out, out
    assert "snippet.py:12: error: Argument \"a\"" in out and "incompatible type" in out, out
    assert "snippet.py:10" not in out, out


def test_fields_are_stored_in_the_classs_order() -> None:
    """``vars()`` of a built record lists the fields as the class's ``__init__`` does (defaults included)."""
    made = builder(DNSQuery)(hostname="example.org", query_type="A", engine="system", resolver_address="", t0=0.0,
                             t=0.1, failure=None, answers=())
    own = DNSQuery(hostname="example.org", query_type="A", engine="system", resolver_address="", t0=0.0, t=0.1,
                   failure=None, answers=())
    assert list(vars(made).items()) == list(vars(own).items())


def test_a_missing_or_unknown_keyword_is_refused_as_by_the_class() -> None:
    """The builder takes the class's keywords: a required field left out or a misspelt keyword is a TypeError
    (before: a missing field was an AttributeError when read, a misspelt keyword an extra attribute)."""
    build = builder(TCPConnect)
    with pytest.raises(TypeError, match="failure"):
        build(ip="192.0.2.1", port=80, t0=0.0, t=0.1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="faillure"):
        build(ip="192.0.2.1", port=80, t0=0.0, t=0.1, failure=None, faillure="x")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        build("192.0.2.1", 80, 0.0, 0.1, None)  # type: ignore[call-arg]  # keyword-only, as the class


@dataclasses.dataclass(frozen=True, kw_only=True)
class _OddNames:
    cls: int
    new: str = "n"
    o: tuple[int, ...] = dataclasses.field(default_factory=tuple)


def test_field_names_that_the_generated_code_could_shadow() -> None:
    """Fields named like the builder's own helpers (``cls``, ``new``, ``o``) are stored as given."""
    made = builder(_OddNames)(cls=1)
    assert type(made) is _OddNames and made == _OddNames(cls=1) and vars(made) == {"cls": 1, "new": "n", "o": ()}
    assert builder(_OddNames)(cls=2, new="x", o=(3,)) == _OddNames(cls=2, new="x", o=(3,))
