"""The comparison report: ``index.html`` (self-contained), ``report.md``, ``claims.csv``, ``blocked.csv`` and the
PNG figures.

:func:`render` takes the measurements frame (``analysis.load`` columns), the comparison
results (``analysis.compare.compare``: one row per claim), the OONI agreement
(``analysis.ooni.agreement``) and the load statistics, and writes everything into one
directory. The HTML embeds its CSS and its figures (PNG as ``data:`` URIs): it opens from
disk with no network, loads no fonts or scripts, and prints cleanly. Every string from the
data (domains, reasons, titles, network names: hostile servers choose them) is escaped, by jinja2's
autoescaping in HTML and by :func:`md_escape` in Markdown; its terminal controls are shown as ``kzprobe show``
shows them (:func:`probe.safetext.terminal_safe`, in :func:`html_finalize` and :func:`md_escape`).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup

from analysis import palette, plots
from analysis.load import as_text, isin_mask, sorted_codes, unicode_domain, value_mask
from analysis.ooni import WEAK_MITM_RULES
from probe import vocab
from probe.errors import KzprobeError
from probe.geoip import DBIP_ATTRIBUTION
from probe.safetext import terminal_safe

TEMPLATES = Path(__file__).with_name("templates")

#: The compare columns, in order, as ``claims.csv`` writes them (analysis-schema.md, "Comparison").
CLAIMS_CSV_COLUMNS: tuple[str, ...] = (
    "claim_id", "section", "quote", "expect", "testable", "status", "n", "n_blocked", "n_accessible", "n_down",
    "n_inconclusive", "share_of", "blocked_share", "wilson_low", "wilson_high", "confidence", "n_vantages", "n_networks",
    "first", "last", "blocking_types", "mitm_roots", "example_ids", "since_status", "since_n", "explanation",
)

#: Claim status → the label shown on its badge.
STATUS_LABELS: dict[str, str] = {
    "supported": "supported", "contradicted": "contradicted", "inconclusive": "inconclusive",
    "not_measured": "not measured", "out_of_scope": "out of scope",
}

#: "Since the report" status → its label: a claim status, or "not applicable" for a one-off claim (an event or a
#: state that ended: later measurements neither support nor contradict it; ``Claim.one_off``).
SINCE_LABELS: dict[str, str] = {**STATUS_LABELS, "not_applicable": "not applicable"}

#: Compare's confidence (:func:`analysis.compare._confidence`) → the word on the verdict badge. "weak": fewer than
#: three independent (vantage point, day) observations or a Wilson interval wider than 0.5 — one measurement is weak.
CONFIDENCE_LABELS: dict[str, str] = {"high": "strong", "medium": "moderate", "low": "weak"}

#: What each claim status means (the methods section, HTML and Markdown).
STATUS_MEANINGS: tuple[tuple[str, str], ...] = (
    ("supported", ("Measurements made in the claim's period, of the claim's targets, show what the report says "
                   "(e.g. blocked when it says blocked), beyond what noise or a few failed measurements explain.")),
    ("contradicted", ("Judged measurements in the claim's period show the opposite of the claim (e.g. the site "
                      "was reachable from the same networks where the report says it was blocked).")),
    ("inconclusive", ("There are measurements, but too few were judged, or the judged ones disagree in a way "
                      "that neither supports nor contradicts the claim. Inconclusive is not 'blocked'.")),
    ("not measured", "No measurement of the claim's targets falls in its period. Nothing can be said."),
    ("out of scope", ("The claim is about something no network measurement can show (a law, an arrest, a "
                      "takedown request). It is listed with the reason, not dropped.")),
)

#: What each per-measurement outcome means (:mod:`probe.vocab`).
OUTCOME_MEANINGS: tuple[tuple[str, str], ...] = tuple(
    (o, vocab.OUTCOME_MEANINGS[o]) for o in ("blocked", "accessible", "down", "inconclusive"))

#: The methods section's words on vantage points that cannot be outage evidence.
OUTAGE_LIMITS = (
    "An outage claim is supported only by cut-off measurements (the vantage point offline, or its control failing "
    "as well as the first step) from at least two networks: one vantage point's own uplink failing looks the same. "
    "A vantage point whose control channel's TLS was intercepted (rule vantage.intercepted, or its run summary's "
    "control_intercepted_by) sits inside a middlebox'd network — a sandbox, a corporate proxy — and is never outage "
    "evidence: its failures describe the middlebox, not a shutdown.")

#: The methods section's words on where probe_asn / probe_cc / the network names come from; DB-IP's licence
#: (CC BY 4.0) asks for its attribution wherever its data is shown (probe/geoip.py).
NETWORK_SOURCE = (
    "A measurement's network (probe_asn, probe_cc, the network name) is what its vantage point's configuration says "
    "or, where that names none, kzprobe's lookup of the probe's public address in a MaxMind-format database (the "
    "probe's own or its control helper's; kzprobe assets update installs DB-IP's free ones: "
    f"{DBIP_ATTRIBUTION}). The address itself is never written. OONI's measurements carry OONI's own lookup.")

#: What each blocking type means (OONI's words plus kzprobe's tls_mitm and throttling; :mod:`probe.vocab`).
BLOCKING_MEANINGS: tuple[tuple[str, str], ...] = tuple(vocab.BLOCKING_MEANINGS.items())

#: Most evidence rows, disagreements, MITM rows and load errors shown in the HTML/Markdown.
MAX_EVIDENCE_ROWS = 500
MAX_DISAGREEMENTS = 100
MAX_MITM_ROWS = 50
MAX_ERRORS = 20
#: Per-file load counts shown in the table of files with problems (``LoadStats.by_file``), and the ones
#: that make a file appear there.
FILE_KEYS = ("lines", "loaded", "torn", "invalid", "blank", "duplicates")
PROBLEM_KEYS = ("torn", "invalid", "blank", "duplicates")
MAX_WINDOWS = 20


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReportPaths:
    """What :func:`render` wrote: the directory, its documents (``blocked.csv``: the "What is blocked" table, every
    row) and the PNG figures."""

    out_dir: Path
    index_html: Path
    report_md: Path
    claims_csv: Path
    images: tuple[Path, ...]
    blocked_csv: Path | None = None


class ReportError(KzprobeError, OSError):
    """The report could not be written (the output directory or one of its files); the message names it."""


# ---------------------------------------------------------------- value helpers


def _py(v: Any) -> Any:
    """A plain Python value: pandas/numpy NA → None, numpy scalars → int/float/bool."""
    if v is None:
        return None
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            return v.item()
        except (ValueError, AttributeError):
            return v
    return v


def _when(v: Any, *, minutes: bool = False) -> str:
    """A UTC timestamp as "2020-12-05" (or "2020-12-05 14:03" with ``minutes``); "" for None/NA."""
    v = _py(v)
    if v is None:
        return ""
    ts = pd.Timestamp(v)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC")
    return ts.strftime("%Y-%m-%d %H:%M") if minutes else ts.strftime("%Y-%m-%d")


def _num(v: Any, digits: int = 2) -> str:
    v = _py(v)
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def anchor(uid: object) -> str:
    """The HTML id of a measurement's evidence row: "m-" + 12 hex digits of the sha256 of its uid.

    Hashing keeps ids valid and unique whatever characters a uid holds.
    """
    return "m-" + hashlib.sha256(str(uid).encode("utf-8", "surrogatepass")).hexdigest()[:12]


def _split_ids(v: Any) -> list[str]:
    v = _py(v)
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return [str(x) for x in v if x]
    return [x.strip() for x in re.split(r"[,\s]+", str(v)) if x.strip()]


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>])")


def md_escape(v: Any) -> str:
    """Escape a data string for a Markdown table cell or text: HTML entities for ``& < >``,
    newlines as spaces, terminal controls shown as ``kzprobe show`` shows them (``\\x1b``:
    :func:`probe.safetext.terminal_safe`, so ``cat report.md`` cannot clear the screen or set the
    terminal's title), backslash before Markdown punctuation. ``Markup`` (our own) passes as is."""
    if isinstance(v, Markup):
        return str(v)
    v = _py(v)
    if v is None:
        return ""
    s = str(v).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = terminal_safe(re.sub(r"[\r\n\t]+", " ", s))
    return _MD_SPECIAL.sub(r"\\\1", s)


def html_finalize(v: Any) -> Any:
    """Every value the HTML template prints, before jinja2's autoescaping: data text with its terminal
    controls shown as ``kzprobe show`` shows them (:func:`probe.safetext.terminal_safe`; the page's
    source is read in terminals too, and a browser shows the raw codes as nothing or as boxes).
    Numbers and ``Markup`` (our own; anything with ``__html__``) pass as they are."""
    if hasattr(v, "__html__") or v is None or isinstance(v, (bool, int, float)):
        return v
    return terminal_safe(str(v))


def _fields(obj: Any) -> dict[str, Any]:
    """A stats/agreement object as a dict (dataclass, mapping, or plain attributes)."""
    if obj is None:
        return {}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return dict(obj)
    return {k: v for k, v in vars(obj).items() if not k.startswith("_")}


_ABS_DIRS = re.compile(r"(?<![\w/.~-])/(?:[^/\s:]+/)+(?=[^/\s:])")


def relative_path(text: str, inputs: Sequence[Path] = ()) -> str:
    """``text`` (a file path, or a message naming one) with no absolute path left: a path under an ``--in``
    directory becomes relative to it (prefixed with that directory's name when there are several ``--in``),
    an ``--in`` file its name, and any other absolute path its last component. The report travels (it is
    shared, published): it must not tell where the researcher keeps their data (home directory, user name)."""
    several = len(inputs) > 1
    forms: list[tuple[str, str]] = []
    for p in inputs:
        # a symlink to what is neither a file nor a directory (/dev/zero, a FIFO: left out unopened) is not
        # its target: "via a symlink to /dev/zero" read "via a symlink to <the --in's name>"
        real = (str(p.resolve()),) if p.is_dir() or p.is_file() else ()
        for form in dict.fromkeys((str(p), str(p.absolute()), *real)):
            if form in ("", "."):
                continue
            if p.is_dir():
                forms.append((form.rstrip("/") + "/", (p.resolve().name + "/") if several else ""))
            else:
                forms.append((form, p.name))
    for form, to in sorted(forms, key=lambda f: -len(f[0])):
        if form.startswith("/"):
            text = text.replace(form, to)
        elif text.startswith(form):  # a relative --in: only at the start, where a path given as is begins
            text = to + text[len(form):]
    return _ABS_DIRS.sub("", text)


# ---------------------------------------------------------------- context



def _own_network(frame: pd.DataFrame, fallback: pd.Series) -> pd.Series:
    """Per row: "ASN (its own probe_network_name)" where the row names its network, else
    ``fallback`` (the ASN's most common name). Two vantages sharing an ASN (two lab scenarios
    on AS64500) keep their own names in the vantage table."""
    if "probe_network_name" not in frame.columns:
        return fallback
    name = frame["probe_network_name"].astype("string")
    own = frame["probe_asn"].astype("string").fillna("AS?") + " (" + name + ")"
    return own.where(name.notna() & (name != ""), fallback.astype("string"))


def _summary(frame: pd.DataFrame, stats: Any) -> dict[str, Any]:
    n = len(frame)
    s: dict[str, Any] = {"n": n, "sources": [], "vantages": [], "networks": [], "first": "", "last": "",
                         "n_targets": 0, "load": None, "outcomes": []}
    if n:
        t = frame["measurement_start_time"].dropna()
        if len(t):  # the loader drops rows without a time; a frame built elsewhere may hold NaT
            s["first"], s["last"] = _when(t.min(), minutes=True), _when(t.max(), minutes=True)
        s["n_targets"] = int(frame["domain"].nunique())
        s["sources"] = [{"name": str(k), "n": int(v)}
                        for k, v in as_text(frame["source"]).fillna("nan").value_counts().sort_index().items()]
        s["outcomes"] = [{"name": str(k), "n": int(v)}
                         for k, v in as_text(frame["outcome"]).fillna("inconclusive").value_counts().items()]
        nets_all = plots.network_labels(frame)
        offline = (frame["vantage_offline"].fillna(False).astype(bool) if "vantage_offline" in frame.columns
                   else pd.Series(False, index=frame.index))
        v = pd.DataFrame({"v": frame["vantage_id"].astype("string").fillna("(unknown)").astype("category"),
                          "t": frame["measurement_start_time"], "net": _own_network(frame, nets_all).astype("category"),
                          "src": sorted_codes(frame["source"]), "off": offline.to_numpy()})
        agg = v.groupby("v", observed=True).agg(n=("t", "size"), first=("t", "min"), last=("t", "max"),
                                                off=("off", "sum"))

        def joined(col: str) -> dict[str, str]:
            pairs = v.groupby(["v", col], observed=True).size().reset_index()[["v", col]]
            return {str(k): ", ".join(sorted(str(x) for x in grp[col])) for k, grp in pairs.groupby("v", observed=True)}

        nets_of, srcs_of = joined("net"), joined("src")
        for vid, r in sorted(agg.iterrows(), key=lambda kv: (-int(kv[1]["n"]), str(kv[0]))):
            s["vantages"].append({
                "id": str(vid), "n": int(r["n"]), "first": _when(r["first"]), "last": _when(r["last"]),
                "networks": nets_of.get(str(vid), ""), "sources": srcs_of.get(str(vid), ""), "offline": int(r["off"]),
            })
        nets = nets_all.value_counts()
        s["networks"] = [{"name": str(k), "n": int(v)} for k, v in sorted(nets.items(), key=lambda kv: (-kv[1], kv[0]))]
    if stats is not None:
        st = _fields(stats)
        errors = [str(e) for e in (st.pop("errors", None) or [])]
        by_file = st.pop("by_file", None) or {}
        bad = [(f, c) for f, c in by_file.items()
               if isinstance(c, Mapping) and any(int(c.get(k) or 0) for k in PROBLEM_KEYS)]
        bad.sort(key=lambda fc: (-sum(int(fc[1].get(k) or 0) for k in PROBLEM_KEYS), str(fc[0])))
        s["load"] = {"counts": [(k, _py(v)) for k, v in st.items()
                               if isinstance(_py(v), (int, float)) and not k.startswith("max_")],
                     "errors": errors[:MAX_ERRORS], "n_errors": len(errors),
                     "file_keys": list(FILE_KEYS),
                     "files": [{"file": str(f), "counts": [int(c.get(k) or 0) for k in FILE_KEYS]}
                               for f, c in bad[:MAX_ERRORS]],
                     "n_files": len(bad)}
        dups = _py(st.get("duplicates"))
        s["duplicates"] = int(dups) if isinstance(dups, (int, float)) else None
    else:
        s["duplicates"] = None
    return s


def _claims(results: pd.DataFrame, known_ids: set[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    testable, out_of_scope = [], []
    for r in results.to_dict("records"):
        r = {k: _py(v) for k, v in r.items()}
        status = str(r.get("status") or "not_measured")
        row = {
            "id": r.get("claim_id") or "", "section": r.get("section") or "", "quote": r.get("quote") or "",
            "expect": r.get("expect") or "", "status": status, "status_label": STATUS_LABELS.get(status, status),
            "n": r.get("n") or 0, "n_blocked": r.get("n_blocked") or 0, "n_accessible": r.get("n_accessible") or 0,
            "n_down": r.get("n_down") or 0, "n_inconclusive": r.get("n_inconclusive") or 0,
            "share_of": r.get("share_of") or "blocked", "blocked_share": _num(r.get("blocked_share")), "wilson_low": _num(r.get("wilson_low")),
            "wilson_high": _num(r.get("wilson_high")), "confidence": r.get("confidence") or "",
            "n_vantages": r.get("n_vantages") or 0, "n_networks": r.get("n_networks") or 0,
            "first": _when(r.get("first")), "last": _when(r.get("last")),
            "blocking_types": r.get("blocking_types") or "", "mitm_roots": r.get("mitm_roots") or "",
            "examples": [{"uid": u, "anchor": anchor(u), "linked": u in known_ids}
                         for u in _split_ids(r.get("example_ids"))],
            "since_status": str(r.get("since_status") or ""), "since_n": r.get("since_n") or 0,
            "explanation": r.get("explanation") or "",
            "same_fact_as": r.get("same_fact_as") or "", "untested_targets": r.get("untested_targets") or "",
        }
        row["since_label"] = SINCE_LABELS.get(row["since_status"], row["since_status"])
        conf = str(r.get("confidence") or "")
        n_judged = int(r.get("n") or 0) - int(r.get("n_inconclusive") or 0)
        row["confidence_label"] = f"{CONFIDENCE_LABELS.get(conf, conf)} (n={n_judged})" if conf else ""
        (out_of_scope if status == "out_of_scope" or r.get("testable") is False else testable).append(row)
    return testable, out_of_scope


def _untested(claims: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Targets in no Citizen Lab test list of 2021, with the claims that name them (OONI did not measure them)."""
    out: dict[str, list[str]] = {}
    for c in claims:
        for t in (x.strip() for x in (c.get("untested_targets") or "").split(",")):
            if t:
                out.setdefault(t, []).append(c["id"])
    return [{"target": t, "claims": ", ".join(ids)} for t, ids in sorted(out.items())]


_EVIDENCE_COLS = ("measurement_uid", "measurement_start_time", "input", "vantage_id", "probe_asn", "source",
                  "blocking", "outcome", "verdict_source", "rule", "reason", "file", "line", "mitm_root")


def _evidence(frame: pd.DataFrame, results: pd.DataFrame, extra: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The evidence table: the claims' example measurements, then ``extra`` ones (the blocked-targets table's)."""
    wanted: list[str] = []
    if "example_ids" in results.columns:
        for v in results["example_ids"]:
            wanted.extend(_split_ids(v))
    wanted.extend(extra)
    wanted = list(dict.fromkeys(wanted))[:MAX_EVIDENCE_ROWS]
    if not wanted or len(frame) == 0:
        return []
    sub = frame.loc[frame["measurement_uid"].isin(wanted), [c for c in _EVIDENCE_COLS if c in frame.columns]]
    sub = sub.drop_duplicates("measurement_uid").sort_values("measurement_start_time", kind="stable")
    rows = []
    for r in sub.to_dict("records"):
        r = {k: _py(v) for k, v in r.items()}
        rows.append({**r, "anchor": anchor(r["measurement_uid"]), "when": _when(r["measurement_start_time"],
                                                                                  minutes=True),
                     "blocking": "" if r.get("blocking") is None else str(r["blocking"]),
                     "where": f"{r.get('file') or ''}:{r.get('line') or ''}"})
    return rows


# ---------------------------------------------------------------- per-measurement sections

#: Most per-measurement sections in one report. The report stays one file whatever the number of
#: measurements: only the measurements the evidence tables link to get a section (the claims' examples and
#: the blocked-targets table's, at most :data:`MAX_EVIDENCE_ROWS`), the first :data:`MAX_DETAILS` of them
#: in evidence order; the rest are counted. Each section is bounded too (:data:`DETAIL_LIMITS`, strings cut
#: at :data:`DETAIL_MAX_CHARS`): at most ~16 KB, so ≤ ~5 MB of sections even for a 100k- or 1M-measurement
#: report (which would be gigabytes with a section per measurement).
MAX_DETAILS = 300
#: Most items of each list a section shows (the rest counted): DNS queries, answers per query, connects,
#: TLS handshakes, certificates per chain, HTTP requests.
DETAIL_LIMITS = {"dns": 12, "answers": 8, "tcp_connect": 12, "tls": 6, "chain": 6, "http": 6}
DETAIL_MAX_CHARS = 300


def detail_anchor(uid: object) -> str:
    """The HTML id of a measurement's own section: "d-" + the hash :func:`anchor` uses."""
    return "d" + anchor(uid)[1:]


def _cut(v: Any, n: int = DETAIL_MAX_CHARS) -> Any:
    if isinstance(v, str) and len(v) > n:
        return v[: n - 1] + "…"
    return v


def _bounded(view: dict[str, Any]) -> dict[str, Any]:
    """:func:`probe.browse.measurement_view` with every list capped (:data:`DETAIL_LIMITS`, ``n_more_*`` the
    rest) and every string cut (:data:`DETAIL_MAX_CHARS`): a hostile record cannot blow up the page."""
    def cut_all(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: cut_all(v) for k, v in x.items()}
        if isinstance(x, list):
            return [cut_all(v) for v in x]
        return _cut(x)

    v = dict(view)
    for key in ("dns", "tcp_connect", "tls", "http"):
        items = list(v.get(key) or [])
        v[f"n_more_{key}"] = max(0, len(items) - DETAIL_LIMITS[key])
        v[key] = items[: DETAIL_LIMITS[key]]
    v["dns"] = [{**q, "answers": q["answers"][: DETAIL_LIMITS["answers"]],
                 "n_more": max(0, len(q["answers"]) - DETAIL_LIMITS["answers"])} for q in v["dns"]]
    v["tls"] = [{**h, "chain": h["chain"][: DETAIL_LIMITS["chain"]],
                 "n_more": max(0, len(h["chain"]) - DETAIL_LIMITS["chain"])} for h in v["tls"]]
    v["dns_control"] = dict(list((v.get("dns_control") or {}).items())[:4])
    for c in v["dns_control"].values():
        addrs = list(c.get("addrs") or [])
        c["addrs"] = [str(a) for a in addrs[: DETAIL_LIMITS["answers"]]]
        c["n_more"] = max(0, len(addrs) - DETAIL_LIMITS["answers"])
    mitm = v.get("mitm")
    v["mitm"] = mitm if isinstance(mitm, dict) else None
    return cut_all(v)


def _raw_records(wanted: dict[str, set[int]]) -> tuple[dict[tuple[str, int], dict[str, Any]], dict[str, str]]:
    """The raw records at ``{file: {line, ...}}`` (lines from 1, as :mod:`analysis.load` numbers them), read
    with the loader's bounds (:func:`analysis.load._open`: gzip capped; a line longer than
    :data:`analysis.load.MAX_LINE_BYTES` skipped). A file is read once, up to its last wanted line. Returns
    the records found and, per file that could not give them, why (a store file keeps no raw record)."""
    from analysis import load as ld
    from probe.bounded import loads_json

    found: dict[tuple[str, int], dict[str, Any]] = {}
    why: dict[str, str] = {}
    for fname, lines in wanted.items():
        path = Path(fname)
        if fname.endswith(".parquet"):
            why[fname] = "the synced OONI store keeps the verdict columns, not the raw record"
            continue
        try:
            if ld._is_jsonl(path):
                last = max(lines)
                with ld._open(path) as fh:
                    lineno = 0
                    while lineno < last:
                        raw = fh.readline(ld.MAX_LINE_BYTES + 1)
                        if not raw:
                            break
                        lineno += 1
                        if len(raw) > ld.MAX_LINE_BYTES and not raw.endswith(b"\n"):
                            ld._skip_line(fh)
                            continue
                        if lineno in lines:
                            try:
                                obj = loads_json(raw)
                            except (ValueError, UnicodeDecodeError, RecursionError):
                                continue
                            if isinstance(obj, dict):
                                found[(fname, lineno)] = obj
            else:
                for i, obj in ld._records(path, ld.LoadStats()):
                    if i in lines and isinstance(obj, dict):
                        found[(fname, i)] = obj
        except OSError as exc:
            why[fname] = f"unreadable now: {exc.strerror or exc}"
    return found, why


def _details(frame: pd.DataFrame, evidence: list[dict[str, Any]], inputs: Sequence[Path]) -> tuple[
        list[dict[str, Any]], int]:
    """One section per evidence row (the first :data:`MAX_DETAILS`), each the measurement as
    ``kzprobe show`` sees it (:func:`probe.browse.measurement_view`, bounded) with the analysis' verdict;
    and the number of evidence rows left without one."""
    from probe.browse import measurement_view

    rows = evidence[:MAX_DETAILS]
    wanted: dict[str, set[int]] = {}
    for e in rows:
        if e.get("file") and e.get("line"):
            wanted.setdefault(str(e["file"]), set()).add(int(e["line"]))
    raw, why = _raw_records(wanted)
    out = []
    for e in rows:
        key = (str(e.get("file") or ""), int(e.get("line") or 0))
        rec = raw.get(key)
        view = None
        missing = ""
        if rec is not None:
            try:
                view = _bounded(measurement_view(str(e["measurement_uid"]), rec))
            except (TypeError, ValueError, AttributeError) as exc:  # a record read is never trusted
                missing = f"the record could not be shown: {exc}"[:200]
        else:
            missing = why.get(key[0]) or "the record was not found at its file and line (moved or changed?)"
        out.append({**e, "detail_anchor": detail_anchor(e["measurement_uid"]), "view": view,
                    "missing": relative_path(missing, inputs)})
    return out, max(0, len(evidence) - len(rows))


#: Most (target, network) rows in the blocked-targets table at the top of the report.
MAX_BLOCKED_ROWS = 200


#: The columns of ``blocked.csv`` (the "What is blocked" table, every pair): the target (Unicode and A-label), the
#: country (``probe_cc``), the network, how it was blocked ("dns 3; tls 1", most common first), the counts and share,
#: the first and last blocked measurement (UTC) and the latest and first blocked measurement's uid.
BLOCKED_CSV_COLUMNS = ("target", "alabel", "country", "network", "blocking_types", "n_blocked", "n_judged",
                       "blocked_share", "first_blocked", "last_blocked", "example_latest", "example_first")


def blocked_pairs(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (target, country, network) with at least one blocked measurement: ``domain``, ``cc``, ``net``,
    ``n_blocked``, ``n_judged`` (blocked + accessible; down and inconclusive ones aside, as in the claims),
    ``first``/``last`` blocked, ``example``/``example_first`` (the latest and first blocked measurement's uid) and
    ``types`` ((blocking, count) most common first). Most blocked measurements first. The country is part of the
    key: OONI's measurements and ours from several countries are mixed, and one ASN may serve several."""
    blocked = value_mask(frame["outcome"], "blocked") if len(frame) else None
    if blocked is None or not blocked.any():
        return pd.DataFrame(columns=["domain", "cc", "net", "n_blocked", "n_judged", "first", "last", "example",
                                     "example_first", "types"])
    # only the rows of a (target, country, network) with a blocked measurement, chosen by integer keys (the merge on
    # the text of every row it replaces cost ~0.5 CPU-s a million rows); their order kept, as the merge kept it
    nets = plots.network_labels(frame)
    ccs = (frame["probe_cc"].astype("string").fillna("??") if "probe_cc" in frame.columns
           else pd.Series("??", index=frame.index, dtype="string")).astype("category")
    width, cc_width = len(nets.cat.categories) + 1, len(ccs.cat.categories) + 1
    key = (pd.factorize(frame["domain"].astype("string").fillna(""))[0].astype(np.int64) * cc_width
           + ccs.cat.codes.to_numpy(dtype=np.int64)) * width + nets.cat.codes.to_numpy(dtype=np.int64)
    keep = np.flatnonzero(np.isin(key, np.unique(key[blocked])))
    frame = frame.iloc[keep].reset_index(drop=True)  # the labels stay the whole frame's (a name per ASN)
    outcome = frame["outcome"].astype("string").fillna("inconclusive")
    f = pd.DataFrame({"domain": frame["domain"].astype("string").fillna(""),
                      "cc": pd.Series(ccs.iloc[keep].to_numpy(), index=frame.index).astype("string"),
                      "net": pd.Series(nets.iloc[keep].to_numpy(), index=frame.index).astype("string"),
                      "blocked": (outcome == "blocked").to_numpy(dtype=bool),
                      "judged": outcome.isin(["blocked", "accessible"]).to_numpy(dtype=bool),
                      "t": frame["measurement_start_time"],
                      "uid": frame["measurement_uid"].astype("string"),
                      "blocking": frame["blocking"].astype("string").fillna("")})
    by = ["domain", "cc", "net"]
    judged = f.groupby(by, observed=True)["judged"].sum()
    b = f[f["blocked"]].sort_values("t", kind="stable")
    agg = b.groupby(by, observed=True).agg(
        n_blocked=("t", "size"), first=("t", "min"), last=("t", "max"), example=("uid", "last"),
        example_first=("uid", "first"))
    types = (b.groupby([*by, "blocking"], observed=True).size().rename("n").reset_index()
             .sort_values(["n", "blocking"], ascending=[False, True], kind="stable"))
    type_lists: dict[tuple[str, str, str], list[tuple[str, int]]] = {}
    for d, c, n, k, v in types[[*by, "blocking", "n"]].itertuples(index=False):
        type_lists.setdefault((d, c, n), []).append((str(k), int(v)))
    agg["n_judged"] = judged.reindex(agg.index).fillna(0).astype(int)
    agg["types"] = [type_lists.get(k, []) for k in agg.index]
    return agg.reset_index().sort_values(["n_blocked", *by], ascending=[False, True, True, True], kind="stable")


def _blocked_targets(frame: pd.DataFrame, pairs: pd.DataFrame | None = None) -> tuple[list[dict[str, Any]], int]:
    """The report's first table (:func:`blocked_pairs`, at most :data:`MAX_BLOCKED_ROWS` rows): per (target, country,
    network) with at least one blocked measurement, how it was blocked (with counts), the blocked share of its
    judged measurements with n, the first and last blocked measurement and examples (the latest and the first
    blocked one); and the number of (target, country, network) triples with a blocked measurement. ``pairs``:
    :func:`blocked_pairs` of ``frame`` already made (:func:`render` makes it once for this table and blocked.csv)."""
    agg = blocked_pairs(frame) if pairs is None else pairs
    rows = []
    for r in agg.head(MAX_BLOCKED_ROWS).to_dict("records"):
        nb, nj = int(r["n_blocked"]), int(r["n_judged"])
        rows.append({"domain": unicode_domain(r["domain"]), "alabel": r["domain"], "country": str(r["cc"]),
                     "network": str(r["net"]),
                     "types": [{"name": k or "?", "n": v} for k, v in r["types"]],
                     "n_blocked": nb, "n_judged": nj, "share": f"{nb / nj:.2f}" if nj else "",
                     "first": _when(r["first"], minutes=True), "last": _when(r["last"], minutes=True),
                     "example": str(r["example"]), "anchor": anchor(r["example"]),
                     "examples": [{"uid": u, "anchor": anchor(u)}
                                  for u in dict.fromkeys((str(r["example"]), str(r["example_first"])))]})
    return rows, len(agg)


def _blocked_csv(agg: pd.DataFrame) -> pd.DataFrame:
    """``blocked.csv``: every row of ``agg`` (:func:`blocked_pairs`, not capped), :data:`BLOCKED_CSV_COLUMNS`."""
    nb, nj = agg["n_blocked"].astype(int), agg["n_judged"].astype(int)
    return pd.DataFrame({
        "target": [unicode_domain(d) for d in agg["domain"]], "alabel": list(agg["domain"]),
        "country": list(agg["cc"]), "network": list(agg["net"]),
        "blocking_types": ["; ".join(f"{k or '?'} {v}" for k, v in t) for t in agg["types"]],
        "n_blocked": list(nb), "n_judged": list(nj),
        "blocked_share": [f"{b / j:.2f}" if j else "" for b, j in zip(nb, nj, strict=True)],
        "first_blocked": [_when(t, minutes=True) for t in agg["first"]],
        "last_blocked": [_when(t, minutes=True) for t in agg["last"]],
        "example_latest": [str(u) for u in agg["example"]], "example_first": [str(u) for u in agg["example_first"]],
    }, columns=list(BLOCKED_CSV_COLUMNS))


#: What the MITM table shows as the root of interception found on weaker evidence (no certificate recorded).
WEAK_MITM_ROOT = ("no certificate recorded (OONI < 0.4): refused as an unknown authority on a known target in a "
                  "known interception window — weaker evidence than a matched root")


def _mitm(frame: pd.DataFrame) -> tuple[list[dict[str, Any]], int]:
    if len(frame) == 0 or "mitm_root" not in frame.columns:
        return [], 0
    weak = (isin_mask(frame["rule"], WEAK_MITM_RULES)
            if "rule" in frame.columns else False)
    f = frame.loc[frame["mitm_root"].notna().to_numpy(dtype=bool) | weak]
    if len(f) == 0:
        return [], 0
    issuers = f["tls_issuers"].astype("string").fillna("") if "tls_issuers" in f.columns else ""
    roots = f["mitm_root"].astype(object).where(f["mitm_root"].notna(), WEAK_MITM_ROOT).astype(str)
    g = (pd.DataFrame({"domain": f["domain"].astype("string").fillna(""), "root": roots,
                       "issuers": issuers, "t": f["measurement_start_time"], "v": f["vantage_id"].astype(str)})
         .groupby(["domain", "root", "issuers"], sort=False)
         .agg(n=("t", "size"), first=("t", "min"), last=("t", "max"), vantages=("v", "nunique")).reset_index()
         .sort_values(["n", "domain"], ascending=[False, True], kind="stable"))
    rows = [{"domain": unicode_domain(r["domain"]), "alabel": r["domain"], "root": r["root"], "issuers": r["issuers"], "n": int(r["n"]),
             "first": _when(r["first"]), "last": _when(r["last"]), "vantages": int(r["vantages"])}
            for r in g.head(MAX_MITM_ROWS).to_dict("records")]
    return rows, len(g)


def offline_windows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Per vantage point, its offline windows: runs of consecutive (by time) measurements with
    ``vantage_offline`` true, each as {vantage, start, end, n}; at most :data:`MAX_WINDOWS` per vantage."""
    if len(frame) == 0 or "vantage_offline" not in frame.columns:
        return []
    f = pd.DataFrame({"v": frame["vantage_id"].astype("string").fillna("(unknown)"),
                      "t": frame["measurement_start_time"],
                      "off": frame["vantage_offline"].fillna(False).astype(bool)}).dropna(subset=["t"])
    if not f["off"].any():
        return []
    f = f.sort_values(["v", "t"], kind="stable")
    run_id = (f["off"] != f.groupby("v")["off"].shift()).cumsum()
    w = (f[f["off"]].groupby([f["v"], run_id]).agg(start=("t", "min"), end=("t", "max"), n=("t", "size"))
         .reset_index())
    out = []
    for v, sub in w.groupby("v", sort=True):
        for r in sub.head(MAX_WINDOWS).to_dict("records"):
            out.append({"vantage": str(v), "start": _when(r["start"], minutes=True),
                        "end": _when(r["end"], minutes=True), "n": int(r["n"])})
    return out


#: Labels for the agreement's counts and rates (analysis.ooni.Agreement); other numeric fields show by name.
AGREEMENT_LABELS: dict[str, str] = {
    "rate": "same outcome", "type_rate": "same blocking type", "n_ooni": "OONI measurements",
    "n_compared": "judged by kzprobe too", "n_agree": "same outcome", "n_same_type": "same blocking type",
    "n_known_ooni_errors": "disagreements where OONI is known to be wrong",
}


def _agreement(frame: pd.DataFrame, agreement: Any) -> dict[str, Any] | None:
    """The agreement section's values, or None when the frame holds no OONI measurement."""
    has_ooni = len(frame) > 0 and bool(value_mask(frame["source"], "ooni").any())
    if not has_ooni:
        return None
    a = _fields(agreement)
    dis, pairs = a.pop("disagreements", None), a.pop("pairs", None)
    rates, counts = [], []
    for k, v in a.items():
        v = _py(v)
        label = AGREEMENT_LABELS.get(k, k.replace("_", " "))
        if k.endswith("rate"):
            rates.append((label, "—" if v is None else f"{100 * float(v):.1f} %"))
        elif isinstance(v, int) and not isinstance(v, bool):
            counts.append((label, v))
    rows: list[dict[str, Any]] = []
    n_dis = 0
    if isinstance(dis, pd.DataFrame) and len(dis):
        n_dis = len(dis)
        for r in dis.head(MAX_DISAGREEMENTS).to_dict("records"):
            r = {k: _py(v) for k, v in r.items()}
            rows.append({"uid": r.get("measurement_uid") or "", "input": r.get("input") or "",
                         "ooni_blocking": "" if r.get("ooni_blocking") is None else str(r.get("ooni_blocking")),
                         "blocking": "" if r.get("blocking") is None else str(r.get("blocking")),
                         "kind": r.get("kind") or "", "rule": r.get("rule") or "", "reason": r.get("reason") or "",
                         "ooni_error": r.get("known_ooni_error") or "",
                         "where": f"{r['file']}:{r.get('line') or ''}" if r.get("file") else ""})
    pair_rows = []
    if isinstance(pairs, pd.DataFrame) and len(pairs):
        for r in pairs.to_dict("records"):
            r = {k: _py(v) for k, v in r.items()}
            pair_rows.append({"ooni": str(r.get("ooni_blocking")), "ours": str(r.get("blocking")),
                              "n": r.get("n") or 0})
    return {"available": agreement is not None, "rates": rates, "counts": counts, "pairs": pair_rows,
            "disagreements": rows, "n_disagreements": n_dis}


def _figures(frame: pd.DataFrame, out_dir: Path) -> list[dict[str, Any]]:
    figs = []
    for name, fn, alt in plots.FIGURES:
        png = fn(frame, path=out_dir / name)  # type: ignore[operator]
        figs.append(_figure_entry(name, alt, png))
    return figs


def _figure_entry(name: str, alt: str, png: bytes) -> dict[str, Any]:
    return {"file": name, "alt": alt, "uri": "data:image/png;base64," + base64.b64encode(png).decode()}


#: Measurements from which the figures are drawn in forked worker processes while this one builds the
#: rest of the report (the 1M-row store report: 8 figures, ~7 CPU-s, on the second core); below it, here
#: (a fork of a small process costs more than its figures).
PARALLEL_FIGURES_MIN_ROWS = 100_000

#: The frame the forked figure workers draw from (set before they fork: shared, never pickled).
_FIGURE_FRAME: pd.DataFrame | None = None


def _figure_job(i: int, path: str) -> bytes:
    """In a forked worker: figure ``i`` of :data:`analysis.plots.FIGURES`, written to ``path``; its PNG bytes."""
    _, fn, _ = plots.FIGURES[i]
    return fn(_FIGURE_FRAME, path=Path(path))  # type: ignore[operator]


def _figure_worker_init() -> None:
    """In a forked figure worker: new stdout/stderr objects on the same descriptors. Another thread of the
    parent (``kzprobe report``'s spinner) may have held the old ones' lock at the fork, and a warning
    from matplotlib (a glyph missing for a hostile label) would then wait for it forever."""
    for name, fd in (("stdout", 1), ("stderr", 2)):
        try:
            setattr(sys, name, os.fdopen(os.dup(fd), "w", encoding="utf-8", errors="replace"))
        except OSError:  # the descriptor is closed: nowhere to write
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115 (lives as long as the worker)


def _figure_workers() -> int:
    """Worker processes for the figures: the CPUs this process may use (at most one per figure); 0 = draw here."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        return 0
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return min(cpus, len(plots.FIGURES)) if cpus > 1 else 0


def _start_figures(frame: pd.DataFrame, out_dir: Path,
                   stack: contextlib.ExitStack) -> Callable[[], list[dict[str, Any]]]:
    """Start drawing the figures; returns the function that collects them (in :data:`analysis.plots.FIGURES`
    order, the same PNG bytes either way). A big frame's figures are drawn by forked worker processes (the
    pool closes with ``stack``), a small one's here when collected; a worker that dies has its figure
    drawn here."""
    global _FIGURE_FRAME
    workers = _figure_workers() if len(frame) >= PARALLEL_FIGURES_MIN_ROWS else 0
    if not workers:
        return lambda: _figures(frame, out_dir)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    _FIGURE_FRAME = frame

    def forget() -> None:
        global _FIGURE_FRAME
        _FIGURE_FRAME = None

    stack.callback(forget)  # after the pool is shut down (callbacks run last in, first out)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=_figure_worker_init)
    stack.callback(pool.shutdown, wait=True, cancel_futures=True)  # on an error before collecting: no more drawn
    futures = [pool.submit(_figure_job, i, str(out_dir / name)) for i, (name, _, _) in enumerate(plots.FIGURES)]

    def collect() -> list[dict[str, Any]]:
        figs = []
        for fut, (name, fn, alt) in zip(futures, plots.FIGURES, strict=True):
            try:
                png = fut.result()
            except BrokenProcessPool:  # a worker died (killed, out of memory): drawn here instead
                png = fn(frame, path=out_dir / name)  # type: ignore[operator]
            figs.append(_figure_entry(name, alt, png))
        return figs

    return collect


def _scope(scope: Any) -> dict[str, Any]:
    """The scope's values for the templates (an :class:`analysis.scope.Scope` or None = a real report, nothing left out)."""
    if scope is None:
        return {"lab": False, "scenarios": "", "n_lab_left_out": 0, "lab_left_out": "", "n_real_left_out": 0,
                "country": "", "n_other_country": 0, "other_countries": "", "empty_inputs": []}
    return {"lab": bool(scope.lab), "scenarios": ", ".join(scope.scenarios),
            "n_lab_left_out": int(scope.n_lab_left_out),
            "lab_left_out": ", ".join(f"{k} ({n})" for k, n in scope.lab_left_out),
            "n_real_left_out": int(scope.n_real_left_out), "country": scope.country or "",
            "n_other_country": int(scope.n_other_country),
            "other_countries": ", ".join(f"{k} ({n})" for k, n in scope.other_countries),
            # the --in's own name, never where it lies (the report travels: relative_path); abspath, not resolve: a
            # symlink (to /dev/zero) is named as given, not by its target ("." and ".." still get a name)
            "empty_inputs": [{"name": Path(os.path.abspath(e.path)).name or str(e.path), "files": e.files,
                              "lines": e.lines,
                              "invalid": e.invalid, "torn": e.torn, "skipped": e.skipped,
                              "why": getattr(e, "why", "")}
                             for e in getattr(scope, "empty_inputs", ())]}


def build_context(frame: pd.DataFrame, results: pd.DataFrame, *, agreement: Any, stats: Any, title: str,
                  ignore_period: bool, generated_at: dt.datetime | None = None, scope: Any = None,
                  inputs: Sequence[Path] = (), pairs: pd.DataFrame | None = None) -> dict[str, Any]:
    """Everything the templates show, as plain Python values (no figures: :func:`render` adds them).
    ``pairs``: :func:`blocked_pairs` of ``frame`` when the caller has it (None = made here).
    ``scope``: an :class:`analysis.scope.Scope` (lab or real, what was left out), or None. ``inputs``: the
    ``--in`` paths: every file path shown is relative to them, none absolute (:func:`relative_path`)."""
    inputs = [Path(p) for p in inputs]
    blocked, n_blocked_pairs = _blocked_targets(frame, pairs)
    evidence = _evidence(frame, results, [x["uid"] for b in blocked for x in b["examples"]])
    known = {e["measurement_uid"] for e in evidence}
    for e in evidence:
        e["where"] = relative_path(e["where"], inputs)
    details, n_details_left = _details(frame, evidence, inputs)
    detailed = {d["measurement_uid"]: d["detail_anchor"] for d in details}
    for e in evidence:
        e["detail_anchor"] = detailed.get(e["measurement_uid"], "")
    for b in blocked:
        b["linked"] = b["example"] in known
        for x in b["examples"]:
            x["href"] = detailed.get(x["uid"]) or (x["anchor"] if x["uid"] in known else "")
    testable, out_of_scope = _claims(results, known)
    for c in testable:
        for x in c["examples"]:
            x["href"] = detailed.get(x["uid"]) or (x["anchor"] if x["linked"] else "")
    mitm_rows, n_mitm = _mitm(frame)
    counts = {k: 0 for k in STATUS_LABELS}
    n_repeats = 0
    for c in testable + out_of_scope:
        if c["same_fact_as"]:  # one fact judged two or three times counts once
            n_repeats += 1
            continue
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    when = (generated_at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    summary, agree = _summary(frame, stats), _agreement(frame, agreement)
    for d in (agree or {}).get("disagreements", []):
        d["where"] = relative_path(d["where"], inputs)
    if summary.get("load"):
        summary["load"]["errors"] = [relative_path(e, inputs) for e in summary["load"]["errors"]]
        for f in summary["load"]["files"]:
            f["file"] = relative_path(f["file"], inputs)
    return {
        "title": title, "generated": when.strftime("%Y-%m-%d %H:%M UTC"), "ignore_period": ignore_period,
        "summary": summary, "claims": testable, "out_of_scope": out_of_scope,
        "status_counts": [(STATUS_LABELS[k], k, v) for k, v in counts.items() if k in STATUS_LABELS],
        "n_repeats": n_repeats, "untested": _untested(testable),
        "blocked": blocked, "n_blocked_pairs": n_blocked_pairs,
        "evidence": evidence, "details": details, "n_details_left": n_details_left, "max_details": MAX_DETAILS,
        "mitm": mitm_rows, "n_mitm": n_mitm, "windows": offline_windows(frame),
        "agreement": agree,
        "status_meanings": STATUS_MEANINGS, "outcome_meanings": OUTCOME_MEANINGS,
        "blocking_meanings": BLOCKING_MEANINGS, "outage_limits": OUTAGE_LIMITS, "network_source": NETWORK_SOURCE,
        "scope": _scope(scope),
        "legend": [(k, c) for k, c in {**palette.OUTCOME_COLOURS, **palette.BLOCKING_COLOURS}.items()],
    }


def period_hint(results: pd.DataFrame, *, ignore_period: bool, as_of: dt.date | None = None) -> str:
    """A hint when no testable claim could be judged because of the claims' periods: every testable claim is
    "not measured" in its period while measurements of its targets exist after it (a lab run, made today, is
    after every claim's period). Says what ``--ignore-period`` and ``--as-of`` do. "" otherwise."""
    if ignore_period or as_of is not None or len(results) == 0 or "since_n" not in results.columns:
        return ""
    testable = results[results["testable"].astype(bool) & (results["status"].astype(str) != "out_of_scope")]
    if len(testable) == 0 or (testable["status"].astype(str) != "not_measured").any():
        return ""
    # since_n counts a measurement once per claim it concerns: name the claims, not a sum of measurements
    # (the sum said "175 later measurement(s)" for a 25-measurement lab run: break test, stop 18)
    later = int((testable["since_n"] > 0).sum())
    if not later:
        return ""
    return ("No claim could be judged: every measurement of the claims' targets was made after the claim's period "
            f"({later} of {len(testable)} testable claim(s) have later measurements; they show under 'since the "
            "report'). --ignore-period judges every "
            "measurement against every claim whatever its date (for lab runs that model the report's situation today); "
            "--as-of DATE takes every measurement as made on that UTC day.")


def _env(markdown: bool) -> jinja2.Environment:
    if markdown:
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=False,
                                 undefined=jinja2.StrictUndefined, finalize=md_escape, keep_trailing_newline=True,
                                 trim_blocks=True, lstrip_blocks=True)
    else:
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                 undefined=jinja2.StrictUndefined, finalize=html_finalize, trim_blocks=True,
                                 lstrip_blocks=True)
    return env


def _claims_csv(results: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in CLAIMS_CSV_COLUMNS if c in results.columns]
    cols += [c for c in results.columns if c not in cols]
    out = results.loc[:, cols].copy()
    for c in ("first", "last"):
        if c in out.columns:
            out[c] = [(_when(v, minutes=True) if _py(v) is not None else "") for v in out[c]]
    return out


def _context(frame: pd.DataFrame, results: pd.DataFrame, *, agreement: Any, stats: Any, title: str,
             ignore_period: bool, as_of: dt.date | None, generated_at: dt.datetime | None, scope: Any,
             volume: dict[str, Any] | None, inputs: Sequence[Path], pairs: pd.DataFrame | None = None
             ) -> dict[str, Any]:
    """:func:`build_context` and what :func:`render` adds to it, but the figures."""
    ctx = build_context(frame, results, agreement=agreement, stats=stats, title=title,
                        ignore_period=ignore_period, generated_at=generated_at, scope=scope, inputs=inputs,
                        pairs=pairs)
    ctx["as_of"] = as_of.isoformat() if as_of else ""
    ctx["period_hint"] = period_hint(results, ignore_period=ignore_period, as_of=as_of)
    ctx["volume"] = volume  # analysis.outages.report_section: outages from OONI's measurement volume
    return ctx


@contextlib.contextmanager
def started_figures(frame: pd.DataFrame, out_dir: Path) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The figures of ``frame`` started now (drawn beside whatever the caller does next when the frame is
    big: :func:`_start_figures`), for :func:`render`'s ``figures``; the workers end with the block."""
    with contextlib.ExitStack() as stack:
        yield _start_figures(frame, Path(out_dir), stack)


def render(frame: pd.DataFrame, results: pd.DataFrame, *, agreement: Any = None, stats: Any = None,
           out_dir: Path, title: str = "kzprobe report", ignore_period: bool = False,
           as_of: dt.date | None = None, generated_at: dt.datetime | None = None, scope: Any = None,
           volume: dict[str, Any] | None = None, inputs: Sequence[Path] = (),
           figures: Callable[[], list[dict[str, Any]]] | None = None) -> ReportPaths:
    """Write the report into ``out_dir`` (created if missing) and return the paths written.

    ``frame``: the measurements (``analysis.load`` columns; may be empty). ``results``: one
    row per claim (``analysis.compare`` columns). ``agreement``: an ``analysis.ooni.Agreement``
    (its ``rate`` in 0..1, integer counts, ``disagreements`` DataFrame) or None; the agreement
    section appears when the frame holds OONI rows. ``stats``: ``analysis.load.LoadStats`` or
    None. ``ignore_period``: the comparison ignored the claims' dates (lab runs); the report
    says so. ``as_of``: the comparison took every measurement as made on this day (a lab
    scenario modelling one day); the report says so. ``generated_at``: the time printed
    (default now, UTC). ``scope``: an :class:`analysis.scope.Scope`: a lab report gets a banner
    saying its measurements are simulated (and of which scenario); measurements left out (lab
    ones, other countries') are counted in the summary. ``volume``: the "outages from volume"
    section (:func:`analysis.outages.report_section`) or None. ``inputs``: the ``--in`` paths; file paths
    in the report are shown relative to them, and no absolute path is written (:func:`relative_path`).
    ``figures``: the figures of ``frame`` already started into ``out_dir`` (:func:`started_figures`); None =
    started here.

    Files: ``index.html``, ``report.md``, ``claims.csv`` (UTF-8, one row per claim, the
    compare columns first), ``blocked.csv`` (UTF-8, every (target, country, network) with a blocked measurement:
    :data:`BLOCKED_CSV_COLUMNS`), and the PNGs of :data:`analysis.plots.FIGURES`.
    Raises :class:`ReportError` naming the path when something cannot be written.
    """
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            if figures is None:
                figures = _start_figures(frame, out_dir, stack)  # drawn beside the context when the frame is big
            pairs = blocked_pairs(frame)  # once: the first table and blocked.csv (a groupby of the whole frame)
            ctx = _context(frame, results, agreement=agreement, stats=stats, title=title, ignore_period=ignore_period,
                           as_of=as_of, generated_at=generated_at, scope=scope, volume=volume, inputs=inputs,
                           pairs=pairs)
            ctx["figures"] = figures()
        ctx["fig"] = {f["file"]: f for f in ctx["figures"]}
        ctx["css"] = Markup((TEMPLATES / "report.css").read_text(encoding="utf-8") + "\n" + palette.css())
        html = _env(markdown=False).get_template("report.html.j2").render(ctx)
        md = _env(markdown=True).get_template("report.md.j2").render(ctx)
        index, report_md, claims_csv = out_dir / "index.html", out_dir / "report.md", out_dir / "claims.csv"
        blocked_csv = out_dir / "blocked.csv"
        index.write_text(html, encoding="utf-8")
        report_md.write_text(md, encoding="utf-8")
        _claims_csv(results).to_csv(claims_csv, index=False, encoding="utf-8")
        _blocked_csv(pairs).to_csv(blocked_csv, index=False, encoding="utf-8")
    except OSError as exc:
        raise ReportError(exc.errno, f"cannot write the report in {out_dir}: {exc.strerror or exc}",
                          exc.filename or str(out_dir)) from exc
    return ReportPaths(out_dir=out_dir, index_html=index, report_md=report_md, claims_csv=claims_csv,
                       blocked_csv=blocked_csv,
                       images=tuple(out_dir / f["file"] for f in ctx["figures"]))


def iter_status_counts(results: pd.DataFrame) -> Iterable[tuple[str, int]]:
    """(status label, count) for each status present in ``results``, in vocabulary order (for one-line summaries)."""
    if len(results) and "same_fact_as" in results.columns:  # a repeated fact counts once
        results = results[results["same_fact_as"].isna() | (results["same_fact_as"].astype(object) == "")]
    vc = results["status"].astype(str).value_counts() if len(results) else pd.Series(dtype=int)
    for k, label in STATUS_LABELS.items():
        if int(vc.get(k, 0)):
            yield label, int(vc.get(k, 0))
