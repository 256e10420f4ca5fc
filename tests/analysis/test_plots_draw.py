"""The figures' cheaper drawing draws what the per-artist calls drew (issue 13: the 1M store report)."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis import plots


def _rgba(fig: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


@pytest.mark.parametrize("hatch", [None, "//"])
def test_bars_collection_draws_what_ax_bar_draws(hatch: str | None) -> None:
    """``plots._bars`` (one PolyCollection) against ``ax.bar`` (a Rectangle per bar): stacked, with
    zero-height bars, the hatched "vantage offline" style, the same axis limits and the same pixels."""
    x = np.arange(40)
    rng = np.random.default_rng(3)
    layers = [rng.integers(0, 9, len(x)).astype(float) for _ in range(3)]
    layers[1][::3] = 0.0  # zero-height bars on top of others

    def draw(use_collection: bool) -> tuple[Figure, tuple[float, float], tuple[float, float]]:
        fig = Figure(figsize=(6, 2))
        ax = fig.subplots()
        bottom = np.zeros(len(x))
        for vals, colour in zip(layers, ["#1b9e77", "#d95f02", "#3b3b3b"], strict=True):
            if use_collection:
                ax.add_collection(plots._bars(x, vals, bottom, width=0.85, color=colour, hatch=hatch))
            else:
                ax.bar(x, vals, bottom=bottom, width=0.85, color=colour, hatch=hatch, edgecolor="white",
                       linewidth=0.3)
            bottom += vals
        ax.autoscale_view()
        return fig, ax.get_xlim(), ax.get_ylim()

    old, new = draw(False), draw(True)
    assert new[1] == pytest.approx(old[1]) and new[2] == pytest.approx(old[2])
    assert new[2][0] == 0.0  # the value axis starts at 0, no margin below
    assert np.array_equal(_rgba(old[0]), _rgba(new[0]))


@pytest.mark.parametrize(("n_rows", "n_cols"), [(3, 7), (40, 120)])
def test_cell_grid_draws_what_minor_tick_grid_drew(n_rows: int, n_cols: int) -> None:
    """``plots._cell_grid`` (two LineCollections) against the heatmap's former grid on minor ticks at every
    cell edge: the same pixels over an image, with major tick labels and ``tight_layout`` as the heatmap has."""
    grid = np.arange(n_rows * n_cols).reshape(n_rows, n_cols) % 5

    def draw(use_collection: bool) -> Figure:
        fig = Figure(figsize=(7, 3))
        ax = fig.add_subplot()
        ax.imshow(grid, aspect="auto", interpolation="nearest")
        ax.set_yticks(range(n_rows), [f"row {i}" for i in range(n_rows)], fontsize=6)
        ax.set_xticks(range(0, n_cols, 5), [str(j) for j in range(0, n_cols, 5)], rotation=60, ha="right")
        if use_collection:
            plots._cell_grid(ax, n_rows, n_cols)
        else:
            ax.set_xticks(np.arange(-0.5, n_cols, 1), minor=True)
            ax.set_yticks(np.arange(-0.5, n_rows, 1), minor=True)
            ax.grid(which="minor", color="#E0E0E0", linewidth=0.5)
            ax.tick_params(which="minor", length=0)
        fig.tight_layout()
        return fig

    assert np.array_equal(_rgba(draw(False)), _rgba(draw(True)))


def test_figure_text_measured_once_and_same_png(monkeypatch: pytest.MonkeyPatch) -> None:
    """``plots._figure`` gives the figure its Agg canvas first, so what ``tight_layout`` measured is not
    measured again when ``_png`` draws (it was: every label twice), and the PNG is the same bytes."""
    from matplotlib.backends.backend_agg import RendererAgg

    calls = [0]
    real = RendererAgg.get_text_width_height_descent

    def counted(self: RendererAgg, *a: object, **kw: object) -> object:
        calls[0] += 1
        return real(self, *a, **kw)

    monkeypatch.setattr(RendererAgg, "get_text_width_height_descent", counted)

    def draw(fig: Figure) -> tuple[bytes, int, int]:
        ax = fig.add_subplot()
        ax.plot(range(30), [i % 7 for i in range(30)])
        ax.set_xticks(range(0, 30, 3), [f"2021-01-{d:02d}" for d in range(1, 31, 3)], rotation=60, ha="right")
        ax.set_title("a title", loc="left")
        calls[0] = 0
        fig.tight_layout()
        laid_out = calls[0]
        calls[0] = 0
        png = plots._png(fig, None)
        return png, laid_out, calls[0]

    old_png, old_layout, old_draw = draw(Figure(figsize=(6, 3)))
    new_png, new_layout, new_draw = draw(plots._figure(figsize=(6, 3)))
    assert new_png == old_png
    assert new_layout == old_layout > 0
    assert old_draw > 0 and new_draw == 0  # the old way measured the labels again at draw time
