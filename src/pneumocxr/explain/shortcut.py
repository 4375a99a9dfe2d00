"""Image operations of the shortcut check: occlude the film's border band or its burned-in marks,
and measure how much of a class-activation map lies on the lungs.

Everything works on the model's input square, (S, S) uint8, as ``decode_record`` makes it — the
pixels the model really sees. ``box`` is the film inside that square, (top, left, height, width)
(``geometry.content_box``): the whole square for "squash", the unpadded part for "letterbox"; bands,
corners and the lung box are fractions of the film, never of the padding.

Fills (why these): an occluded region must carry no information from what it hides, so every fill
is computed from the *other* pixels only. ``inpaint`` (OpenCV's Telea inpainting, the default)
continues the surrounding film smoothly into the hole: no flat frame, no hard edge, but radial
streaks across a wide band. ``median`` (the median of the film outside the hole) is the bluntest
removal: a flat grey frame. ``reflect`` (border band only) mirrors the film's interior into the
band: film-like texture, no streaks, no frame, but anatomy where there was air. Every fill is an
unusual input in its own way, so the check measures all three: a model that moves under all of
them reacts to the border being gone, not to one fill's artefact. A blurred copy of the image was
not used: blurring the whole film leaks the hidden pixels (a bright letter stays a bright smudge)
back into the fill. Burned-in marks are small and always inpainted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pneumocxr.data.records import ImageRecord
from pneumocxr.errors import ConfigError
from pneumocxr.explain.geometry import content_box

FILLS: tuple[str, ...] = ("inpaint", "median")  # for any region
BORDER_FILLS: tuple[str, ...] = ("inpaint", "median", "reflect")  # for the border band
TEXT_MODES: tuple[str, ...] = ("detect", "corners")
# Crude lung field: middle 60 % of the film's width, 20–85 % of its height (x0, x1, y0, y1).
LUNG_BOX: tuple[float, float, float, float] = (0.2, 0.8, 0.2, 0.85)

Box = tuple[int, int, int, int]  # (top, left, height, width) of the film in the square


def _cv2():
    import cv2  # OpenCV (opencv-python-headless, a dependency of grad-cam): only when used

    return cv2


def film_box(record: ImageRecord, size: int, mode: str) -> Box:
    """Where the film sits in the model square (letterbox pads; squash fills it)."""
    if mode == "squash" or record.member is not None:
        return 0, 0, size, size
    from pneumocxr.imaging import image_info  # header only: no pixels decoded

    info = image_info(record.path)
    return content_box(info.height, info.width, size, mode)


def full_box(square: np.ndarray) -> Box:
    return 0, 0, int(square.shape[0]), int(square.shape[1])


def _check_square(square: np.ndarray) -> np.ndarray:
    square = np.asarray(square)
    if square.ndim != 2 or square.dtype != np.uint8:
        raise ValueError(f"expected an (S, S) uint8 model square, got {square.dtype} {square.shape}")
    return square


def band_mask(shape: tuple[int, int], fraction: float, box: Box | None = None) -> np.ndarray:
    """(H, W) bool: the outer ``fraction`` of the film on every side (the frame of the film)."""
    if not 0.0 < fraction < 0.5:
        raise ConfigError(f"border band {fraction} must be a fraction of the film in (0, 0.5), e.g. 0.08")
    top, left, height, width = box or (0, 0, *shape)
    dy, dx = max(1, round(fraction * height)), max(1, round(fraction * width))
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + height, left : left + width] = True
    mask[top + dy : top + height - dy, left + dx : left + width - dx] = False
    return mask


def corner_mask(shape: tuple[int, int], fraction: float = 0.15, box: Box | None = None) -> np.ndarray:
    """(H, W) bool: the four corner squares of the film, each side ``fraction`` of the film's side."""
    top, left, height, width = box or (0, 0, *shape)
    side = max(1, round(fraction * min(height, width)))
    mask = np.zeros(shape, dtype=bool)
    for y in (top, top + height - side):
        for x in (left, left + width - side):
            mask[y : y + side, x : x + side] = True
    return mask


def fill_region(
    square: np.ndarray, mask: np.ndarray, fill: str = "inpaint", box: Box | None = None
) -> np.ndarray:
    """A copy of ``square`` with ``mask`` replaced (see the module docstring for the fills);
    pixels outside ``mask`` are unchanged, byte for byte."""
    square = _check_square(square)
    if fill not in FILLS:
        raise ConfigError(f"fill {fill!r} is not known; use one of {', '.join(FILLS)}")
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return square.copy()
    if fill == "median":
        top, left, height, width = box or full_box(square)
        film = np.zeros_like(mask)
        film[top : top + height, left : left + width] = True
        rest = square[film & ~mask]
        value = np.uint8(np.median(rest)) if rest.size else np.uint8(np.median(square))
        return np.where(mask, value, square).astype(np.uint8)
    cv2 = _cv2()
    radius = max(1, round(square.shape[0] / 75))  # 3 px at 224
    painted = cv2.inpaint(square, mask.astype(np.uint8), radius, cv2.INPAINT_TELEA)
    return np.where(mask, painted, square).astype(np.uint8)


def detect_marks(
    square: np.ndarray,
    box: Box | None = None,
    *,
    ring: float = 0.15,
    min_tophat: int = 100,
    min_contrast: int = 90,
    max_background: int = 130,
) -> np.ndarray:
    """(S, S) bool: bright, small, high-contrast marks (burned-in letters such as the "R" side
    marker, "A-P", time stamps; also ECG electrodes) in the outer ``ring`` of the film.

    The detector, in 8-bit grey levels: a white top-hat with a disk of 11 px per 224 px keeps
    structures thinner than the disk; a connected component of top-hat >= min_tophat/2 is a mark
    when its peak top-hat is >= ``min_tophat``, its brightest pixel stands >= ``min_contrast`` above
    the median of a 3-px ring around it, that ring is dark (<= ``max_background``: letters sit on
    the air outside the body), its centre lies in the outer ring, and it is small (4 px to 0.8 % of
    the square, each side <= 15 % of the film). The mask is dilated by 2 px (JPEG halo).
    Tuned by eye on 96 Kermany train films at 224 px: it finds most side markers; it misses faint
    grey letters and sometimes takes a very contrasty rib edge or clavicle tip.
    """
    cv2 = _cv2()
    square = _check_square(square)
    size = square.shape[0]
    top, left, height, width = box or full_box(square)
    k = max(3, round(11 * size / 224) | 1)  # odd disk diameter
    tophat = cv2.morphologyEx(square, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    candidates = (tophat >= min_tophat // 2).astype(np.uint8)
    count, labels, stats, centres = cv2.connectedComponentsWithStats(candidates, connectivity=8)
    inner = ~band_mask(square.shape, ring, (top, left, height, width))
    min_area, max_area = max(2, round(4 * (size / 224) ** 2)), 0.008 * size * size
    halo = np.ones((7, 7), np.uint8)
    found = np.zeros(square.shape, dtype=bool)
    for i in range(1, count):
        _, _, w, h, area = stats[i]
        cx, cy = int(centres[i][0]), int(centres[i][1])
        if inner[cy, cx] or not min_area <= area <= max_area or max(w / width, h / height) > 0.15:
            continue
        component = labels == i
        if tophat[component].max() < min_tophat:
            continue
        around = cv2.dilate(component.astype(np.uint8), halo).astype(bool) & ~candidates.astype(bool)
        background = float(np.median(square[around])) if around.any() else 255.0
        if background > max_background or int(square[component].max()) - background < min_contrast:
            continue
        found |= component
    if found.any():
        found = cv2.dilate(found.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    return found


def occlude_border(
    square: np.ndarray, fraction: float = 0.08, fill: str = "inpaint", box: Box | None = None
) -> np.ndarray:
    """``square`` with the film's outer band (``fraction`` of each side) filled (``BORDER_FILLS``)."""
    square = _check_square(square)
    band = band_mask(square.shape, fraction, box)
    if fill != "reflect":
        if fill not in FILLS:
            raise ConfigError(f"border fill {fill!r} is not known; use one of {', '.join(BORDER_FILLS)}")
        return fill_region(square, band, fill, box)
    top, left, height, width = box or full_box(square)
    dy, dx = max(1, round(fraction * height)), max(1, round(fraction * width))
    inner = square[top + dy : top + height - dy, left + dx : left + width - dx]
    mirrored = _cv2().copyMakeBorder(inner, dy, dy, dx, dx, _cv2().BORDER_REFLECT_101)  # (height, width)
    out = square.copy()
    film = out[top : top + height, left : left + width]
    film[band[top : top + height, left : left + width]] = mirrored[
        band[top : top + height, left : left + width]
    ]
    return out


def occlude_marks(
    square: np.ndarray,
    mode: str = "detect",
    *,
    fill: str = "inpaint",
    box: Box | None = None,
    corner: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """(occluded square, mask): ``detect`` fills only the marks ``detect_marks`` finds (unchanged
    image when none); ``corners`` fills the four corner squares whatever they hold."""
    square = _check_square(square)
    if mode not in TEXT_MODES:
        raise ConfigError(f"text occlusion {mode!r} is not known; use one of {', '.join(TEXT_MODES)}")
    if mode == "detect":
        mask = detect_marks(square, box)
    else:
        mask = corner_mask(square.shape, corner, box)
    return fill_region(square, mask, fill, box), mask


def lung_mask(shape: tuple[int, int], box: Box | None = None, lung: Sequence[float] = LUNG_BOX) -> np.ndarray:
    """(H, W) bool: the crude lung box (x0, x1, y0, y1 as fractions of the film)."""
    x0, x1, y0, y1 = lung
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise ConfigError(f"lung box {tuple(lung)} must be fractions 0 <= x0 < x1 <= 1, 0 <= y0 < y1 <= 1")
    top, left, height, width = box or (0, 0, *shape)
    mask = np.zeros(shape, dtype=bool)
    mask[
        top + round(y0 * height) : top + round(y1 * height),
        left + round(x0 * width) : left + round(x1 * width),
    ] = True
    return mask


def lung_energy(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(N,) share of each non-negative map's mass inside its lung mask, in [0, 1]; NaN for an
    all-zero map (no evidence anywhere: the share is undefined). ``masks``: (S, S) or (N, S, S)."""
    maps = np.clip(np.asarray(maps, dtype=np.float64), 0.0, None)  # (N, S, S)
    masks = np.broadcast_to(np.asarray(masks, dtype=bool), maps.shape)
    total = maps.sum(axis=(1, 2))
    inside = np.where(masks, maps, 0.0).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, inside / np.where(total > 0, total, 1.0), np.nan)
    return np.clip(share, 0.0, 1.0)
