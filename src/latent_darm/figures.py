"""The one way figures are drawn: a matplotlib Figure on the Agg canvas (no display; matplotlib is the ``plot``
extra, imported only when a figure is made)."""

from __future__ import annotations

from typing import Any

from latent_darm.extras import require


def agg_figure(purpose: str, **figure_kwargs: Any) -> Any:
    """A ``matplotlib.figure.Figure`` ready to draw on and ``savefig``; ``purpose`` names the figure in the error
    when matplotlib is missing."""
    figure = require("matplotlib.figure", purpose).Figure(**figure_kwargs)
    require("matplotlib.backends.backend_agg", purpose).FigureCanvasAgg(figure)
    return figure


def colormap(name: str, purpose: str) -> Any:
    return require("matplotlib", purpose).colormaps[name]
