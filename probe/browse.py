"""``kzprobe list`` and ``kzprobe show``: past results for a person, without jq.

``list`` gives the runs of a results directory (time, network, inputs, verdict counts, offline
or not: :func:`probe.status.collect_runs`, the same reader as ``kzprobe status``); ``list RUN``
the measurements of one run; ``show MEASUREMENT|INPUT`` one measurement: DNS answers per
resolver beside the control's, connects per endpoint, the TLS chain with issuers, the
verification result and any interception root matched, HTTP status/title/length/body hash
beside the control's, the rule and the reason.

A measurement is named ``<report_id>:<line>`` (its line in the run's JSONL file, from 1; a
unique prefix of the report id will do), by its ``x_measurement_uid``, or by its input URL (the
newest measurement of it).
Every line read is bounded (:data:`MAX_LINE_BYTES`, :data:`probe.bounded.MAX_JSON_DEPTH`);
a line over the bound or unparseable is counted and skipped, never fatal.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

import msgspec
from msgspec import UNSET, UnsetType

from probe.errors import KzprobeError
from probe.names import to_alabel, to_ulabel
from probe.retention import run_files
from probe.runlines import MAX_LINE_BYTES as MAX_LINE_BYTES  # re-exported (the bound list/show read with)
from probe.runlines import LineStats, iter_fields, iter_lines, iter_records, line_offset, parse_fields, parse_record
from probe.runlines import own_verdict as _ours
from probe.safetext import json_text, terminal_safe
from probe.status import KILLED_READ_BYTES, NO_SUMMARY_TEXT, RunStatus, collect_runs, stop_text
from probe.summary import display_input
from probe.targets import MAX_ROW_WARNINGS


class BrowseError(KzprobeError, LookupError):
    """A run or measurement that is not in the results directory (the message names it)."""


def network_of(report_id: str) -> str:
    """``AS9198 KZ`` from a report id ``<time>_<test>_<CC>_<ASN>_<hex>`` ("?" when not of that form)."""
    parts = report_id.split("_")
    return f"AS{parts[3]} {parts[2]}" if len(parts) >= 5 else "?"


def list_runs(directory: Path) -> tuple[list[RunStatus], list[tuple[str, str]]]:
    """The runs of ``directory``, newest first, and the files that could not be read."""
    runs, bad, _ = collect_runs(directory)
    return runs, bad


def _find_run(directory: Path, run: str) -> tuple[str, Path]:
    files = run_files(directory)
    matches = sorted(rid for rid in files if rid.startswith(run))
    if run in files:
        matches = [run]
    if not matches:
        raise BrowseError(f"no run {run!r} in {directory} (kzprobe list shows the runs)")
    if len(matches) > 1:
        raise BrowseError(f"run {run!r} is ambiguous in {directory}: {', '.join(matches[:5])}"
                          + (" ..." if len(matches) > 5 else ""))
    rid = matches[0]
    jsonl = next((p for p in files[rid] if p.name.endswith(".jsonl")), None)
    if jsonl is None:
        raise BrowseError(f"run {rid} has no measurements file in {directory}")
    return rid, jsonl


def _verdict(tk: dict[str, Any]) -> str:
    blocking, accessible = _ours(tk)
    if blocking is None:
        return "inconclusive"
    if blocking is False:
        return "accessible" if accessible else "down (not blocked)"
    return f"BLOCKED: {blocking}"


def _d(v: Any) -> dict[str, Any]:
    """``v`` when it is a JSON object, else empty (a record read is never trusted)."""
    return v if isinstance(v, dict) else {}


def _tk(rec: dict[str, Any]) -> dict[str, Any]:
    return _d(rec.get("test_keys"))


class _VerdictKeys(msgspec.Struct):
    """The test keys ``kzprobe list RUN`` prints (a field absent stays UNSET: absent is not null)."""

    x_blocking: Any | UnsetType = UNSET
    x_accessible: Any | UnsetType = UNSET
    blocking: Any | UnsetType = UNSET
    accessible: Any | UnsetType = UNSET
    x_rule: Any | UnsetType = UNSET
    x_reason: Any | UnsetType = UNSET


class _ListedRecord(msgspec.Struct):
    input: Any | UnsetType = UNSET
    test_keys: _VerdictKeys | UnsetType = UNSET


class _NamedRecord(msgspec.Struct):
    """What names a measurement for ``kzprobe show INPUT|UID``."""

    input: Any | UnsetType = UNSET
    x_measurement_uid: Any | UnsetType = UNSET


_LISTED = msgspec.json.Decoder(_ListedRecord)
_NAMED = msgspec.json.Decoder(_NamedRecord)


def _row(rid: str, lineno: int, rec: dict[str, Any]) -> dict[str, Any]:
    tk = _tk(rec)
    return {"id": f"{rid}:{lineno}", "input": str(rec.get("input", "")), "verdict": _verdict(tk),
            "blocking": _ours(tk)[0], "accessible": _ours(tk)[1], "ooni_blocking": tk.get("blocking"),
            "rule": tk.get("x_rule"), "reason": tk.get("x_reason")}


def iter_measurements(directory: Path, run: str) -> tuple[str, Iterator[dict[str, Any]], LineStats]:
    """The measurements of one run, read as they are iterated: ``(report_id, rows, skipped lines)``; a
    row is ``{"id", "input", "verdict", "blocking", "accessible", "ooni_blocking", "rule", "reason"}``.
    Memory stays one line's whatever the file's size, and only the fields of a row are decoded
    (:func:`probe.runlines.iter_fields`: ~80 µs a 12 KB record, ~12,000 a CPU-second: ~20 reading
    the line, ~30 its depth bound, ~12 msgspec's decode; whole records ~150 µs).
    ``stats`` is complete once ``rows`` is exhausted."""
    rid, jsonl = _find_run(directory, run)
    stats = LineStats()
    return rid, (_row(rid, lineno, rec) for lineno, rec in iter_fields(jsonl, _LISTED, stats)), stats


def list_measurements(directory: Path, run: str) -> tuple[str, list[dict[str, Any]], LineStats]:
    """:func:`iter_measurements` as a list."""
    rid, rows, stats = iter_measurements(directory, run)
    return rid, list(rows), stats


def _same_input(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return to_alabel(to_ulabel(a)) == to_alabel(to_ulabel(b))
    except ValueError:
        return False


def find_measurement(directory: Path, key: str) -> tuple[str, dict[str, Any]]:
    """The measurement ``key`` names: ``<report_id>:<line>``, or an input URL (its newest
    measurement, runs searched newest first), or an ``x_measurement_uid``. Returns ``(id, record)``.
    By line, the line is found by counting newlines (:func:`probe.runlines.line_offset`) and only it is
    decoded; by input or uid, only those two fields of each record are, then the whole of the one found."""
    run, sep, line = key.rpartition(":")
    if sep and line.isdecimal() and len(line) <= 18 and "/" not in key:  # int() takes what isdigit() does not
        rid, jsonl = _find_run(directory, run)
        start = line_offset(jsonl, int(line))
        if start is not None:  # the lines starting before start + 1: line `line` alone
            for lineno, rec in iter_records(jsonl, start=start, first_line=int(line), max_bytes=start + 1):
                return f"{rid}:{lineno}", rec
        raise BrowseError(f"run {rid} has no measurement on line {line}")
    by_uid = len(key) == 32 and all(ch in "0123456789abcdef" for ch in key)  # x_measurement_uid
    runs = sorted(run_files(directory), reverse=True)  # report ids start with the UTC time
    for rid in runs:
        jsonl = directory / f"{rid}.jsonl"
        if not jsonl.is_file():
            continue
        found = None
        stats = LineStats()
        for lineno, raw in iter_lines(jsonl, stats):
            names = parse_fields(lineno, raw, _NAMED, stats)
            if names is not None and (names.get("x_measurement_uid") == key if by_uid
                                      else _same_input(str(names.get("input", "")), key)):
                found = (lineno, raw)
        if found and (whole := parse_record(found[0], found[1], stats)) is not None:
            return f"{rid}:{found[0]}", whole
    raise BrowseError(f"no measurement {key!r} in {directory} (name one as REPORT_ID:LINE or by its input URL)")


# --- one measurement, for a person ------------------------------------------------------------

def _answers(q: dict[str, Any]) -> list[str]:
    out = []
    for a in q.get("answers") or ():
        if isinstance(a, dict):
            out.append(str(a.get("ipv4") or a.get("ipv6") or a.get("hostname") or a.get("answer_type")))
    return out


def _cert_names(der_b64: str) -> tuple[str, str]:
    """(subject, issuer) of a base64 DER certificate; the failure when it does not parse."""
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(der_b64))
        return cert.subject.rfc4514_string(), cert.issuer.rfc4514_string()
    except (ValueError, TypeError) as exc:
        return f"(unparseable certificate: {exc})"[:120], "?"


def _resolver_label(q: dict[str, Any]) -> str:
    """``udp 192.0.2.53:53``, ``doh https://…``; a query with no resolver address (the system
    resolver: OONI's ``system``/``getaddrinfo`` engines, ours) is its engine alone (it read
    ``system system``: break test)."""
    engine, address = str(q.get("engine") or "?"), q.get("resolver_address")
    return f"{engine} {address}" if address else engine


def _mitm_lines(m: dict[str, Any]) -> list[str]:
    """``x_mitm`` for a person: the finding's sentence and its evidence, not a Python dict; nothing
    when the chain held no interception evidence (a record writes ``x_mitm`` for every chain)."""
    traits = ", ".join(map(str, m.get("leaf_traits") or ()))
    if not m.get("mitm"):
        return [f"  forged-leaf traits (not interception by themselves): {traits}"] if traits else []
    lines = [f"  INTERCEPTION: {_fmt(m.get('reason'))}",
             f"    matched by {', '.join(map(str, m.get('matched_by') or ())) or '-'}; "
             f"known root {_fmt(m.get('root_tag'))}; chain position {_fmt(m.get('position'))}: "
             f"{_fmt(m.get('matched_subject'))}"]
    if traits:
        lines.append(f"    forged-leaf traits: {traits}")
    return lines


def measurement_view(mid: str, rec: dict[str, Any]) -> dict[str, Any]:
    """The parts of a record ``kzprobe show`` prints (also its ``--json``)."""
    tk = _tk(rec)
    dns = [{"resolver": _resolver_label(q), "query_type": q.get("query_type"),
            "answers": _answers(q), "failure": q.get("failure")}
           for q in tk.get("queries") or () if isinstance(q, dict)]
    control, dns_control = _d(tk.get("control")), _d(tk.get("x_dns_control"))
    ctl_dns = {}
    for name, c in (("helper", control), ("doh", dns_control)):
        d = c.get("dns")
        if isinstance(d, dict):
            ctl_dns[name] = {"addrs": d.get("addrs") or [], "failure": d.get("failure")}
    ctl_tcp = _d(control.get("tcp_connect"))
    connects = []
    for c in tk.get("tcp_connect") or ():
        if not isinstance(c, dict):
            continue
        st = _d(c.get("status"))
        ep = f"{c.get('ip')}:{c.get('port')}"
        ctl = _d(ctl_tcp.get(ep)) if isinstance(ctl_tcp.get(ep), dict) else None
        connects.append({"endpoint": ep, "success": st.get("success"), "failure": st.get("failure"),
                         "control": None if ctl is None else {"success": ctl.get("status"),
                                                              "failure": ctl.get("failure")}})
    tls = []
    ctl_tls = _d(control.get("tls_handshake"))
    for h in tk.get("tls_handshakes") or ():
        if not isinstance(h, dict):
            continue
        chain = []
        for c in h.get("peer_certificates") or ():
            if isinstance(c, dict) and isinstance(c.get("data"), str):
                subject, issuer = _cert_names(c["data"])
                chain.append({"subject": subject, "issuer": issuer})
        ctl = _d(ctl_tls.get(str(h.get("address")))) if h.get("address") is not None else {}
        tls.append({"address": h.get("address"), "server_name": h.get("server_name"), "failure": h.get("failure"),
                    "tls_version": h.get("tls_version"), "verification_failure": h.get("x_verification_failure"),
                    "verified_anchor": h.get("x_verified_anchor"), "chain": chain,
                    "control": None if not ctl else {"success": ctl.get("status"), "failure": ctl.get("failure"),
                                                     "verification_failure": ctl.get("x_verification_failure"),
                                                     "issuer": ctl.get("x_issuer")}})
    http = []
    for r in tk.get("requests") or ():
        if not isinstance(r, dict):
            continue
        resp = _d(r.get("response"))
        body = resp.get("body")
        sha = resp.get("x_body_sha256")
        if sha is None and isinstance(body, str):
            sha = hashlib.sha256(body.encode()).hexdigest()
        http.append({"url": _d(r.get("request")).get("url"),
                     "address": r.get("address"), "failure": r.get("failure"), "status": resp.get("code"),
                     "title": resp.get("x_title"), "length": resp.get("x_body_length"), "body_sha256": sha})
    ch = _d(control.get("http_request"))
    ctl_http = None if not ch else {"status": ch.get("status_code"), "title": ch.get("title"),
                                    "length": ch.get("body_length"), "body_sha256": ch.get("x_body_sha256"),
                                    "failure": ch.get("failure")}
    return {"id": mid, "input": rec.get("input"), "measurement_start_time": rec.get("measurement_start_time"),
            "probe_asn": rec.get("probe_asn"), "probe_cc": rec.get("probe_cc"),
            "probe_network_name": rec.get("probe_network_name"), "verdict": _verdict(tk),
            "blocking": _ours(tk)[0], "accessible": _ours(tk)[1], "ooni_blocking": tk.get("blocking"),
            "dns_consistency": tk.get("dns_consistency"), "rule": tk.get("x_rule"), "reason": tk.get("x_reason"),
            "control_failure": tk.get("control_failure"), "dns": dns, "dns_control": ctl_dns,
            "tcp_connect": connects, "tls": tls, "mitm": tk.get("x_mitm"), "http": http, "http_control": ctl_http}


def _fmt(v: Any) -> str:
    return "-" if v is None else str(v)


def render_measurement(v: dict[str, Any]) -> str:
    """:func:`measurement_view` as text."""
    lines = [f"measurement {v['id']}", f"input:   {display_input(str(v['input'] or ''))}",
             f"time:    {_fmt(v['measurement_start_time'])} UTC   network: {_fmt(v['probe_asn'])} "
             f"{_fmt(v['probe_cc'])} {v['probe_network_name'] or ''}".rstrip(),
             f"verdict: {v['verdict']}   rule: {_fmt(v['rule'])}", f"reason:  {_fmt(v['reason'])}"]
    if v["control_failure"]:
        lines.append(f"control failure: {v['control_failure']}")
    lines.append(f"\nDNS (consistency: {_fmt(v['dns_consistency'])})")
    controls = {f"control ({name})": c for name, c in v["dns_control"].items()}
    # one answers' column, whatever the resolver's label (a DoH URL is often longer than 40)
    width = max([40, *(len(q["resolver"]) for q in v["dns"]), *(len(label) for label in controls)])
    for q in v["dns"]:
        got = ", ".join(q["answers"]) or "(none)"
        lines.append(f"  {q['resolver']:<{width}} {q['query_type'] or '':<5} {q['failure'] or got}")
    for label, c in controls.items():
        got = c["failure"] or ", ".join(map(str, c["addrs"])) or "(none)"
        lines.append(f"  {label:<{width}} {'':<5} {got}")
    lines.append("\nTCP connect")
    for c in v["tcp_connect"]:
        ctl = c["control"]
        ctl_s = "-" if ctl is None else ("ok" if ctl["success"] else _fmt(ctl["failure"]))
        lines.append(f"  {c['endpoint']:<46} {'ok' if c['success'] else _fmt(c['failure']):<24} control: {ctl_s}")
    lines.append("\nTLS")
    for h in v["tls"]:
        verified = (f"verified ({h['verified_anchor']})" if h["verified_anchor"] and not h["verification_failure"]
                    else f"NOT verified: {h['verification_failure']}" if h["verification_failure"] else "-")
        lines.append(f"  {_fmt(h['address'])} SNI {_fmt(h['server_name'])}: "
                     f"{h['failure'] or _fmt(h['tls_version'])}; {verified}")
        if h.get("control"):
            ctl = h["control"]
            lines.append("    control: " + ("ok" if ctl["success"] else _fmt(ctl["failure"]))
                         + (f", NOT verified: {ctl['verification_failure']}" if ctl["verification_failure"] else "")
                         + (f", issuer {ctl['issuer']}" if ctl["issuer"] else ""))
        for i, c in enumerate(h["chain"]):
            lines.append(f"    [{i}] {c['subject']}\n        issued by {c['issuer']}")
    if isinstance(v["mitm"], dict):
        lines.extend(_mitm_lines(v["mitm"]))
    lines.append("\nHTTP")
    for r in v["http"]:
        lines.append(f"  probe:   {_fmt(r['url'])} via {_fmt(r['address'])}: " + (
            r["failure"] or f"{_fmt(r['status'])}, title {r['title']!r}, {_fmt(r['length'])} bytes, "
                            f"sha256 {_fmt(r['body_sha256'])}"))
    c = v["http_control"]
    if c:
        lines.append("  control: " + (c["failure"] or f"{_fmt(c['status'])}, title {c['title']!r}, "
                                                       f"{_fmt(c['length'])} bytes, sha256 {_fmt(c['body_sha256'])}"))
    return "\n".join(lines)


def render_runs(runs: list[RunStatus], bad: list[tuple[str, str]]) -> str:
    """``kzprobe list`` as text, newest first."""
    lines = [f"{'start (UTC)':<26} {'network':<14} {'inputs':>7}  {'offline':<8} verdicts  report id"]
    for r in runs:
        counts = ", ".join(f"{k}: {n}" for k, n in sorted(r.counts.items())) or "-"
        off = "OFFLINE" if r.vantage_offline else "no"
        # a killed or running run has no summary (yet): what it planned is unknown
        planned = "?" if r.killed or r.running else r.inputs
        partial = (f"; PARTIAL verdicts: of the first {KILLED_READ_BYTES >> 20} MB only, the last "
                   f"{r.unread} counted, their verdicts not read" if r.unread else "")
        flag = (f"  [{NO_SUMMARY_TEXT}: counted from its measurements{partial}]" if r.killed
                else f"  [RUNNING: counted from its measurements so far{partial}]" if r.running
                else f"  [{stop_text(r.io_error)}]" if r.io_error else "")
        lines.append(f"{(r.start or '?')[:25]:<26} {network_of(r.report_id):<14} {r.measured:>3}/{planned:<3}  "
                     f"{off:<8} {counts}  {r.report_id}{flag}")
    if not runs:
        lines.append("(no runs)")
    lines += [f"unreadable: {f}: {why}" for f, why in bad]
    return "\n".join(lines)


def _row_text(r: dict[str, Any]) -> str:
    return f"{r['id'].rsplit(':', 1)[1]:>5}  {r['verdict']:<24} {display_input(r['input'])}  — {r['reason']}"


def _header(rid: str, n: int) -> str:
    return f"run {rid} ({network_of(rid)}): {n} measurements"


def _tail(rid: str, stats: LineStats) -> list[str]:
    shown = stats.skipped[:MAX_ROW_WARNINGS]  # break test: 400+ lines for 100 KB of junk
    lines = [f"line {n} skipped: {why}" for n, why in shown]
    if stats.count > len(shown):
        why = ", ".join(f"{n:,} {kind}" for kind, n in stats.by_reason.most_common())
        lines.append(f"... and {stats.count - len(shown):,} more skipped line(s) not shown "
                     f"({stats.count:,} skipped in all: {why}; the first {len(shown)} are above)")
    lines.append(f"(kzprobe show {rid}:LINE for one of them)")
    return lines


def render_measurements(rid: str, rows: list[dict[str, Any]], stats: LineStats) -> str:
    """``kzprobe list RUN`` as text."""
    return "\n".join([_header(rid, len(rows)), *map(_row_text, rows), *_tail(rid, stats)])


#: Of the rows' text, what ``kzprobe list RUN`` holds in memory before it spills the rest to a temporary
#: file: its first line names the rows' number, known only at the run file's end (~160 bytes a row).
SPOOL_BYTES = 1 << 20


def write_measurements(out: TextIO, rid: str, rows: Iterable[dict[str, Any]], stats: LineStats) -> None:
    """:func:`render_measurements`, terminal-safe (:func:`terminal_safe`) and a newline after, written to
    ``out`` with the rows streamed: they are counted into a spool (:data:`SPOOL_BYTES` in memory, then
    a temporary file), then the header and the spool are written."""
    with tempfile.SpooledTemporaryFile(SPOOL_BYTES, mode="w+", encoding="utf-8", errors="surrogatepass",
                                       newline="") as spool:
        n = 0
        for r in rows:
            spool.write(terminal_safe(_row_text(r)) + "\n")
            n += 1
        out.write(terminal_safe(_header(rid, n)) + "\n")
        spool.seek(0)
        shutil.copyfileobj(spool, out)
    out.write(terminal_safe("\n".join(_tail(rid, stats))) + "\n")


def write_measurements_json(out: TextIO, rid: str, rows: Iterable[dict[str, Any]], stats: LineStats) -> None:
    """``kzprobe list --json RUN``: ``json.dumps({"report_id", "measurements", "skipped_lines",
    "skipped_count", "skipped_by_reason"}, ensure_ascii=False, indent=1)`` and a newline, byte for byte
    (lone surrogates escaped: :func:`probe.safetext.json_text`), written a row at a time. Nothing is
    written before the run's file is open (the first row read)."""
    rows = iter(rows)
    first = next(rows, None)
    out.write(f'{{\n "report_id": {json_text(rid)},\n "measurements": [')
    n = 0
    for r in () if first is None else itertools.chain((first,), rows):
        out.write((",\n  " if n else "\n  ") + json_text(r, indent=1).replace("\n", "\n  "))
        n += 1
    out.write("\n ]" if n else "]")
    tail = json_text({"skipped_lines": [{"line": n, "reason": w} for n, w in stats.skipped],
                      "skipped_count": stats.count, "skipped_by_reason": dict(stats.by_reason)}, indent=1)
    out.write(f",{tail[1:]}\n")


def runs_json(runs: list[RunStatus], bad: list[tuple[str, str]]) -> dict[str, Any]:
    return {"runs": [{**asdict(r), "network": network_of(r.report_id)} for r in runs],
            "bad": [{"file": f, "reason": why} for f, why in bad]}

