"""Leaderboard pictures as PNG bytes: ratings with their intervals, and pair matrices.

matplotlib is imported inside the functions (Agg canvas, no pyplot state), so importing
`arena.ratings` costs nothing on a server that never draws.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from arena.ratings import RatingsResult

HeatmapKind = Literal["win_fraction", "battle_count", "predicted_win_rate"]


def _figure(width_in: float, height_in: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def plot_ratings(result: RatingsResult) -> bytes:
    """Ratings, best first, with their 95% intervals as error bars."""
    rows = result.ratings
    fig = _figure(max(4.0, 0.45 * len(rows) + 1.5), 4.0)
    ax = fig.add_subplot()
    x = list(range(len(rows)))
    ax.errorbar(
        x,
        [r.rating for r in rows],
        # With few votes the point estimate can fall outside its bootstrap interval (the
        # resampled fits pile up at one side); clip so the bar still spans the interval.
        yerr=[[max(0.0, r.rating - r.ci_low) for r in rows],
              [max(0.0, r.ci_high - r.rating) for r in rows]],
        fmt="o",
        capsize=3,
    )
    ax.set_xticks(x, [r.model for r in rows], rotation=45, ha="right")
    ax.set_ylabel("rating (Elo scale)")
    ax.set_title(f"Bradley–Terry ratings\n95% intervals ({result.method}), {result.votes:,} votes")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_heatmap(result: RatingsResult, kind: HeatmapKind = "win_fraction") -> bytes:
    """A pair matrix of ``result`` (row model against column model), best model first."""
    import numpy as np

    if kind not in ("win_fraction", "battle_count", "predicted_win_rate"):
        raise ValueError(f"unknown heatmap {kind!r}")
    matrix = np.array(
        [[np.nan if v is None else float(v) for v in row] for row in getattr(result, kind)]
    ).reshape(len(result.models), len(result.models))
    if kind == "battle_count":
        np.fill_diagonal(matrix, np.nan)
    size = max(4.0, 0.5 * len(result.models) + 2.0)
    fig = _figure(size, size * 0.85)
    ax = fig.add_subplot()
    image = ax.imshow(
        np.ma.masked_invalid(matrix),
        cmap="RdBu" if kind != "battle_count" else "viridis",
        vmin=0.0 if kind != "battle_count" else None,
        vmax=1.0 if kind != "battle_count" else None,
    )
    fig.colorbar(image, ax=ax, shrink=0.8)
    ticks = list(range(len(result.models)))
    ax.set_xticks(ticks, result.models, rotation=45, ha="right")
    ax.set_yticks(ticks, result.models)
    ax.set_xlabel("opponent")
    ax.set_ylabel("model")
    ax.set_title(kind.replace("_", " ").capitalize() + "\n(row model against column opponent)",
                 fontsize="medium")
    if len(result.models) <= 15:  # numbers stay legible
        for (r, c), value in np.ndenumerate(matrix):
            if not np.isnan(value):
                text = f"{value:.0f}" if kind == "battle_count" else f"{value:.2f}"
                ax.text(c, r, text, ha="center", va="center", fontsize=8)
    return _png(fig)
