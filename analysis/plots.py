"""The report's figures: matplotlib (Agg, no display, no network), PNG bytes out.

Every function takes the measurements frame (``analysis.load`` columns, one row per
measurement) and returns the PNG as ``bytes``; give ``path`` to also write it there. An
empty frame (or one with nothing to show, e.g. no MITM evidence) gives a small figure that
says "no data" and why, never an exception. Output is deterministic for the same frame:
no timestamps or version strings are written into the PNG metadata.

Colours come from :mod:`analysis.palette` only (Okabe–Ito, colour-blind safe): one meaning per
colour across every figure (blocked is vermillion everywhere, a blocking type never shares an
outcome's colour); every figure has a legend, so colour is never the only cue.

Labels drawn from the data (domains, vantage ids, network names) are passed through
:func:`_label`: control characters dropped, ``$`` escaped so matplotlib's mathtext never
interprets them, long strings shortened with an ellipsis.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot; we never use pyplot anyway

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from analysis import palette
from analysis.load import domain_label, sorted_codes, value_mask

#: The colours: :mod:`analysis.palette` (one meaning per colour across every figure).
OKABE_ITO = palette.OKABE_ITO

#: Heatmap cell states, in legend order, with their colours. A cell is one row (target, network) × one time
#: bin; its state is the blocked share of its judged measurements (blocked / (blocked + accessible +
#: down)): ≥ 90 % blocked, 50–90 % mostly, 10–50 % partly (tints of the blocked colour), < 10 % accessible;
#: "down" when the only judged ones were down; "inconclusive" when none was judged. Shares, not "any
#: blocked", so one stray failure among a hundred good measurements does not paint a week as blocked.
CELL_STATES: tuple[tuple[str, str], ...] = (
    ("blocked (≥ 90 %)", palette.OUTCOME_COLOURS["blocked"]),
    ("mostly blocked (50–90 %)", palette.SHARE_TINTS["mostly"]),
    ("partly blocked (10–50 %)", palette.SHARE_TINTS["partly"]),
    ("accessible (< 10 % blocked)", palette.OUTCOME_COLOURS["accessible"]),
    ("down (not blocked)", palette.OUTCOME_COLOURS["down"]),
    ("inconclusive only", palette.OUTCOME_COLOURS["inconclusive"]),
)
NO_DATA_COLOUR = palette.NO_DATA_COLOUR

#: Blocking types (the frame's ``blocking`` vocabulary minus "false") and their colours.
BLOCKING_COLOURS: dict[str, str] = dict(palette.BLOCKING_COLOURS)

#: Outcome colours for the vantage-health and category bars; "vantage offline" is the inconclusive share
#: whose vantage was offline (``vantage_offline``), drawn hatched.
HEALTH_COLOURS: dict[str, str] = {
    "accessible": palette.OUTCOME_COLOURS["accessible"],
    "blocked": palette.OUTCOME_COLOURS["blocked"],
    "down": palette.OUTCOME_COLOURS["down"],
    "inconclusive": palette.OUTCOME_COLOURS["inconclusive"],
    "vantage offline": palette.OFFLINE_COLOUR,
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


def _figure(**kw: Any) -> Figure:
    """A figure with its Agg canvas from the start: ``tight_layout`` then measures the text with the
    very renderer ``savefig`` draws with (same size and DPI), so the text metrics it cached are hits when
    the PNG is drawn. Without it, ``tight_layout`` made a throw-away renderer and every tick label, title
    and legend entry was laid out twice (the 1M store report's figures: ~0.8 of ~6.7 CPU-s). Same pixels."""
    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure, path: str | Path | None) -> bytes:
    buf = io.BytesIO()
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, facecolor="white")
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data


def no_data_figure(title: str, why: str, *, path: str | Path | None = None) -> bytes:
    """A small figure that says there is nothing to plot, and why. Returns PNG bytes."""
    fig = _figure(figsize=(7.0, 1.6))
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
        return t - pd.to_timedelta(t.dt.day_of_week, unit="D")
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
    mask = np.ones(len(frame), dtype=bool)
    for c in cols:
        mask &= frame[c].notna().to_numpy(dtype=bool)
    names = list(dict.fromkeys(cols))
    # nothing to drop (the usual case): the columns as they are — taking every row copied each Arrow string
    return frame[names] if mask.all() else frame.loc[mask, names]


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


def _cell_grid(ax: Axes, n_rows: int, n_cols: int) -> None:
    """The lines between a heatmap's cells, as ``ax.grid(which="minor", color="#E0E0E0", linewidth=0.5)``
    on minor ticks at every cell edge drew them, as one collection: a year by day made ~440 minor ticks,
    each a Tick with its lines and (empty) label laid out by ``tight_layout`` and drawn (~0.5 CPU-s of
    a heatmap's ~1.2). Same lines, colour, width and place among the axes' artists (the axis's zorder)."""
    xs, ys = np.arange(-0.5, n_cols, 1), np.arange(-0.5, n_rows, 1)
    # grid lines run across the axes (axes coordinates), at data positions: a blended transform, as the ticks'
    vert = [[(x, 0.0), (x, 1.0)] for x in xs]
    horiz = [[(0.0, y), (1.0, y)] for y in ys]
    for segments, axis, transform in ((vert, ax.xaxis, ax.get_xaxis_transform()),
                                      (horiz, ax.yaxis, ax.get_yaxis_transform())):
        ax.add_collection(LineCollection(segments, colors="#E0E0E0", linewidths=0.5, transform=transform,
                                         zorder=axis.get_zorder()), autolim=False)


def outcome_heatmap(frame: pd.DataFrame, *, path: str | Path | None = None, max_targets: int = MAX_ROWS,
                    title: str = "Outcome by target and time", by: str = "domain") -> bytes:
    """Target × time heatmap of outcomes. Returns PNG bytes.

    Rows are domains (the ``max_targets`` most measured; the rest are counted in the title),
    sorted by blocked share then name; columns are days, weeks or months (:func:`time_bin` of
    the span, UTC); a cell's colour is its state in :data:`CELL_STATES`, white when the target
    was not measured in that bin. Uses ``domain``, ``measurement_start_time``, ``outcome``.
    ``by="network"``: rows are networks, labelled and grouped by country ("KZ · AS9198 (JSC
    Kazakhtelecom)", :func:`network_country_labels`), every target's measurements together.
    """
    if by == "network" and frame is not None and len(frame):
        frame = frame.assign(domain=network_country_labels(frame))
    f = _valid(frame, "domain", "measurement_start_time", "outcome")
    if len(f) == 0:
        return no_data_figure(title, "no measurement has a domain, a time and an outcome", path=path)
    freq = time_bin(f["measurement_start_time"].min(), f["measurement_start_time"].max())
    bins = _bin_starts(f["measurement_start_time"], freq)
    # grouped by sorted-text categoricals (no string per row), the groups' labels made plain text again
    counts = (pd.DataFrame({"domain": sorted_codes(f["domain"]), "bin": bins.to_numpy(),
                            "outcome": sorted_codes(f["outcome"])})
              .groupby(["domain", "bin", "outcome"], observed=True).size().unstack("outcome", fill_value=0))
    counts.index = counts.index.set_levels(counts.index.levels[0].astype(object), level="domain")
    counts.columns = pd.Index([str(c) for c in counts.columns], name="outcome")
    per_domain = counts.groupby(level="domain", observed=True).sum()
    total = per_domain.sum(axis=1)
    hidden = 0
    if len(total) > max_targets:
        keep = total.sort_values(ascending=False, kind="stable").index[:max_targets]
        hidden = len(total) - max_targets
        per_domain = per_domain.loc[keep]
    blocked_share = per_domain.get("blocked", pd.Series(0, index=per_domain.index)) / per_domain.sum(axis=1)
    if by == "network":  # grouped by country (the label's prefix), most blocked first within it
        order = sorted(per_domain.index, key=lambda d: (d.split(" · ", 1)[0], -float(blocked_share[d]), d))
    else:
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
    fig = _figure(figsize=(width, height))
    ax = fig.add_subplot()
    cmap = ListedColormap([c for _, c in CELL_STATES] + [NO_DATA_COLOUR])
    # the cells coloured here (one RGBA per cell): matplotlib colour-mapped the image after resampling it to
    # the figure's pixels (~3M lookups, ~0.5 CPU-s a heatmap); the PNG is the same, byte for byte
    norm = Normalize(vmin=-0.5, vmax=len(CELL_STATES) + 0.5)
    ax.imshow(cmap(norm(grid), bytes=True), aspect="auto", cmap=cmap, interpolation="nearest")  # cmap: said, unused
    ylabels = [_label(d if by == "network" else domain_label(d), 60) for d in order]
    ax.set_yticks(range(n_rows), ylabels, fontsize=_FONT if n_rows <= 60 else 6)
    step = max(1, int(np.ceil(n_cols / 30)))
    ax.set_xticks(range(0, n_cols, step), [_bin_label(all_bins[j], freq) for j in range(0, n_cols, step)],
                  rotation=60, ha="right", fontsize=_FONT)
    _cell_grid(ax, n_rows, n_cols)
    unit = {"D": "day", "W": "week (Monday start)", "M": "month"}[freq]
    ax.set_xlabel(f"{unit}, UTC", fontsize=_FONT)
    more = f" — {hidden} less-measured {'networks' if by == 'network' else 'targets'} not shown" if hidden else ""
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
    fig = _figure(figsize=(9.0, max(1.9, 1.3 + 0.24 * n)))
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
    f = f[~value_mask(f["blocking"], "false")]
    if len(f) == 0:
        return pd.DataFrame()
    # grouped by sorted-text categoricals (the groups in the strings' order, no string per row)
    return (pd.DataFrame({"row": sorted_codes(f[by]), "blocking": sorted_codes(f["blocking"])})
            .groupby(["row", "blocking"], observed=True).size().unstack("blocking", fill_value=0)
            .pipe(_plain_axes))


def _plain_axes(rows: pd.DataFrame) -> pd.DataFrame:
    """A counts table grouped by categoricals with plain string index and columns (as grouping by strings gives)."""
    rows.index = pd.Index([str(i) for i in rows.index], name=rows.index.name)
    rows.columns = pd.Index([str(c) for c in rows.columns], name=rows.columns.name)
    return rows


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
    unknown = {c: palette.UNKNOWN_BLOCKING_COLOUR for c in rows.columns if c not in BLOCKING_COLOURS}
    colours = {**BLOCKING_COLOURS, **unknown}
    return _stacked_barh(rows, colours, title=title, xlabel="measurements", hidden=hidden, path=path)


def network_labels(frame: pd.DataFrame) -> pd.Series:
    """Per row: "AS9198 (JSC Kazakhtelecom)": ``probe_asn`` and the network name most often seen with
    that ASN in the frame (so rows without a name join their ASN's label); the bare ASN when no row names it.
    A categorical Series: the labels are built once per ASN, not once per row (a million rows stay fast)."""
    asn = frame["probe_asn"].astype("category")
    if asn.isna().any():
        asn = asn.cat.add_categories(["AS?"]).fillna("AS?") if "AS?" not in asn.cat.categories else asn.fillna("AS?")
    asn = asn.cat.remove_unused_categories()
    mapping = {a: str(a) for a in asn.cat.categories}
    if "probe_network_name" in frame.columns and len(frame):
        name = frame["probe_network_name"].astype("string")
        ok = (name.notna() & (name != "")).to_numpy(dtype=bool)
        if ok.any():
            named = pd.DataFrame({"asn": asn[ok], "name": name[ok].astype("category")})
            best = (named.groupby(["asn", "name"], observed=True).size().reset_index(name="n")
                    .astype({"asn": str, "name": str})
                    .sort_values(["asn", "n", "name"], ascending=[True, False, True], kind="stable")
                    .drop_duplicates("asn").set_index("asn")["name"])
            mapping.update({a: f"{a} ({n})" for a, n in best.items()})
    return asn.cat.rename_categories([mapping[str(a)] for a in asn.cat.categories])


def blocking_by_network(frame: pd.DataFrame, *, path: str | Path | None = None,
                        max_networks: int = 40) -> bytes:
    """Blocked measurements per network (probe ASN), stacked by blocking type. Returns PNG bytes."""
    title = "Blocking type by network (blocked measurements)"
    if frame is None or len(frame) == 0:
        return no_data_figure(title, "no measurements", path=path)
    f = frame.assign(_network=network_labels(frame))
    return _blocking_by(f, "_network", title=title, limit=max_networks, path=path)


def mitm_evidence(frame: pd.DataFrame, *, path: str | Path | None = None, max_targets: int = 40) -> bytes:
    """Measurements whose TLS chain contained a known interception root, per target and root (one bar each,
    in the one interception colour).

    Uses ``domain`` and ``mitm_root`` (the name of the matched root; NA when none matched).
    Returns PNG bytes.
    """
    title = "TLS interception: known root matched, per target"
    f = _valid(frame, "domain", "mitm_root") if frame is not None and len(frame) else None
    if f is None or len(f) == 0:
        return no_data_figure(title, "no TLS chain contained a known interception root", path=path)
    labels = [f"{domain_label(d)} — {r}" for d, r in zip(f["domain"].astype(str), f["mitm_root"].astype(str),
                                                         strict=True)]
    rows = pd.DataFrame({"row": labels, "tls_mitm": 1}).groupby("row").sum()
    rows, hidden = _top(rows, max_targets)
    # one colour: interception (tls_mitm) — the root is in the label, not in a colour of its own
    return _stacked_barh(rows, {"tls_mitm": BLOCKING_COLOURS["tls_mitm"]}, title=title, xlabel="measurements",
                         hidden=hidden, path=path)


def _bars(x: np.ndarray, heights: np.ndarray, bottom: np.ndarray, *, width: float, color: str,
          hatch: str | None) -> PolyCollection:
    """What ``ax.bar(x, heights, bottom=bottom, width=width, color=color, hatch=hatch, edgecolor="white",
    linewidth=0.3)`` draws, as one collection instead of a ``Rectangle`` per bar: the vantage-health
    figure of a year by day had ~1,400 patches, each with its own transform and data-limit update
    (~1 CPU-s of its ~2.2). Same rectangles (zero-height ones too), colours, edges and hatch; the
    value axis starts at 0 without a margin, as ``bar``'s sticky edge makes it."""
    left, top = x - width / 2.0, bottom + heights
    verts = np.stack([np.column_stack([left, bottom]), np.column_stack([left, top]),
                      np.column_stack([left + width, top]), np.column_stack([left + width, bottom])], axis=1)
    coll = PolyCollection(list(verts), closed=True, facecolors=color, edgecolors="white", linewidths=0.3, hatch=hatch)
    coll.sticky_edges.y.append(0.0)
    return coll


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
    outcome = sorted_codes(f["outcome"])
    if offline.any():
        outcome = outcome.add_categories(["vantage offline"]) if "vantage offline" not in outcome.categories \
            else outcome
        outcome[offline] = "vantage offline"
    freq = time_bin(f["measurement_start_time"].min(), f["measurement_start_time"].max())
    bins = _bin_starts(f["measurement_start_time"], freq)
    # grouped by categoricals (no string per row), the few groups then keyed by their text as before
    sizes = (pd.DataFrame({"v": sorted_codes(f["vantage_id"]), "bin": bins.to_numpy(), "o": outcome})
             .groupby(["v", "bin", "o"], observed=True).size().reset_index(name="n"))
    sizes["v"], sizes["o"] = sizes["v"].astype(str), sizes["o"].astype(str)
    g = sizes.set_index(["v", "bin", "o"])["n"].unstack("o", fill_value=0)
    totals = g.groupby(level="v").sum().sum(axis=1)
    order = sorted(totals.index, key=lambda v: (-int(totals[v]), v))
    hidden = max(0, len(order) - max_vantages)
    order = order[:max_vantages]
    all_bins = _all_bins(bins.min(), bins.max(), freq)
    x = np.arange(len(all_bins))
    panel_in = 1.5 if len(order) <= 4 else 1.1
    fig = _figure(figsize=(min(16.0, max(8.0, 3.0 + 0.2 * len(all_bins))), 0.8 + panel_in * len(order)))
    axes = fig.subplots(len(order), 1, sharex=True, squeeze=False)[:, 0]
    used: dict[str, str] = {}
    for ax, v in zip(axes, order, strict=True):
        sub = g.xs(v, level="v").reindex(all_bins, fill_value=0)
        bottom = np.zeros(len(all_bins))
        for cat, colour in HEALTH_COLOURS.items():
            if cat not in sub.columns or not sub[cat].any():
                continue
            vals = sub[cat].to_numpy(dtype=float)
            ax.add_collection(_bars(x, vals, bottom, width=0.85, color=colour,
                                    hatch="//" if cat == "vantage offline" else None))
            bottom += vals
            used[cat] = colour
        ax.autoscale_view()
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


def network_country_labels(frame: pd.DataFrame) -> pd.Series:
    """Per row: "KZ · AS9198 (JSC Kazakhtelecom)": the country (``probe_cc``, "??" when unknown) and
    :func:`network_labels`: country and network as one dimension, sorting by country first. Categorical,
    built once per (country, network) pair."""
    nets = network_labels(frame)
    if "probe_cc" in frame.columns:
        cc = frame["probe_cc"].astype("category")
        cc_cats, cc_codes = [str(c).upper() for c in cc.cat.categories], cc.cat.codes.to_numpy(dtype=np.int64)
    else:
        cc_cats, cc_codes = [], np.full(len(frame), -1, dtype=np.int64)
    net_cats, net_codes = [str(c) for c in nets.cat.categories], nets.cat.codes.to_numpy(dtype=np.int64)
    width = len(net_cats) + 1
    uniq, inv = np.unique((cc_codes + 1) * width + net_codes + 1, return_inverse=True)
    labels = [f"{cc_cats[k // width - 1] if k // width else '??'} · {net_cats[k % width - 1] if k % width else 'AS?'}"
              for k in uniq.tolist()]
    cats = list(dict.fromkeys(labels))
    code_of = np.array([cats.index(lab) for lab in labels], dtype=np.int64)
    return pd.Series(pd.Categorical.from_codes(code_of[inv], categories=cats), index=frame.index)


def network_heatmap(frame: pd.DataFrame, *, path: str | Path | None = None) -> bytes:
    """Network (with its country) × time heatmap of the blocked share, all targets together (see
    :func:`outcome_heatmap` with ``by="network"``). Returns PNG bytes."""
    return outcome_heatmap(frame, path=path, by="network", title="Outcome by country · network and time")


def blocked_share_series(frame: pd.DataFrame) -> pd.DataFrame:
    """Per network (country · network label) and day (UTC): blocked, judged (blocked + accessible) and all
    measurements, and the blocked share of the judged ones (NaN when none was judged). Columns
    ``network, day, blocked, judged, n, share``."""
    f = _valid(frame, "measurement_start_time", "outcome", "probe_asn")
    if len(f) == 0:
        return pd.DataFrame(columns=["network", "day", "blocked", "judged", "n", "share"])
    o = f["outcome"].astype(str).to_numpy() if not isinstance(f["outcome"].dtype, pd.CategoricalDtype) else None
    oc = f["outcome"].cat.codes.to_numpy() if o is None else None
    if o is None:
        cats = list(f["outcome"].cat.categories)
        b_code = cats.index("blocked") if "blocked" in cats else -2
        a_code = cats.index("accessible") if "accessible" in cats else -2
        blocked, judged = oc == b_code, (oc == b_code) | (oc == a_code)
    else:
        blocked, judged = o == "blocked", np.isin(o, ["blocked", "accessible"])
    t = pd.to_datetime(f["measurement_start_time"], utc=True)
    day = t.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]")  # UTC day
    cols = [c for c in ("probe_asn", "probe_network_name", "probe_cc") if c in frame.columns]
    d = pd.DataFrame({"network": network_country_labels(frame.loc[f.index, cols]).to_numpy(), "day": day,
                      "blocked": blocked, "judged": judged, "n": 1})
    g = d.groupby(["network", "day"], sort=True, observed=True)[["blocked", "judged", "n"]].sum().reset_index()
    g["network"] = g["network"].astype(str)
    g["day"] = pd.to_datetime(g["day"])
    g["share"] = np.where(g["judged"] > 0, g["blocked"] / g["judged"].where(g["judged"] > 0, 1), np.nan)
    return g


def network_time_series(frame: pd.DataFrame, *, path: str | Path | None = None,
                        max_networks: int = MAX_VANTAGES) -> bytes:
    """Blocked share per day per network: one panel per network (the ``max_networks`` with most
    measurements), the share of its judged measurements that day (blocked ÷ (blocked + accessible))
    as points joined by a line in the blocked colour; a day with measurements but none judged is a
    grey tick at the bottom (inconclusive), a day without any is a gap. Returns PNG bytes."""
    title = "Blocked share per day, per network (blocked ÷ judged measurements)"
    g = blocked_share_series(frame) if frame is not None and len(frame) else None
    if g is None or len(g) == 0:
        return no_data_figure(title, "no measurement has a network, a time and an outcome", path=path)
    totals = g.groupby("network")["n"].sum()
    order = sorted(totals.index, key=lambda k: (-int(totals[k]), k))
    hidden = max(0, len(order) - max_networks)
    order = order[:max_networks]
    days = _all_bins(g["day"].min(), g["day"].max(), "D")
    x_of = {dday: i for i, dday in enumerate(days)}
    height = 1.9 + 1.25 * len(order)  # ~0.6 in for the title and legend, ~1 in for the dates below
    fig = _figure(figsize=(min(16.0, max(8.0, 3.0 + 0.12 * len(days))), height))
    axes = fig.subplots(len(order), 1, sharex=True, squeeze=False)[:, 0]
    blocked, grey = palette.OUTCOME_COLOURS["blocked"], palette.OUTCOME_COLOURS["inconclusive"]
    for ax, net in zip(axes, order, strict=True):
        sub = g[g["network"] == net]
        x = np.array([x_of[pd.Timestamp(v)] for v in sub["day"]])
        share = sub["share"].to_numpy(dtype=float)
        ok = ~np.isnan(share)
        full = np.full(len(days), np.nan)
        full[x[ok]] = share[ok]
        ax.plot(np.arange(len(days)), full, color=blocked, linewidth=1.2, marker="o", markersize=3)
        if (~ok).any():
            ax.plot(x[~ok], np.zeros(int((~ok).sum())), linestyle="none", marker="|", markersize=8, color=grey)
        ax.set_ylim(-0.05, 1.05)
        ax.set_yticks([0, 0.5, 1], ["0", "½", "1"], fontsize=_FONT)
        ax.set_title(f"{_label(net, 80)} — n = {int(totals[net])}", fontsize=9, loc="left")
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="y", color="#E0E0E0", linewidth=0.5)
    step = max(1, int(np.ceil(len(days) / 30)))
    axes[-1].set_xticks(range(0, len(days), step), [_bin_label(days[j], "D") for j in range(0, len(days), step)],
                        rotation=60, ha="right", fontsize=_FONT)
    more = f" — {hidden} more networks not shown" if hidden else ""
    fig.suptitle(title + more, fontsize=10, x=0.01, ha="left")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=blocked, marker="o", markersize=3, label="blocked share (judged)"),
               Line2D([], [], color=grey, marker="|", linestyle="none", markersize=8,
                      label="none judged (inconclusive or down)")]
    top = 1 - 0.6 / height
    fig.legend(handles=handles, loc="upper right", bbox_to_anchor=(0.995, top + 0.01), fontsize=_FONT, frameon=False,
               ncols=2)
    fig.tight_layout(rect=(0, 0, 1, top - 0.01))
    return _png(fig, path)


#: The shipped Citizen Lab lists a domain's category is taken from, in order of preference.
CATEGORY_LISTS = ("kz.csv", "global.csv", "kz-2021-05-31.csv", "global-2021-05-31.csv", "fotn-2021-kz.csv")
#: The category of a domain in none of them.
NO_CATEGORY = "(in no list)"


@functools.lru_cache(maxsize=1)
def category_codes() -> dict[str, tuple[str, str]]:
    """Domain (``www.`` dropped) → (Citizen Lab ``category_code``, its description) from the shipped lists
    (:data:`CATEGORY_LISTS`; the first list naming a domain wins)."""
    from probe.targets import load_targets, shipped_list

    out: dict[str, tuple[str, str]] = {}
    for name in CATEGORY_LISTS:
        try:
            targets = load_targets([shipped_list(name)], on_error=lambda _e: None)
        except (OSError, ValueError):
            continue
        for t in targets:
            if t.category_code:
                out.setdefault(t.domain.removeprefix("www."), (t.category_code, t.category_description or ""))
    return out


def categories_of(domains: pd.Series) -> pd.Series:
    """Per domain: "NEWS (News Media)", or :data:`NO_CATEGORY`."""
    codes = category_codes()
    uniq = {d: codes.get(str(d).removeprefix("www.")) for d in domains.dropna().unique()}
    label = {d: (f"{c[0]} ({c[1]})" if c[1] else c[0]) if c else NO_CATEGORY for d, c in uniq.items()}
    return domains.map(label).astype(object).fillna(NO_CATEGORY)


def category_breakdown(frame: pd.DataFrame, *, path: str | Path | None = None, max_rows: int = 40) -> bytes:
    """Measurements per Citizen Lab category (``category_code`` of the shipped target lists), stacked by
    outcome in the outcome colours, the categories with most blocked measurements first. Returns PNG bytes."""
    title = "Outcomes by Citizen Lab category"
    f = _valid(frame, "domain", "outcome")
    if len(f) == 0:
        return no_data_figure(title, "no measurement has a domain and an outcome", path=path)
    cats = categories_of(f["domain"].astype("category"))  # mapped once per domain, not per row
    rows = (pd.DataFrame({"row": cats.astype("category").to_numpy(), "o": f["outcome"].astype("category").to_numpy()})
            .groupby(["row", "o"], observed=True).size().unstack("o", fill_value=0))
    rows.columns = [str(c) for c in rows.columns]
    rows.index = [str(i) for i in rows.index]
    blocked = rows["blocked"] if "blocked" in rows.columns else pd.Series(0, index=rows.index)
    order = sorted(rows.index, key=lambda r: (-int(blocked[r]), -int(rows.loc[r].sum()), r))
    hidden = max(0, len(order) - max_rows)
    rows = rows.loc[order[:max_rows]]
    colours = {k: HEALTH_COLOURS[k] for k in ("blocked", "accessible", "down", "inconclusive")}
    return _stacked_barh(rows, colours, title=title, xlabel="measurements", hidden=hidden, path=path)


#: The figures of a report: file name → (function, alt text).
FIGURES: Sequence[tuple[str, object, str]] = (
    ("heatmap.png", outcome_heatmap, "Heatmap of outcomes per target (rows) and time (columns)"),
    ("heatmap-network.png", network_heatmap,
     "Heatmap of outcomes per country and network (rows) and time (columns), all targets together"),
    ("network-series.png", network_time_series, "Blocked share per day, one panel per network"),
    ("categories.png", category_breakdown, "Stacked bars: measurements per Citizen Lab category by outcome"),
    ("blocking-by-target.png", blocking_by_target, "Stacked bars: blocked measurements per target by blocking type"),
    ("blocking-by-network.png", blocking_by_network,
     "Stacked bars: blocked measurements per network by blocking type"),
    ("mitm.png", mitm_evidence, "Stacked bars: measurements per target whose chain contained a known root, by root"),
    ("vantage-health.png", vantage_health, "Measurements per vantage point over time, by outcome; offline hatched"),
)
