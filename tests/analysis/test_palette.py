"""analysis.palette: one colour per meaning and one meaning per colour, across every figure of the report.

Issue 15 part 4: the heatmap and the blocking-type chart used green for "accessible" in one and for a
blockpage in the other. Every vocab value (probe.vocab outcomes and blocking types) has exactly one
colour here, no colour has two meanings, and every figure of analysis.plots fills only with these
colours (checked on the matplotlib artists of each figure, drawn from a frame holding every outcome
and blocking type).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import Collection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from analysis import palette, plots
from probe import vocab
from tests.analysis.test_report import T0, frame_of, measurement


def test_every_vocab_value_has_exactly_one_colour() -> None:
    assert set(palette.OUTCOME_COLOURS) == set(vocab.OUTCOMES)
    assert set(palette.BLOCKING_COLOURS) == set(vocab.BLOCKING_TYPES)
    for v in (*vocab.OUTCOMES, *vocab.BLOCKING_TYPES):
        assert palette.colour_of(v) in palette.MEANINGS


def test_no_colour_has_two_meanings() -> None:
    colours = [*palette.OUTCOME_COLOURS.values(), *palette.BLOCKING_COLOURS.values(), palette.OFFLINE_COLOUR,
               palette.NO_DATA_COLOUR, palette.UNKNOWN_BLOCKING_COLOUR, *palette.SHARE_TINTS.values()]
    assert len({c.upper() for c in colours}) == len(colours), "a colour is used for two meanings"
    assert len(palette.MEANINGS) == len(colours)


def test_figures_reuse_the_palette_tables() -> None:
    """plots' own tables are views of the palette: blocked is the same vermillion in the heatmap, the health
    bars and the time series; a blocking type's colour is never an outcome's."""
    assert plots.BLOCKING_COLOURS == palette.BLOCKING_COLOURS
    assert {k: v for k, v in plots.HEALTH_COLOURS.items() if k in vocab.OUTCOMES} == palette.OUTCOME_COLOURS
    assert dict(plots.CELL_STATES)["blocked (≥ 90 %)"] == palette.OUTCOME_COLOURS["blocked"]
    assert dict(plots.CELL_STATES)["accessible (< 10 % blocked)"] == palette.OUTCOME_COLOURS["accessible"]
    assert not set(palette.BLOCKING_COLOURS.values()) & set(palette.OUTCOME_COLOURS.values())


def _every_kind_frame() -> pd.DataFrame:
    """Every blocking type (twice), accessible, down, inconclusive and offline, on two networks over days."""
    rows = []
    i = 0
    for day in range(6):
        for b in (*vocab.BLOCKING_TYPES, "false", "false", None):
            for v in (("pi", "AS9198", "JSC Kazakhtelecom"), ("vps", "AS21299", "Kar-Tel LLC")):
                kw: dict[str, Any] = {"vantage": v, "t": T0 + pd.Timedelta(days=day, hours=i % 24)}
                if b is None:
                    kw.update(blocking=None, accessible=None, offline=day == 3)
                elif b == "false":
                    kw.update(blocking="false", accessible=i % 3 != 0)
                else:
                    kw.update(blocking=b, accessible=b == "throttling",
                              mitm_root="Qaznet Trust Network" if b == "tls_mitm" else None)
                rows.append(measurement(i, ["meduza.io", "facebook.com", "archive.org"][i % 3], **kw))
                i += 1
    return frame_of(rows)


def _fill_colours(fig: Figure) -> set[str]:
    """Every data colour a figure fills or strokes with: bars/patches (and legend handles), lines and markers,
    collections, and the colours of image colour maps. Axes backgrounds and the figure's own are left out."""
    out: set[str] = set()

    def patch(p: Patch) -> None:
        fc = p.get_facecolor()
        if fc[3] > 0:
            out.add(to_hex(fc, keep_alpha=False).upper())

    for ax in fig.axes:
        for p in ax.patches:
            patch(p)
        for line in ax.lines:
            if line.get_linestyle() not in ("None", "none", "") or line.get_marker() not in (None, "None", "none", ""):
                out.add(to_hex(line.get_color()).upper())
        for c in ax.collections:
            assert isinstance(c, Collection)
            for fc in c.get_facecolors():
                out.add(to_hex(fc, keep_alpha=False).upper())
        for im in ax.images:
            assert isinstance(im, AxesImage)
            cmap = im.get_cmap()
            out.update(to_hex(cmap(k / max(1, cmap.N - 1))).upper() for k in range(cmap.N))
            rgba = np.asarray(im.get_array())
            if rgba.ndim == 3:  # coloured already (the heatmaps): the cells' own colours
                px = rgba.reshape(-1, rgba.shape[-1])
                out.update(to_hex(tuple(v / 255 for v in row[:3])).upper() for row in np.unique(px, axis=0))
        leg = ax.get_legend()
        if leg is not None:
            for h in leg.legend_handles:
                if isinstance(h, Patch):
                    patch(h)
                elif isinstance(h, Line2D):
                    out.add(to_hex(h.get_color()).upper())
    for leg in fig.legends:
        for h in leg.legend_handles:
            if isinstance(h, Patch):
                patch(h)
            elif isinstance(h, Line2D):
                out.add(to_hex(h.get_color()).upper())
    return out


@pytest.mark.parametrize("name,fn,alt", plots.FIGURES, ids=[f[0] for f in plots.FIGURES])
def test_every_figure_draws_only_with_the_palette(monkeypatch: pytest.MonkeyPatch, name: str, fn: Any,
                                                   alt: str) -> None:
    figs: list[Figure] = []
    monkeypatch.setattr(plots, "_png", lambda fig, path: figs.append(fig) or b"")
    fn(_every_kind_frame())
    assert figs, name
    used = _fill_colours(figs[0])
    allowed = {c.upper() for c in palette.MEANINGS}
    assert used, f"{name} draws nothing in colour"
    assert used <= allowed, f"{name} uses colours outside the palette: {sorted(used - allowed)}"


def test_blocking_figures_key_each_type_to_its_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    """The blocking-type legend says each type in its palette colour (the meaning travels with the colour)."""
    figs: list[Figure] = []
    monkeypatch.setattr(plots, "_png", lambda fig, path: figs.append(fig) or b"")
    plots.blocking_by_target(_every_kind_frame())
    leg = figs[0].axes[0].get_legend()
    seen = {t.get_text(): to_hex(h.get_facecolor(), keep_alpha=False).upper()
            for t, h in zip(leg.get_texts(), leg.legend_handles, strict=True)}
    assert seen == {b: c.upper() for b, c in palette.BLOCKING_COLOURS.items()}


def test_html_swatches_come_from_the_palette() -> None:
    css = palette.css()
    for k, c in {**palette.OUTCOME_COLOURS, **palette.BLOCKING_COLOURS}.items():
        assert f".sw-{k} {{ background: {c}; }}" in css


# Machado, Oliveira & Fernandes, "A Physiologically-based Model for Simulation of Color Vision Deficiency"
# (IEEE TVCG 15(6), 2009): the full-severity (dichromat) matrices, applied to linear RGB.
CVD = {"protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                      [-0.003882, -0.048116, 1.051998]],
       "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                        [-0.011820, 0.042940, 0.968881]],
       "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
                      [0.004733, 0.691367, 0.303900]]}
#: CIE76 ΔE below which two flat colours side by side are hard to tell apart (~2.3 is one just-noticeable
#: difference; legends and hatching carry the rest, but colours of one figure must not merge).
MIN_DELTA_E = 12.0


def _lab(hexcolour: str, matrix: Any = None) -> np.ndarray:
    c = np.array([int(hexcolour[i:i + 2], 16) for i in (1, 3, 5)]) / 255
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    if matrix is not None:
        lin = np.clip(np.array(matrix) @ lin, 0, 1)
    xyz = lin @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


@pytest.mark.parametrize("vision", [None, *CVD])
@pytest.mark.parametrize("figure", ["outcomes", "blocking types", "heatmap cells"])
def test_colours_of_one_figure_stay_apart_with_colour_vision_deficiencies(figure: str, vision: str | None) -> None:
    """Colour-blind safe (issue 15 part 4), checked rather than asserted: the colours one figure shows side by
    side stay at least MIN_DELTA_E apart for normal vision and simulated protanopia, deuteranopia and tritanopia
    (worst pairs at the time of writing: 14.7 for dns/throttling under protanopia, 16.1 accessible/down under
    tritanopia)."""
    groups = {"outcomes": {**palette.OUTCOME_COLOURS, "offline": palette.OFFLINE_COLOUR},
              "blocking types": dict(palette.BLOCKING_COLOURS),
              "heatmap cells": dict(plots.CELL_STATES)}
    colours = groups[figure]
    labs = {k: _lab(v, CVD[vision] if vision else None) for k, v in colours.items()}
    close = [(a, b, round(float(np.linalg.norm(labs[a] - labs[b])), 1)) for i, a in enumerate(labs)
             for b in list(labs)[i + 1:] if np.linalg.norm(labs[a] - labs[b]) < MIN_DELTA_E]
    assert close == [], f"{figure}: colours too close for {vision or 'normal vision'}"
