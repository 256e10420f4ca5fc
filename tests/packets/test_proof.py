"""Packet proof of a DNS injector judged into the record (issue 16 part 1): the runner's
:func:`probe.runner.with_injector_proof` on a record built from hand-made observations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from probe import records
from probe.addresses import Bogons
from probe.packets.proof import InjectorProof, proof_from_packets
from probe.records import RunInfo
from probe.runner import with_injector_proof
from probe.verdict import VantageStatus, judge
from tests.test_verdict import _INCONSISTENT_HTTP, BOGONS, obs

RUN = RunInfo(report_id="r1", test_start_time=datetime(2026, 12, 3, 22, 0, tzinfo=UTC), probe_asn="AS0",
              probe_cc="ZZ")


class _Ctx:
    """The three things the judge needs from the run's context."""

    bogons: Bogons = BOGONS
    asn_of = None


def _x(*answers: str, injected: bool = True, hop: int | None = 2, rcode: int = 0) -> dict[str, Any]:
    """An ``x_packets`` value whose DNS injection test drew a reply from the non-resolver."""
    replies = [{"src": "203.0.113.53", "ttl": 62, "ip_id": 0, "hops_est": 2, "dns_id": 1, "flags": 0x8180,
                "rcode": rcode, "answers": list(answers), "t": 0.01}] if injected else []
    return {"findings": [], "t": 1.0, "dns_injection": {"name": "www.example.org", "non_resolver": "203.0.113.53",
                                                        "injected": injected, "injector_hop": hop,
                                                        "nonresolver_replies": replies}}


def _record() -> tuple[dict[str, Any], Any]:
    o = obs("http://www.example.org/", **_INCONSISTENT_HTTP)
    v = judge(o, bogons=BOGONS)
    assert v.rule == "dns.inconsistent_no_control" and v.blocking is None
    start = datetime(2026, 12, 3, 22, 1, 2, tzinfo=UTC)
    return records.measurement(o, v, RUN, start=start, runtime_s=1.25, vantage=VantageStatus()), o


def test_proof_from_packets() -> None:
    p = proof_from_packets(_x("198.51.100.80"))
    assert p == InjectorProof(non_resolver="203.0.113.53", answers=("198.51.100.80",), rcode=0, ip_ttl=62,
                              hops_est=2, hop=2, replies=1)
    assert proof_from_packets(_x(injected=False)) is None
    assert proof_from_packets({"findings": []}) is None and proof_from_packets(None) is None


def test_the_proof_turns_an_inconclusive_record_into_dns_naming_the_hop() -> None:
    rec, o = _record()
    ctx: Any = _Ctx()
    new = with_injector_proof(rec, o, _x("198.51.100.80"), ctx=ctx, run=RUN, vantage=VantageStatus())
    tk = new["test_keys"]
    assert (tk["x_blocking"], tk["x_accessible"], tk["x_rule"]) == ("dns", False, "dns.injector_onpath")
    assert (tk["blocking"], tk["accessible"]) == ("dns", False)  # OONI's keys follow
    assert "at hop 2" in tk["x_reason"] and "IP TTL 62" in tk["x_reason"], tk["x_reason"]
    # the same measurement: uid, start, runtime and observations unchanged
    for k in ("x_measurement_uid", "measurement_start_time", "test_runtime", "input"):
        assert new[k] == rec[k], k
    assert tk["queries"] == rec["test_keys"]["queries"] and tk["requests"] == rec["test_keys"]["requests"]


def test_no_proof_or_no_observations_leave_the_record_alone() -> None:
    rec, o = _record()
    ctx: Any = _Ctx()
    assert with_injector_proof(rec, o, _x(injected=False), ctx=ctx, run=RUN, vantage=VantageStatus()) is rec
    assert with_injector_proof(rec, None, _x("198.51.100.80"), ctx=ctx, run=RUN, vantage=VantageStatus()) is rec


def test_a_proof_that_does_not_decide_leaves_the_record_alone() -> None:
    """The probe's answer is the control's and verified: an injector elsewhere changes nothing."""
    from tests.test_verdict import OK_EP, fetch, q

    o = obs(queries=[q("192.0.2.1")], endpoints=[OK_EP], http=fetch())
    v = judge(o, bogons=BOGONS)
    rec = records.measurement(o, v, RUN, start=datetime(2026, 12, 3, tzinfo=UTC), runtime_s=1.0)
    ctx: Any = _Ctx()
    assert with_injector_proof(rec, o, _x("203.0.113.7"), ctx=ctx, run=RUN, vantage=VantageStatus()) is rec


