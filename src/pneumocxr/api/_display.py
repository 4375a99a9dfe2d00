"""How API results show themselves: HTML tables, pandas frames and figures.

HTML comes from ``tables.html.j2`` rendered with autoescape on, so a model name, a file path or a
note that holds ``<script>`` is shown as text, never run. Figures are the PNGs the CLI writes,
returned as ``matplotlib.figure.Figure`` objects (one image filling the figure, at the PNG's own
pixel size), so a notebook shows exactly what the command line saved.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

TEMPLATE = "tables.html.j2"
PNG_DPI = 100  # a saved PNG is shown at this dpi: its pixel size becomes figsize × dpi


@functools.cache
def _environment() -> jinja2.Environment:
    def source(name: str) -> str:
        return resources.files("pneumocxr.api").joinpath(name).read_text("utf-8")

    return jinja2.Environment(
        loader=jinja2.FunctionLoader(source),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_table(
    *, caption: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], notes: Sequence[str] = ()
) -> str:
    """An HTML ``<table>`` (caption, header, cells, then notes); every string is escaped."""
    template = _environment().get_template(TEMPLATE)
    return str(template.module.table(caption, list(columns), [list(r) for r in rows], list(notes)))


def estimate(value: float, low: float, high: float, digits: int = 3) -> str:
    """``0.912 (0.880–0.940)``; ``n/a`` for NaN; the value alone without an interval."""
    if value is None or math.isnan(value):
        return "n/a"
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def to_frame(rows: Sequence[Mapping[str, Any]], index: str | None = None) -> Any:
    """``rows`` as a ``pandas.DataFrame`` (columns in the rows' order); ImportError without pandas."""
    try:
        import pandas as pd
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "to_frame() needs pandas, which is not installed: pip install pandas "
            "(or use .rows, the same table as a list of dicts)"
        ) from None
    frame = pd.DataFrame([dict(r) for r in rows])
    return frame.set_index(index) if index is not None and not frame.empty else frame


def saved_figure(path: str | Path) -> Any:
    """The PNG at ``path`` as a ``matplotlib.figure.Figure`` (no pyplot state; display it in Jupyter,
    or ``savefig`` it elsewhere). FileNotFoundError naming the file when it was not written."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.image import imread

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such figure (the step that writes it did not run)")
    pixels = imread(path)  # (H, W, 3|4) float in [0, 1]
    height, width = pixels.shape[:2]
    fig = Figure(figsize=(width / PNG_DPI, height / PNG_DPI), dpi=PNG_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(pixels, interpolation="antialiased")
    ax.set_axis_off()
    return fig


class Figures(Mapping[str, Any]):
    """name → ``Figure`` of a PNG a step saved; each figure is read when it is looked up."""

    def __init__(self, paths: Mapping[str, str | Path]):
        self.paths = {name: Path(p) for name, p in paths.items()}

    def __getitem__(self, name: str) -> Any:
        if name not in self.paths:
            raise KeyError(f"no figure {name!r}; these exist: {', '.join(self.paths) or 'none'}")
        return saved_figure(self.paths[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"Figures({', '.join(self.paths)})"
