"""The report's figures: matplotlib (Agg, no display, no network), PNG bytes out.

Every function takes the measurements frame (``analysis.load`` columns, one row per
measurement) and returns the PNG as ``bytes``; give ``path`` to also write it there. An
empty frame (or one with nothing to show, e.g. no MITM evidence) gives a small figure that
says "no data" and why, never an exception. Output is deterministic for the same frame:
no timestamps or version strings are written into the PNG metadata.

Colours are the Okabe–Ito palette (Okabe & Ito, "Color Universal Design", 2008), chosen to
stay distinguishable with the common colour-vision deficiencies; every figure has a legend,
so colour is never the only cue.

Labels drawn from the data (domains, vantage ids, network names) are passed through
:func:`_label`: control characters dropped, ``$`` escaped so matplotlib's mathtext never
interprets them, long strings shortened with an ellipsis.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot; we never use pyplot anyway

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from analysis.load import domain_label

#: Okabe–Ito colours (hex), by name.
OKABE_ITO = {
    "orange": "#E69F00", "sky_blue": "#56B4E9", "bluish_green": "#009E73", "yellow": "#F0E442",
    "blue": "#0072B2", "vermillion": "#D55E00", "reddish_purple": "#CC79A7", "black": "#000000",
}

#: Heatmap cell states, in legend order, with their colours. A cell is one target × one time bin;
#: its state is the blocked share of its judged measurements (blocked / (blocked + accessible +
#: down)): ≥ 90 % blocked, 50–90 % mostly, 10–50 % partly, < 10 % accessible; "down" when the only
#: judged ones were down; "inconclusive" when none was judged. Shares, not "any blocked", so one
#: stray failure among a hundred good measurements does not paint a week as blocked.
CELL_STATES: tuple[tuple[str, str], ...] = (
    ("blocked (≥ 90 %)", OKABE_ITO["vermillion"]),
    ("mostly blocked (50–90 %)", OKABE_ITO["orange"]),
    ("partly blocked (10–50 %)", OKABE_ITO["yellow"]),
    ("accessible (< 10 % blocked)", OKABE_ITO["bluish_green"]),
    ("down (not blocked)", OKABE_ITO["sky_blue"]),
    ("inconclusive only", "#BBBBBB"),
)
NO_DATA_COLOUR = "#FFFFFF"

#: Blocking types (the frame's ``blocking`` vocabulary minus "false") and their colours.
BLOCKING_COLOURS: dict[str, str] = {
    "dns": OKABE_ITO["orange"],
    "tcp_ip": OKABE_ITO["sky_blue"],
    "tls": OKABE_ITO["blue"],
    "tls_mitm": OKABE_ITO["vermillion"],
    "http-failure": OKABE_ITO["reddish_purple"],
    "http-diff": OKABE_ITO["bluish_green"],
    "throttling": OKABE_ITO["yellow"],
}

#: Outcome colours for the vantage-health bars; "vantage offline" is the inconclusive share
#: whose vantage was offline (``vantage_offline``), drawn hatched.
HEALTH_COLOURS: dict[str, str] = {
    "accessible": OKABE_ITO["bluish_green"],
    "blocked": OKABE_ITO["vermillion"],
    "down": OKABE_ITO["sky_blue"],
    "inconclusive": "#BBBBBB",
    "vantage offline": "#444444",
}

#: Most rows a heatmap or bar chart shows (targets, networks); the rest are counted in the title.
MAX_ROWS = 100
#: Most vantage points the health figure shows (one panel each).
MAX_VANTAGES = 12
DPI = 100
_FONT = 8


def _label(text: object, max_len: int = 48) -> str:
    """A safe, short axis label from a data string (hostile servers choose domains and names)."""
    s = "" if text is None or (isinstance(text, float) and np.isnan(text)) else str(text)
    s = "".join(ch if ch.isprintable() else "?" for ch in s)
    if len(s) > max_len:
        s = s[: max_len - 1] + "…"
    return s.replace("\\", "\\\\").replace("$", r"\$") or "(none)"


def _png(fig: Figure, path: str | Path | None) -> bytes:
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, facecolor="white")
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data


def no_data_figure(title: str, why: str, *, path: str | Path | None = None) -> bytes:
    """A small figure that says there is nothing to plot, and why. Returns PNG bytes."""
    fig = Figure(figsize=(7.0, 1.6))
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.62, _label(title, 120), ha="center", va="center", fontsize=11, weight="bold")
    ax.text(0.5, 0.28, "no data: " + _label(why, 160), ha="center", va="center", fontsize=9, color="#555555")
    return _png(fig, path)


def time_bin(start: pd.Timestamp, end: pd.Timestamp) -> str:
    """The bin for a time axis spanning ``start``..``end``: "D" (≤ 62 days), "W" (≤ 2 years), else "M"."""
    span_days = (end - start).total_seconds() / 86400.0
    if span_days <= 62:
        return "D"
    if span_days <= 730:
        return "W"
    return "M"


def _bin_starts(times: pd.Series, freq: str) -> pd.Series:
    """Naive UTC timestamps floored to the bin start (day, Monday of the week, first of the month)."""
    t = pd.to_datetime(times, utc=True).dt.tz_convert("UTC").dt.tz_localize(None).dt.floor("D")
    if freq == "W":
        return t - pd.to_timedelta(t.dt.weekday, unit="D")
    if freq == "M":
        return t - pd.to_timedelta(t.dt.day - 1, unit="D")
    return t


def _bin_label(ts: pd.Timestamp, freq: str) -> str:
    if freq == "M":
        return ts.strftime("%Y-%m")
    if freq == "W":
        return "wk " + ts.strftime("%Y-%m-%d")
    return ts.strftime("%Y-%m-%d")


def _all_bins(first: pd.Timestamp, last: pd.Timestamp, freq: str) -> list[pd.Timestamp]:
    step = {"D": pd.DateOffset(days=1), "W": pd.DateOffset(weeks=1), "M": pd.DateOffset(months=1)}[freq]
    out, t = [], first
    while t <= last:
        out.append(t)
        t = t + step
    return out


def _valid(frame: pd.DataFrame, *cols: str) -> pd.DataFrame:
    if frame is None or len(frame) == 0:
        return frame.iloc[0:0] if frame is not None else pd.DataFrame(columns=list(cols))
    mask = pd.Series(True, index=frame.index)
    for c in cols:
        mask &= frame[c].notna()
    return frame.loc[mask, list(dict.fromkeys(cols))]


def cell_codes(g: pd.DataFrame) -> pd.Series:
    """Per row of outcome counts (columns blocked/accessible/down/inconclusive, any missing = 0)
    → index into :data:`CELL_STATES`."""
    zero = pd.Series(0, index=g.index)
    b, a, d = (g[c] if c in g.columns else zero for c in ("blocked", "accessible", "down"))
    judged = (b + a + d).to_numpy(dtype=float)
    share = np.divide(b.to_numpy(dtype=float), judged, out=np.zeros(len(g)), where=judged > 0)
    code = np.select([judged == 0, (b + a).to_numpy() == 0, share >= 0.9, share >= 0.5, share >= 0.1],
                     [5, 4, 0, 1, 2], default=3)
    return pd.Series(code, index=g.index)


def outcome_heatmap(frame: pd.DataFrame, *, path: str | Path | None = None, max_targets: int = MAX_ROWS,
                    title: str = "Outcome by target and time") -> bytes:
    """Target × time heatmap of outcomes. Returns PNG bytes.

    Rows are domains (the ``max_targets`` most measured; the rest are counted in the title),
    sorted by blocked share then name; columns are days, weeks or months (:func:`time_bin` of
    the span, UTC); a cell's colour is its state in :data:`CELL_STATES`, white when the target
    was not measured in that bin. Uses ``domain``, ``measurement_start_time``, ``outcome``.
    """
    f = _valid(frame, "domain", "measurement_start_time", "outcome")
    if len(f) == 0:
        return no_data_figure(title, "no measurement has a domain, a time and an outcome", path=path)
    freq = time_bin(f["measurement_start_time"].min(), f["measurement_start_time"].max())
    bins = _bin_starts(f["measurement_start_time"], freq)
    counts = (pd.DataFrame({"domain": f["domain"].astype(str).to_numpy(), "bin": bins.to_numpy(),
                            "outcome": f["outcome"].astype(str).to_numpy()})
              .groupby(["domain", "bin", "outcome"], observed=True).size().unstack("outcome", fill_value=0))
    per_domain = counts.groupby(level="domain").sum()
    total = per_domain.sum(axis=1)
    hidden = 0
    if len(total) > max_targets:
        keep = total.sort_values(ascending=False, kind="stable").index[:max_targets]
        hidden = len(total) - max_targets
        per_domain = per_domain.loc[keep]
    blocked_share = per_domain.get("blocked", pd.Series(0, index=per_domain.index)) / per_domain.sum(axis=1)
    order = sorted(per_domain.index, key=lambda d: (-float(blocked_share[d]), d))
    codes = cell_codes(counts)
    all_bins = _all_bins(bins.min(), bins.max(), freq)
    row_of = {d: i for i, d in enumerate(order)}
    col_of = {b: j for j, b in enumerate(all_bins)}
    grid = np.full((len(order), len(all_bins)), len(CELL_STATES))  # "no data" index
    for (dom, b), code in codes.items():
        if dom in row_of:
            grid[row_of[dom], col_of[pd.Timestamp(b)]] = code

    n_rows, n_cols = grid.shape
    width = min(16.0, max(7.0, 3.2 + 0.22 * n_cols))
    height = max(2.6, 1.6 + 0.16 * n_rows)
    fig = Figure(figsize=(width, height))
    ax = fig.add_subplot()
    cmap = ListedColormap([c for _, c in CELL_STATES] + [NO_DATA_COLOUR])
    ax.imshow(grid, aspect="auto", cmap=cmap, vmin=-0.5, vmax=len(CELL_STATES) + 0.5, interpolation="nearest")
    ax.set_yticks(range(n_rows), [_label(domain_label(d), 60) for d in order], fontsize=_FONT if n_rows <= 60 else 6)
    step = max(1, int(np.ceil(n_cols / 30)))
    ax.set_xticks(range(0, n_cols, step), [_bin_label(all_bins[j], freq) for j in range(0, n_cols, step)],
                  rotation=60, ha="right", fontsize=_FONT)
    ax.set_xticks(np.arange(-0.5, n_cols, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n_rows, 1), minor=True)
    ax.grid(which="minor", color="#E0E0E0", linewidth=0.5)
    ax.tick_params(which="minor", length=0)
    unit = {"D": "day", "W": "week (Monday start)", "M": "month"}[freq]
    ax.set_xlabel(f"{unit}, UTC", fontsize=_FONT)
    more = f" — {hidden} less-measured targets not shown" if hidden else ""
    ax.set_title(_label(title, 120) + more, fontsize=10, loc="left")
    handles = [Patch(facecolor=c, edgecolor="#888888", label=s) for s, c in CELL_STATES]
    handles.append(Patch(facecolor=NO_DATA_COLOUR, edgecolor="#888888", label="not measured"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=_FONT, frameon=False)
    fig.tight_layout()
    return _png(fig, path)


def _stacked_barh(rows: pd.DataFrame, colours: dict[str, str], *, title: str, xlabel: str,
                  hidden: int, path: str | Path | None, hatch: dict[str, str] | None = None) -> bytes:
    """Horizontal stacked bars: ``rows`` is index = row label, columns = stack categories (counts)."""
    n = len(rows)
    fig = Figure(figsize=(9.0, max(1.9, 1.3 + 0.24 * n)))
    ax = fig.add_subplot()
    y = np.arange(n)
    left = np.zeros(n)
    for cat in [c for c in colours if c in rows.columns]:
        vals = rows[cat].to_numpy(dtype=float)
        if not vals.any():
            continue
        ax.barh(y, vals, left=left, height=0.7, color=colours[cat], edgecolor="white", linewidth=0.5, label=cat,
                hatch=(hatch or {}).get(cat))
        left += vals
    ax.set_yticks(y, [_label(i) for i in rows.index], fontsize=_FONT if n <= 60 else 6)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel, fontsize=_FONT)
    ax.tick_params(axis="x", labelsize=_FONT)
    ax.xaxis.get_major_locator().set_params(integer=True)
    more = f" — {hidden} more not shown" if hidden else ""
    ax.set_title(_label(title, 120) + more, fontsize=10, loc="left")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=_FONT, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return _png(fig, path)


def _blocking_counts(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    f = _valid(frame, by, "blocking")
    f = f[f["blocking"].astype(str) != "false"]
    if len(f) == 0:
        return pd.DataFrame()
    return (pd.DataFrame({"row": f[by].astype(str).to_numpy(), "blocking": f["blocking"].astype(str).to_numpy()})
            .groupby(["row", "blocking"]).size().unstack("blocking", fill_value=0))


def _top(rows: pd.DataFrame, limit: int) -> tuple[pd.DataFrame, int]:
    tot = rows.sum(axis=1)
    order = sorted(rows.index, key=lambda r: (-int(tot[r]), r))
    return rows.loc[order[:limit]], max(0, len(order) - limit)


def blocking_by_target(frame: pd.DataFrame, *, path: str | Path | None = None, max_targets: int = 40) -> bytes:
    """Blocked measurements per target, stacked by blocking type. Returns PNG bytes.

    Only measurements with a blocking verdict (``blocking`` not NA and not "false"); the
    ``max_targets`` targets with most of them, most first.
    """
    title = "Blocking type by target (blocked measurements)"
    if frame is None or len(frame) == 0:
        return no_data_figure(title, "no measurements", path=path)
    return _blocking_by(frame, "domain", title=title, limit=max_targets, path=path)


def _blocking_by(frame: pd.DataFrame, by: str, *, title: str, limit: int, path: str | Path | None) -> bytes:
    """Blocked measurements per ``by`` value, stacked by blocking type, the ``limit`` largest first."""
    rows = _blocking_counts(frame, by)
    if by == "domain" and len(rows):
        rows.index = [domain_label(d) for d in rows.index]
    if rows.empty:
        return no_data_figure(title, "no measurement was judged blocked", path=path)
    rows, hidden = _top(rows, limit)
    colours = {**BLOCKING_COLOURS, **{c: "#777777" for c in rows.columns if c not in BLOCKING_COLOURS}}
    return _stacked_barh(rows, colours, title=title, xlabel="measurements", hidden=hidden, path=path)


def network_labels(frame: pd.DataFrame) -> pd.Series:
    """Per row: "AS9198 (JSC Kazakhtelecom)": ``probe_asn`` and the network name most often seen with
    that ASN in the frame (so rows without a name join their ASN's label); the bare ASN when no row names it."""
    asn = frame["probe_asn"].astype("string").fillna("AS?")
    if "probe_network_name" not in frame.columns or len(frame) == 0:
        return asn
    name = frame["probe_network_name"].astype("string")
    named = pd.DataFrame({"asn": asn, "name": name})[name.notna() & (name != "")]
    if len(named) == 0:
        return asn
    best = (named.groupby(["asn", "name"]).size().reset_index(name="n")
            .sort_values(["asn", "n", "name"], ascending=[True, False, True], kind="stable")
            .drop_duplicates("asn").set_index("asn")["name"])
    label = asn.map(best)
    return (asn + " (" + label.astype("string") + ")").where(label.notna(), asn)


def blocking_by_network(frame: pd.DataFrame, *, path: str | Path | None = None,
                        max_networks: int = 40) -> bytes:
    """Blocked measurements per network (probe ASN), stacked by blocking type. Returns PNG bytes."""
    title = "Blocking type by network (blocked measurements)"
    if frame is None or len(frame) == 0:
        return no_data_figure(title, "no measurements", path=path)
    f = frame.assign(_network=network_labels(frame))
    return _blocking_by(f, "_network", title=title, limit=max_networks, path=path)


def mitm_evidence(frame: pd.DataFrame, *, path: str | Path | None = None, max_targets: int = 40) -> bytes:
    """Measurements whose TLS chain contained a known interception root, per target, by root.

    Uses ``domain`` and ``mitm_root`` (the name of the matched root; NA when none matched).
    Returns PNG bytes.
    """
    title = "TLS interception: known root matched, per target"
    f = _valid(frame, "domain", "mitm_root") if frame is not None and len(frame) else None
    if f is None or len(f) == 0:
        return no_data_figure(title, "no TLS chain contained a known interception root", path=path)
    rows = (pd.DataFrame({"row": [domain_label(d) for d in f["domain"].astype(str)],
                          "root": f["mitm_root"].astype(str).to_numpy()})
            .groupby(["row", "root"]).size().unstack("root", fill_value=0))
    rows, hidden = _top(rows, max_targets)
    palette = [OKABE_ITO[k] for k in ("vermillion", "blue", "orange", "reddish_purple", "bluish_green",
                                      "sky_blue", "yellow", "black")]
    roots = sorted(rows.columns)
    colours = {r: palette[i % len(palette)] for i, r in enumerate(roots)}
    rows.columns = [str(c) for c in rows.columns]
    safe = {r: _label(r, 60) for r in roots}
    rows = rows.rename(columns=safe)
    return _stacked_barh(rows, {safe[r]: colours[r] for r in roots}, title=title, xlabel="measurements",
                         hidden=hidden, path=path)


def vantage_health(frame: pd.DataFrame, *, path: str | Path | None = None,
                   max_vantages: int = MAX_VANTAGES) -> bytes:
    """Measurements per vantage point per time bin, stacked by outcome, offline shown apart.

    One panel per vantage point (``vantage_id``; the ``max_vantages`` with most measurements).
    Bars are days, weeks or months as in :func:`time_bin`; "vantage offline" is an
    inconclusive measurement made while its vantage was offline (``vantage_offline``), so an
    outage shows as a dark hatched bar and a gap with no bar means no measurements at all.
    Returns PNG bytes.
    """
    title = "Vantage health: measurements per vantage point over time"
    f = _valid(frame, "vantage_id", "measurement_start_time", "outcome")
    if len(f) == 0:
        return no_data_figure(title, "no measurement has a vantage point, a time and an outcome", path=path)
    offline = (frame.loc[f.index, "vantage_offline"].fillna(False).astype(bool).to_numpy()
               if "vantage_offline" in frame.columns else np.zeros(len(f), dtype=bool))
    outcome = f["outcome"].astype(str).to_numpy().copy()
    outcome[offline] = "vantage offline"
    freq = time_bin(f["measurement_start_time"].min(), f["measurement_start_time"].max())
    bins = _bin_starts(f["measurement_start_time"], freq)
    g = (pd.DataFrame({"v": f["vantage_id"].astype(str).to_numpy(), "bin": bins.to_numpy(), "o": outcome})
         .groupby(["v", "bin", "o"]).size().unstack("o", fill_value=0))
    totals = g.groupby(level="v").sum().sum(axis=1)
    order = sorted(totals.index, key=lambda v: (-int(totals[v]), v))
    hidden = max(0, len(order) - max_vantages)
    order = order[:max_vantages]
    all_bins = _all_bins(bins.min(), bins.max(), freq)
    x = np.arange(len(all_bins))
    panel_in = 1.5 if len(order) <= 4 else 1.1
    fig = Figure(figsize=(min(16.0, max(8.0, 3.0 + 0.2 * len(all_bins))), 0.8 + panel_in * len(order)))
    axes = fig.subplots(len(order), 1, sharex=True, squeeze=False)[:, 0]
    used: dict[str, str] = {}
    for ax, v in zip(axes, order, strict=True):
        sub = g.xs(v, level="v").reindex(all_bins, fill_value=0)
        bottom = np.zeros(len(all_bins))
        for cat, colour in HEALTH_COLOURS.items():
            if cat not in sub.columns or not sub[cat].any():
                continue
            vals = sub[cat].to_numpy(dtype=float)
            ax.bar(x, vals, bottom=bottom, width=0.85, color=colour, label=cat,
                   hatch="//" if cat == "vantage offline" else None, edgecolor="white", linewidth=0.3)
            bottom += vals
            used[cat] = colour
        ax.set_ylabel("n", fontsize=_FONT)
        ax.tick_params(labelsize=_FONT)
        ax.set_title(_label(v, 80), fontsize=9, loc="left")
        ax.spines[["top", "right"]].set_visible(False)
        ax.yaxis.get_major_locator().set_params(integer=True)
    step = max(1, int(np.ceil(len(all_bins) / 30)))
    axes[-1].set_xticks(x[::step], [_bin_label(all_bins[j], freq) for j in range(0, len(all_bins), step)],
                        rotation=60, ha="right", fontsize=_FONT)
    more = f" — {hidden} more vantage points not shown" if hidden else ""
    fig.suptitle(title + more, fontsize=10, x=0.01, ha="left")
    handles = [Patch(facecolor=c, hatch="//" if k == "vantage offline" else None, edgecolor="white", label=k)
               for k, c in HEALTH_COLOURS.items() if k in used]
    fig.legend(handles=handles, loc="upper right", fontsize=_FONT, frameon=False, ncols=len(handles))
    fig.tight_layout(rect=(0, 0, 1, 0.97 if len(order) > 2 else 0.9))
    return _png(fig, path)


#: The figures of a report: file name → (function, alt text).
FIGURES: Sequence[tuple[str, object, str]] = (
    ("heatmap.png", outcome_heatmap, "Heatmap of outcomes per target (rows) and time (columns)"),
    ("blocking-by-target.png", blocking_by_target, "Stacked bars: blocked measurements per target by blocking type"),
    ("blocking-by-network.png", blocking_by_network,
     "Stacked bars: blocked measurements per network by blocking type"),
    ("mitm.png", mitm_evidence, "Stacked bars: measurements per target whose chain contained a known root, by root"),
    ("vantage-health.png", vantage_health, "Measurements per vantage point over time, by outcome; offline hatched"),
)
