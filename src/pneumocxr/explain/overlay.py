"""Heat-map overlays drawn headless (matplotlib's Agg canvas, no pyplot global state).

The overlay is drawn at the original image's aspect ratio — the map has already been put back
into that geometry (``geometry.to_original_geometry``) — with a colour bar, so the reader can see
what "hot" means (the map is normalised per image: 1 = the strongest evidence in this image).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from pneumocxr.explain.geometry import display_size, resize_map

CMAP = "jet"
ALPHA = 0.45  # heat-map opacity: the anatomy stays readable underneath
MAX_DISPLAY_SIDE = 1024  # overlays of full-size films are drawn at most this large (pixels)
MIN_DISPLAY_SIDE = 512  # small images are enlarged to this for a readable figure
COLORBAR_LABEL = "relevance (1 = highest in image)"


def blend(image: np.ndarray, cam: np.ndarray, *, alpha: float = ALPHA, cmap: str = CMAP) -> np.ndarray:
    """(H, W, 3) uint8: the gray image with the coloured map blended on top (same H × W)."""
    image = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    cam = np.clip(np.asarray(cam, dtype=np.float32), 0.0, 1.0)
    if image.shape != cam.shape or image.ndim != 2:
        raise ValueError(f"image {image.shape} and map {cam.shape} must be the same 2-D size")
    colours = colormaps[cmap](cam)[..., :3]  # (H, W, 3) in [0, 1]
    mixed = (1.0 - alpha) * image[..., None] + alpha * colours
    return np.clip(np.rint(mixed * 255.0), 0, 255).astype(np.uint8)


def draw_overlay(
    ax: Axes, image: np.ndarray, cam: np.ndarray, *, alpha: float = ALPHA, cmap: str = CMAP
) -> AxesImage:
    """Draw image + map on ``ax`` (no axis ticks); returns the map's artist for a colour bar."""
    ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="antialiased")
    artist = ax.imshow(cam, cmap=cmap, vmin=0.0, vmax=1.0, alpha=alpha, interpolation="antialiased")
    ax.set_xticks([])
    ax.set_yticks([])
    return artist


def for_display(
    image: np.ndarray, cam: np.ndarray, max_side: int, min_side: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Image and map resized together (same geometry) so the long side is in [min_side, max_side]."""
    height, width = display_size(*image.shape, max_side, min_side)
    if (height, width) == image.shape:
        return image, cam
    return resize_map(image, height, width), resize_map(cam, height, width)


def save_overlay(
    path: str | Path,
    image: np.ndarray,
    cam: np.ndarray,
    *,
    title: str,
    max_side: int = MAX_DISPLAY_SIDE,
    dpi: int = 100,
) -> Path:
    """PNG of the overlay at the image's own aspect ratio (long side 512 to ``max_side`` px), titled,
    with a colour bar. ``image`` and ``cam`` are (H, W) in the original geometry."""
    image, cam = np.asarray(image, np.float32), np.asarray(cam, np.float32)
    if image.shape != cam.shape or image.ndim != 2:
        raise ValueError(f"image {image.shape} and map {cam.shape} must be the same 2-D size")
    image, cam = for_display(image, cam, max_side, min(MIN_DISPLAY_SIDE, max_side))
    height, width = image.shape
    margin_w, margin_h = 1.2, 0.7  # inches for the colour bar and the title
    fig = Figure(
        figsize=(max(width / dpi, 4.5) + margin_w, height / dpi + margin_h),
        dpi=dpi,
        layout="constrained",
    )
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    artist = draw_overlay(ax, image, cam)
    ax.set_title(title, fontsize=9)
    fig.colorbar(artist, ax=ax, fraction=0.05, pad=0.02, label=COLORBAR_LABEL)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
