"""probe.names: one A-label / host-validity contract, and every user of it agreeing (issue 10 part 5).

Before, seven IDNA functions diverged: ``'☃.net'`` stayed ``'☃.net'`` in the DNS primitives,
became ``xn--n3h.net`` (IDNA 2003) as a TLS SNI and was an error in the lab's censor.
"""

from __future__ import annotations

import pytest

from probe.names import HostError, ends_in_number, normalise_host, to_alabel, to_ulabel, valid_host

# (input, A-label or None = HostError)
CASES: list[tuple[str, str | None]] = [
    ("example.org", "example.org"),
    ("Example.ORG.", "example.org"),  # case and the root label
    ("  example.org ", "example.org"),  # surrounding whitespace
    ("сайт.қаз", "xn--80aswg.xn--80ao21a"),
    ("САЙТ.ҚАЗ", "xn--80aswg.xn--80ao21a"),  # UTS #46 case folding
    ("сайт。қаз", "xn--80aswg.xn--80ao21a"),  # ideographic full stop (UTS #46 mapping)
    ("xn--80aswg.xn--80ao21a", "xn--80aswg.xn--80ao21a"),
    ("XN--80ASWG.XN--80AO21A", "xn--80aswg.xn--80ao21a"),
    ("fußball.de", "xn--fuball-cta.de"),  # IDNA 2008 keeps ß (IDNA 2003 made it 'fussball')
    ("_dmarc.example.org", "_dmarc.example.org"),  # underscore: real names use it
    ("r3---sn-abc.googlevideo.com", "r3---sn-abc.googlevideo.com"),  # '--' at 3-4 in an ASCII label
    ("a" * 63 + ".org", "a" * 63 + ".org"),
    ("☃.net", None),  # U+2603 is DISALLOWED in IDNA 2008
    ("xn--n3h.net", None),  # its IDNA 2003 A-label does not decode to a valid U-label
    ("xn--zz.example", None),  # not Punycode
    ("", None), (".", None), ("a..b", None), ("-a.example", None), ("a-.example", None),
    ("a b.example", None), ("ex%61mple.org", None), ("a" * 64 + ".org", None),
    (("a" * 62 + ".") * 4 + "org", None),  # 256 > 253 octets
    ("1.2.3.4", None), ("example.123", None), ("127.1", None), ("0x7f000001", None),  # ends in a number
]


@pytest.mark.parametrize(("name", "alabel"), CASES)
def test_to_alabel_contract(name: str, alabel: str | None) -> None:
    if alabel is None:
        with pytest.raises(HostError) as info:
            to_alabel(name)
        assert isinstance(info.value, ValueError)  # callers that catch ValueError keep working
        assert repr(name[:80]) in str(info.value) or name[:80] in str(info.value), "the message names the input"
        assert info.value.host == name and info.value.reason
    else:
        assert to_alabel(name) == alabel
        assert to_alabel(alabel) == alabel  # idempotent


@pytest.mark.parametrize(("name", "alabel"), [c for c in CASES if c[1] is not None])
def test_every_user_agrees_on_valid_names(name: str, alabel: str) -> None:
    """DNS, TLS, the targets list, the lab (censor, scenarios), the claims check and the analysis."""
    from analysis.load import domain_of
    from probe.lab.censor import normalise_name
    from probe.lab.scenario import to_alabel as scenario_alabel
    from probe.measure.tls import _subject

    assert normalise_name(name) == alabel
    assert scenario_alabel(name) == alabel
    assert _subject(name).value == alabel
    if name == name.strip() and not name.endswith(".") and " " not in name and "。" not in name:
        from probe.targets import normalise_url

        assert normalise_url(f"https://{name}/")[1] == alabel
        assert domain_of(f"https://{name}/") == alabel
    assert valid_host(alabel)


@pytest.mark.parametrize("name", [c[0] for c in CASES if c[1] is None and c[0].strip(". ")])
def test_every_user_refuses_invalid_names(name: str) -> None:
    from probe.lab.censor import normalise_name
    from probe.lab.scenario import to_alabel as scenario_alabel
    from probe.targets import TargetError, normalise_url

    with pytest.raises(ValueError):
        normalise_name(name)
    with pytest.raises(ValueError):
        scenario_alabel(name)
    if not (name.isascii() and all(p.isdigit() for p in name.split("."))):  # dotted quads are hosts
        with pytest.raises(TargetError):
            normalise_url(f"https://{name}/")
    assert not valid_host(name) or name == "1.2.3.4"


async def test_snowman_is_an_error_in_dns_and_tls_not_a_different_name() -> None:
    """The three answers '☃.net' got before (unchanged, xn--n3h.net, error) are now one: HostError."""
    from probe.measure import dns, tls
    from probe.timing import Clock

    with pytest.raises(HostError):
        await dns.resolve_system("☃.net", clock=Clock(), timeout_s=0.1, bogons=None)  # type: ignore[arg-type]
    with pytest.raises(HostError):
        await dns.query_udp("☃.net", "A", server="127.0.0.1:9", clock=Clock(), timeout_s=0.1, listen_s=0.0,
                            bogons=None)  # type: ignore[arg-type]
    with pytest.raises(HostError):
        await tls.tls_handshake("127.0.0.1", 9, server_name="☃.net", clock=Clock(), connect_timeout_s=0.1,
                                tls_timeout_s=0.1, trust=None)  # type: ignore[arg-type]


def test_claims_check_uses_the_same_contract() -> None:
    from analysis.claims import _check_domain

    class Chk:
        def fail(self, key: str, msg: str) -> ValueError:
            return ValueError(msg)

    _check_domain(Chk(), "targets", "xn--80aswg.xn--80ao21a")  # type: ignore[arg-type]
    _check_domain(Chk(), "targets", "_dmarc.example.org")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="write 'xn--80aswg.xn--80ao21a'"):
        _check_domain(Chk(), "targets", "сайт.қаз")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a valid domain name"):
        _check_domain(Chk(), "targets", "☃.net")  # type: ignore[arg-type]


@pytest.mark.parametrize(("host", "canonical"), [
    ("192.0.2.1", "192.0.2.1"), ("[2001:DB8::1]", "2001:db8::1"), ("2001:db8:0::1", "2001:db8::1"),
    ("Сайт.ҚАЗ", "xn--80aswg.xn--80ao21a"),
])
def test_normalise_host(host: str, canonical: str) -> None:
    assert normalise_host(host) == canonical


@pytest.mark.parametrize("host", ["256.1.1.1", "[fe80::1%eth0]", "[::g]", "☃.net"])
def test_normalise_host_refuses(host: str) -> None:
    with pytest.raises(HostError):
        normalise_host(host)


def test_ulabel_and_ends_in_number() -> None:
    assert to_ulabel("xn--80aswg.xn--80ao21a") == "сайт.қаз"
    assert to_ulabel("xn--zz-not-valid.example") == "xn--zz-not-valid.example"
    assert to_ulabel("example.org") == "example.org"
    assert ends_in_number("127.1") and ends_in_number("a.0x7f.") and not ends_in_number("a.b7")
