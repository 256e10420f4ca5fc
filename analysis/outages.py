"""Outages from volume: a network cut off cannot submit, so its measurements go missing.

An outage does not show as failing measurements (a cut-off probe uploads nothing, or uploads
days later); it shows as a day with far fewer measurements than the network usually has.
Input: coverage counts per day and network (``day``, ``probe_asn``, ``n``) — from the synced
store (:func:`store_coverage`, written to ``coverage.csv`` by ``kzprobe ooni sync``) or from
OONI's API (:func:`analysis.ooni_api.coverage`, ``/api/v1/aggregation``). ``kzprobe ooni coverage
--store DIR`` (or ``kzprobe ooni sync --coverage``) saves the API's counts beside the store as
:data:`API_COVERAGE` with what was asked in :data:`API_COVERAGE_META`; ``kzprobe report --in DIR``
then judges volume on them (:func:`coverage_beside`): the API counts every measurement OONI
holds, the store only those synced (one test, the period's days, the objects that were fetched).

Method (:func:`volume_drops`), per network:

* baseline = the median of the previous :data:`BASELINE_DAYS` days' counts (days with no row
  count 0), needing at least :data:`MIN_HISTORY` of those days measured at all;
* a day is a *drop* when its count is at most :data:`DROP_FRACTION` of a baseline of at least
  :data:`MIN_BASELINE` measurements a day (too thin a baseline says nothing: OONI's volunteers
  run tests irregularly);
* consecutive drop days form one event.

Strength (:func:`strength`) — how much a drop says about an outage:

* ``strong``: the network's baseline is at least :data:`STRONG_BASELINE` a day and the day has
  none at all, while other networks of the country kept their volume (so OONI's pipeline and
  the volunteers' habits are not the cause);
* ``moderate``: a drop on a baseline that is not thin, other networks normal;
* ``weak``: every network of the country dropped the same day (a nationwide shutdown looks
  like this — and so does a gap in OONI's own collection, which this cannot tell apart), or
  the baseline is thin.

Limits, said in the report: volume is indirect evidence. Fewer volunteers running the app
(holidays, an app update, a test list change) also lowers volume; a drop supports an
outage claim, it never proves one, and no drop contradicts a local outage (a city cut off
is a small share of a network's volunteers).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

#: Days of history the baseline is the median of.
BASELINE_DAYS = 28
#: Days of that history that must have been measured at all before a baseline counts.
MIN_HISTORY = 14
#: Least baseline (measurements a day) a drop is judged against.
MIN_BASELINE = 20
#: A day at or below this share of its baseline is a drop.
DROP_FRACTION = 0.2
#: Baseline from which a day with nothing is strong evidence.
STRONG_BASELINE = 100
#: Share of the country's networks (with a baseline) that dropped together for a "country-wide" day.
COUNTRYWIDE_SHARE = 0.8
STRENGTHS = ("strong", "moderate", "weak")

COVERAGE_COLUMNS = ("day", "probe_asn", "n")
#: The API's coverage counts saved beside a synced store, and what was asked (cc, since, until, test, api_url, fetched).
API_COVERAGE = "api-coverage.csv"
API_COVERAGE_META = "api-coverage.json"
DROP_COLUMNS = ("probe_asn", "first", "last", "days", "baseline", "n", "ratio", "countrywide", "strength", "why")


def store_coverage(root: Path) -> pd.DataFrame:
    """Measurements per day and network in a synced store (``day``, ``probe_asn``, ``n``)."""
    import pyarrow.parquet as pq

    from analysis.ooni_store import iter_store_files

    parts = []
    for f in iter_store_files(root):
        t = pq.read_table(f, columns=["measurement_start_time", "probe_asn"]).to_pandas()
        if len(t):
            day = pd.to_datetime(t["measurement_start_time"], utc=True).dt.strftime("%Y-%m-%d")
            parts.append(pd.DataFrame({"day": day, "probe_asn": t["probe_asn"].astype(str)})
                         .value_counts().rename("n").reset_index())
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "n" else "string") for c in COVERAGE_COLUMNS})
    out = pd.concat(parts).groupby(["day", "probe_asn"], as_index=False)["n"].sum()
    return out.sort_values(["day", "probe_asn"]).reset_index(drop=True)


def write_store_coverage(root: Path, path: Path) -> pd.DataFrame:
    """:func:`store_coverage` written to ``path`` (CSV, atomically)."""
    cov = store_coverage(root)
    tmp = path.with_name(path.name + ".tmp")
    cov.to_csv(tmp, index=False)
    tmp.replace(path)
    return cov


#: The most measurements one network can have in a day: OONI gets ~1 million a day from the whole
#: world, so a count past this is damage, not data.
COUNT_MAX = 10**9


def coverage_count(v: Any) -> int:
    """A coverage count as an int: an integer (not a boolean) or its digits, 0 ≤ n ≤ :data:`COUNT_MAX`;
    None or "" count 0 (the API leaves out a count it has none of).

    Raises:
        ValueError: anything else ("many", -5, 1e308, true, 2.5), naming the value.
    """
    if v is None or v == "":
        return 0
    if v.__class__ is int:
        n = v
    elif isinstance(v, str) and len(v) <= 12 and v.isascii() and v.isdigit():
        n = int(v)
    else:
        raise ValueError(f"count {str(v)[:40]!r} is not a whole number of measurements")
    if not 0 <= n <= COUNT_MAX:
        raise ValueError(f"count {str(n)[:40]} is not between 0 and {COUNT_MAX:,}")
    return n


def coverage_day(v: Any) -> str:
    """A coverage day as YYYY-MM-DD (a real date), or ValueError naming it."""
    s = str(v)
    if not (len(s) == 10 and s[4] == "-" == s[7] and s.isascii()):
        raise ValueError(f"day {s[:40]!r} is not a YYYY-MM-DD date")
    dt.date.fromisoformat(s)
    return s


def coverage_asn(v: Any) -> str:
    """A coverage row's network in the frame's form "AS<n>", n < 2**32 (as the loader reads
    ``probe_asn``: :func:`analysis.load._asn`), or ValueError naming it."""
    from analysis.load import _asn

    a = _asn(v)
    if a is None:
        raise ValueError("probe_asn is empty")
    return a


def read_coverage(path: Path) -> tuple[pd.DataFrame, int]:
    """A coverage CSV (``day``, ``probe_asn``, ``n``; extra columns ignored) and how many of its rows
    were skipped (a day not a date, a network not an ASN, a count not a whole number in range).

    Raises:
        ValueError: the file cannot be read as such a CSV at all (not UTF-8, not CSV, a column
            missing), naming it.
    """
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as e:
        raise ValueError(f"{path}: not a coverage CSV ({type(e).__name__}: {str(e)[:120]})") from e
    missing = [c for c in COVERAGE_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"{path}: coverage file lacks the column(s) {', '.join(missing)}")
    rows, bad = [], 0
    for day, asn, n in zip(raw["day"], raw["probe_asn"], raw["n"], strict=True):
        try:
            rows.append((coverage_day(day), coverage_asn(asn), coverage_count(n)))
        except ValueError:
            bad += 1
    cov = pd.DataFrame(rows, columns=list(COVERAGE_COLUMNS)).astype(
        {"day": "string", "probe_asn": "string", "n": "int64"})
    return cov, bad


def save_api_coverage(cov: pd.DataFrame, out_dir: Path, meta: dict[str, Any]) -> Path:
    """The API's counts (:func:`analysis.ooni_api.coverage`) → ``out_dir/api-coverage.csv`` (+ ``.json``
    with ``meta``: cc, since, until, test, api_url; ``fetched`` is added), both atomically."""
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / API_COVERAGE
    tmp = path.with_name(path.name + ".tmp")
    cov.to_csv(tmp, index=False)
    tmp.replace(path)
    mpath = out_dir / API_COVERAGE_META
    mtmp = mpath.with_name(mpath.name + ".tmp")
    mtmp.write_text(json.dumps({**meta, "fetched": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")},
                               indent=1, default=str) + "\n")
    mtmp.replace(mpath)
    return path


def coverage_beside(paths: Sequence[Path]) -> tuple[pd.DataFrame, dict[str, Any], Path] | None:
    """The API's coverage counts saved beside a synced store among ``paths`` (a sync output
    directory, its ``store/``, or a file in it): (counts, what was asked, the CSV); None if none."""
    import json

    for p in paths:
        d = p if p.is_dir() else p.parent
        for cand in dict.fromkeys((d, d.parent, d.parent.parent)):
            f = cand / API_COVERAGE
            if not f.is_file():
                continue
            try:
                meta = json.loads((cand / API_COVERAGE_META).read_text())
            except (OSError, ValueError):
                meta = {}
            meta = dict(meta) if isinstance(meta, dict) else {}
            try:
                cov, meta["bad_rows"] = read_coverage(f)
            except ValueError as e:  # the file named and left out: the store's own counts are used
                log.warning("%s; left out, the store's own counts used", e)
                cov, meta["unreadable"] = read_coverage_empty(), str(e)
            else:
                if meta["bad_rows"]:
                    log.warning("%s: %d row(s) skipped (a day not a date, a network not an ASN or a count not a "
                                "whole number of measurements)", f, meta["bad_rows"])
            return cov, meta, f
    return None


def read_coverage_empty() -> pd.DataFrame:
    """A coverage frame with no rows."""
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "n" else "string") for c in COVERAGE_COLUMNS})


def network_figures(cov: pd.DataFrame, store: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """Per network: days with measurements, total, median a measured day, the first and last day,
    and (with ``store``) how many of them the synced store holds."""
    if cov.empty:
        return []
    held = store.groupby("probe_asn")["n"].sum() if store is not None and len(store) else None
    out = []
    for asn, g in cov.groupby("probe_asn"):
        g = g[g["n"] > 0]
        if g.empty:
            continue
        total = int(g["n"].sum())
        r: dict[str, Any] = {"probe_asn": str(asn), "days": int(g["day"].nunique()), "n": total,
                             "median_per_day": float(g.groupby("day")["n"].sum().median()),
                             "first": str(g["day"].min()), "last": str(g["day"].max())}
        if held is not None:
            r["in_store"] = int(held.get(asn, 0))
        out.append(r)
    return sorted(out, key=lambda r: -r["n"])


def _matrix(cov: pd.DataFrame, since: dt.date | None, until: dt.date | None) -> pd.DataFrame:
    """day × network counts, every day of the span present (0 where no row)."""
    c = cov.copy()
    c["day"] = pd.to_datetime(c["day"])
    m = c.pivot_table(index="day", columns="probe_asn", values="n", aggfunc="sum", fill_value=0)
    lo = pd.Timestamp(since) if since else m.index.min()
    hi = pd.Timestamp(until) if until else m.index.max()
    if pd.isna(lo) or pd.isna(hi):
        return m
    return m.reindex(pd.date_range(min(lo, m.index.min()), max(hi, m.index.max()), freq="D"), fill_value=0)


def volume_drops(cov: pd.DataFrame, *, since: dt.date | None = None, until: dt.date | None = None) -> pd.DataFrame:
    """Drop events per network (columns :data:`DROP_COLUMNS`), see the module docstring.

    Args:
        cov: coverage counts (``day`` YYYY-MM-DD, ``probe_asn``, ``n``).
        since, until: the span to look in (days without rows count 0); default the data's own.
    """
    if cov.empty:
        return pd.DataFrame(columns=list(DROP_COLUMNS))
    m = _matrix(cov, since, until)
    counts = m.to_numpy(dtype=float)
    n_days, n_nets = counts.shape
    base = np.full_like(counts, np.nan)
    measured = counts > 0
    for i in range(n_days):
        lo = max(0, i - BASELINE_DAYS)
        if i - lo < MIN_HISTORY:
            continue
        hist = counts[lo:i]
        ok = measured[lo:i].sum(axis=0) >= MIN_HISTORY
        med = np.median(hist, axis=0)
        base[i] = np.where(ok, med, np.nan)
    judged = base >= MIN_BASELINE
    drop = judged & (counts <= DROP_FRACTION * np.nan_to_num(base, nan=0))
    # a day is country-wide when most networks with a baseline dropped together
    with np.errstate(invalid="ignore", divide="ignore"):
        share = drop.sum(axis=1) / np.maximum(judged.sum(axis=1), 1)
    countrywide = (share >= COUNTRYWIDE_SHARE) & (judged.sum(axis=1) >= 2)
    rows = []
    days = m.index
    for j, asn in enumerate(m.columns):
        i = 0
        while i < n_days:
            if not drop[i, j]:
                i += 1
                continue
            k = i
            while k + 1 < n_days and drop[k + 1, j]:
                k += 1
            b = float(np.nanmedian(base[i:k + 1, j]))
            n = int(counts[i:k + 1, j].sum())
            cw = bool(countrywide[i:k + 1].any())
            s, why = strength(baseline=b, n=n, days=k - i + 1, countrywide=cw)
            rows.append((str(asn), days[i].date(), days[k].date(), k - i + 1, round(b, 1), n,
                         round(n / (b * (k - i + 1)), 3) if b else None, cw, s, why))
            i = k + 1
    out = pd.DataFrame(rows, columns=list(DROP_COLUMNS))
    return out.sort_values(["first", "probe_asn"]).reset_index(drop=True)


def strength(*, baseline: float, n: int, days: int, countrywide: bool) -> tuple[str, str]:
    """(strength, why) of one drop event (see the module docstring)."""
    per_day = n / max(days, 1)
    if countrywide:
        return "weak", (f"every network dropped together ({per_day:.0f}/day vs a usual {baseline:.0f}): a nationwide "
                        "shutdown looks like this, and so does a gap in OONI's collection or a change in the test list")
    if baseline >= STRONG_BASELINE and n == 0:
        return "strong", (f"no measurement at all for {days} day(s) where the network usually has {baseline:.0f}/day, "
                          "while the country's other networks kept their volume")
    if baseline >= 2 * MIN_BASELINE:
        return "moderate", (f"{per_day:.0f}/day against a usual {baseline:.0f}/day, other networks normal; fewer "
                            "volunteers testing would look the same")
    return "weak", f"{per_day:.0f}/day against a thin baseline of {baseline:.0f}/day"


def claim_evidence(claims: Sequence[Any], drops: pd.DataFrame) -> list[dict[str, Any]]:
    """For each testable outage claim: the drop events inside its period, and the strongest.

    Returns:
        One dict per outage claim: ``id``, ``period`` (text), ``events`` (list of dicts of
        :data:`DROP_COLUMNS`), ``strength`` (the strongest, or "none"), ``summary`` (one sentence).
    """
    out = []
    for c in claims:
        if not getattr(c, "testable", False) or getattr(c, "expect", None) != "outage":
            continue
        lo, hi = c.period_start, c.period_end
        ev = drops[(pd.to_datetime(drops["last"]).dt.date >= lo) & (pd.to_datetime(drops["first"]).dt.date <= hi)] \
            if len(drops) else drops
        events = [{k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in r.items()}
                  for r in ev.to_dict("records")]
        best = next((s for s in STRENGTHS if any(e["strength"] == s for e in events)), "none")
        if events:
            why = next(e["why"] for e in events if e["strength"] == best)
            summary = (f"{len(events)} drop(s) in measurement volume in {len({e['probe_asn'] for e in events})} "
                       f"network(s); strongest: {best} ({why})")
        else:
            summary = ("no drop in measurement volume on any network with a usable baseline: no support from volume "
                       "(a local outage may not show in a network's total)")
        out.append({"id": c.id, "period": f"{lo.isoformat()} – {hi.isoformat()}", "events": events,
                    "strength": best, "summary": summary})
    return out


def frame_coverage(frame: pd.DataFrame, country: str | None = None) -> pd.DataFrame:
    """Coverage counts (``day``, ``probe_asn``, ``n``) of the OONI rows of an analysis frame
    (of ``country`` when given): what :func:`volume_drops` reads, without a coverage file."""
    from analysis.load import codes_and_labels, value_mask

    keep = value_mask(frame["source"], "ooni")
    if country is not None and "probe_cc" in frame.columns:
        keep &= value_mask(frame["probe_cc"], country)
    t = frame["measurement_start_time"][keep]
    keep_t = t.notna().to_numpy(dtype=bool)  # strftime gives NA for NaT: value_counts drops those rows
    if not keep_t.any():
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "n" else "string") for c in COVERAGE_COLUMNS})
    # counted on integer keys (UTC day number, ASN code), the text made once per (day, ASN): no string per row
    day = pd.to_datetime(t[keep_t], utc=True).to_numpy(dtype="datetime64[ns]").astype("datetime64[D]").astype(np.int64)
    codes, labels = codes_and_labels(frame["probe_asn"][keep][keep_t])
    known = codes >= 0  # an NA ASN is NA text: value_counts dropped the row
    if not known.all():
        day, codes = day[known], codes[known]
        if not len(day):
            return pd.DataFrame({c: pd.Series(dtype="int64" if c == "n" else "string") for c in COVERAGE_COLUMNS})
    lo, width = int(day.min()), len(labels)
    counts = np.bincount((day - lo) * width + codes, minlength=0)
    nz = np.flatnonzero(counts)
    days = (nz // width + lo).astype("datetime64[D]")
    out = pd.DataFrame({"day": np.datetime_as_string(days, unit="D").astype(object),
                        "probe_asn": np.array(labels, dtype=object)[nz % width], "n": counts[nz].astype(np.int64)})
    if len(set(labels)) < len(labels):  # two categories with one text: one row
        out = out.groupby(["day", "probe_asn"], as_index=False, sort=False)["n"].sum()
    return out.sort_values(["day", "probe_asn"], ignore_index=True)


def report_section(claims: Sequence[Any], frame: pd.DataFrame, country: str | None,
                   api: tuple[pd.DataFrame, dict[str, Any], Path] | None = None) -> dict[str, Any] | None:
    """The report's "outages from volume" values: drops, the outage claims' evidence, the coverage
    figures per network, the method; None when there are no counts at all.

    ``api``: the API's counts saved beside the store (:func:`coverage_beside`); used instead of the
    frame's own counts when they are of ``country`` (the store holds only what was synced). The
    store's counts are then shown beside them per network (``in_store``).
    """
    store = frame_coverage(frame, country)
    cov, source, meta = store, "store", {}
    span: tuple[dt.date | None, dt.date | None] = (None, None)
    problems: list[str] = []
    if api is not None:
        acov, ameta, apath = api
        if ameta.get("unreadable"):
            problems.append(f"{apath.name} beside the store could not be read ({ameta['unreadable']}); it was left "
                            "out and the store's own counts are used")
        elif ameta.get("bad_rows"):
            problems.append(f"{ameta['bad_rows']:,} row(s) of {apath.name} were skipped (a day not a date, a network "
                            "not an ASN or a count not a whole number of measurements)")
        cc = str(ameta.get("cc") or "") or None
        if not acov.empty and (country is None or cc is None or cc == country):
            cov, source, meta = acov, "api", {**ameta, "file": apath.name}
            try:
                span = (dt.date.fromisoformat(str(ameta["since"])), dt.date.fromisoformat(str(ameta["until"])))
            except (KeyError, ValueError):
                span = (None, None)
    if cov.empty:
        return None
    drops = volume_drops(cov, since=span[0], until=span[1])
    events = [{k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in r.items()}
              for r in drops.to_dict("records")]
    if source == "api":
        asked = f"{meta.get('cc') or '?'} {meta.get('test') or ''}".strip()
        held = int(store["n"].sum()) if len(store) else 0
        source_text = (f"OONI's API (/api/v1/aggregation: {asked}, {meta.get('since', '?')} – "
                       f"{meta.get('until', '?')}, fetched {meta.get('fetched', '?')}; {meta['file']} beside the "
                       f"store): every measurement OONI holds; the synced store holds {held:,} of them")
    else:
        source_text = ("the measurements loaded (the synced store): only what was synced counts; save OONI's own "
                       "counts beside the store with kzprobe ooni coverage --store DIR for every measurement "
                       "OONI holds")
    return {"n_days": int(cov["day"].nunique()), "n_networks": int(cov["probe_asn"].nunique()),
            "n_measurements": int(cov["n"].sum()), "source": source, "source_text": source_text,
            "networks": network_figures(cov, store if source == "api" else None),
            "drops": events, "claims": claim_evidence(claims, drops), "problems": problems,
            "method": (f"Per network, a day's OONI measurements against the median of its previous {BASELINE_DAYS} "
                       f"days (at least {MIN_HISTORY} of them measured). A day with at most {DROP_FRACTION:.0%} of a "
                       f"baseline of at least {MIN_BASELINE}/day is a drop; consecutive drop days are one event. "
                       f"Strong: nothing at all where the network usually has ≥ {STRONG_BASELINE}/day while the other "
                       "networks kept their volume. Moderate: a clear drop on a solid baseline, other networks "
                       "normal. Weak: a thin baseline, or every network dropping together (a nationwide shutdown, "
                       "or a gap in OONI's own collection: volume cannot tell them apart). Volume is indirect "
                       "evidence: fewer volunteers testing looks the same, so a drop supports an outage claim and "
                       "never proves it, and no drop contradicts a local outage.")}
