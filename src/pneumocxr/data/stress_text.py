"""Burned-in text and markers for the stress suite (``stress_shifts``' ``text`` shift).

Hand-written because albumentations has no fit: its ``TextImage`` needs a TrueType font file and
caller-given boxes, and no font file can be assumed on a hospital server or in CI. OpenCV's
built-in Hershey vector fonts (``cv2.putText``) need nothing on disk and draw the same pixels
everywhere, so a seed fixes the image exactly.

What is drawn imitates what a film from another site carries: a lead side marker ("L"/"R"), a
date/time stamp, exposure values (kVp, mAs), the projection and an accession-like number, in
white in the corners, sized relative to the image so a severity means the same at any resolution.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TEXT_LEVELS", "burn_in_text"]

# level -> what is drawn (cumulative), for the shift's documentation
TEXT_LEVELS = {
    1: "a side marker letter in one corner",
    2: "the side marker and a date/time stamp",
    3: "the side marker, a date/time stamp, exposure values, projection and an accession number",
}
_CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
_WHITE = 1.0  # burned-in overlays are drawn at full brightness


def burn_in_text(image: np.ndarray, level: int, seed: int) -> np.ndarray:
    """``image`` (H×W float32 in [0, 1]) with level 1–3 annotations (``TEXT_LEVELS``) burned in.

    Corners, letters and numbers come from ``seed`` alone (same seed, same pixels).
    """
    rng = np.random.default_rng(seed)
    ink = np.zeros(np.shape(image), dtype=np.uint8)  # antialiased coverage 0-255 (putText wants 8 bit)
    corners = [_CORNERS[i] for i in rng.permutation(len(_CORNERS))]
    marker_height = 0.06 if level >= 3 else 0.05  # of the image height
    _draw(ink, str(rng.choice(["L", "R"])), corners[0], marker_height)
    if level >= 2:
        stamp = (
            f"{rng.integers(2012, 2024)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d} "
            f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}:{rng.integers(0, 60):02d}"
        )
        _draw(ink, stamp, corners[1], 0.035)
    if level >= 3:
        _draw(ink, f"kVp {rng.integers(55, 90)}  mAs {rng.integers(10, 60) / 10:.1f}", corners[2], 0.035)
        _draw(ink, f"AP SUPINE  ACC {rng.integers(10**6, 10**7)}", corners[3], 0.035)
    alpha = ink.astype(np.float32) / 255.0
    out = np.asarray(image, dtype=np.float32) * (1.0 - alpha) + _WHITE * alpha  # white text over the film
    return np.clip(out, 0.0, 1.0)


def _draw(ink: np.ndarray, text: str, corner: str, height_fraction: float) -> None:
    """Draw ``text`` into the uint8 coverage mask ``ink`` in place: cap height ``height_fraction`` of
    the image height, inset from ``corner``, shrunk to at most about half the width."""
    import cv2  # here, not at import: the CLI lists the shifts without loading OpenCV

    font = cv2.FONT_HERSHEY_SIMPLEX
    h, w = ink.shape
    target = max(4.0, height_fraction * h)  # pixels
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, 1)  # size at scale 1
    margin = max(2, round(target * 0.6))
    scale = min(target / th, max(0.05, (0.45 * w - margin) / tw))  # at most ~half the width
    thickness = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
    x = margin if corner.endswith("left") else w - margin - tw
    y = margin + th if corner.startswith("top") else h - margin - base
    cv2.putText(ink, text, (int(x), int(y)), font, scale, (255,), thickness, cv2.LINE_AA)
