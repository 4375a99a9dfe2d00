"""Render a model card (Mitchell et al. 2019, "Model Cards for Model Reporting") as Markdown.

Pure rendering: ``render_model_card(context)`` fills the packaged Jinja2 template
``model_card.md.j2`` from plain data (strings, numbers, lists of table rows). Nothing here reads a
checkpoint: ``training.model_card`` gathers the context (it may import ``models``; this layer may
not). Every table cell goes through the ``cell`` filter, so a ``|`` or a line break in a
user-provided string (a run name, a data path, a stress-shift name) cannot break a Markdown table.
Autoescaping is off on purpose: the output is Markdown, not HTML.

Also here, because they are pure and tested on their own: number/CI formatting, the
Hanley–McNeil AUC interval (for checkpoints that store an AUC but no per-image predictions) and
which stress shifts a recipe's augmentation ranges covered.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

import jinja2
from scipy.stats import norm

TEMPLATE = "model_card.md.j2"
MISSING = "—"

# Stress-shift name fragments → the augmentation range (training.augment.AugmentParams field) that
# covers that kind of shift. Checked in order; the first fragment found in the shift's name wins.
_SHIFT_KEYWORDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("rotat",), "rotation_deg"),
    (("shear",), "shear_deg"),
    (("zoom", "scale", "fov", "field", "crop", "frame", "magnif"), "zoom"),
    (("shift", "translat", "offset"), "shift"),
    (("bright", "exposure"), "brightness"),
    (("contrast",), "contrast"),
    (("flip", "mirror"), "hflip"),
    (("noise",), "noise"),
    (("blur",), "blur"),
)
_RANGE_TEXT = {
    "rotation_deg": "rotation ±{v:g}°",
    "shear_deg": "shear ±{v:g}°",
    "zoom": "zoom 1 ± {v:g} per axis",
    "shift": "shift ±{v:g} of the side",
    "brightness": "brightness ±{v:g}",
    "contrast": "contrast 1 ± {v:g}",
    "noise": "Gaussian noise std up to {v:g}",
    "blur": "Gaussian blur sigma up to {v:g} px",
}


def cell(value: Any) -> str:
    """A Markdown table cell: ``|`` escaped, line breaks flattened, None as a dash."""
    if value is None:
        return MISSING
    text = value if isinstance(value, str) else fmt(value)
    return " ".join(text.replace("|", r"\|").split()) or MISSING


def fmt(value: Any, digits: int = 3) -> str:
    """A number for people: floats to ``digits`` decimals, ints with thousands separators."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def fmt_ci(value: float | None, low: float | None = None, high: float | None = None, digits: int = 3) -> str:
    """``0.968 (0.953–0.978)``; the interval is left out where it is unknown."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = fmt(float(value), digits)
    if low is None or high is None or any(math.isnan(float(v)) for v in (low, high)):
        return text
    return f"{text} ({float(low):.{digits}f}–{float(high):.{digits}f})"


def hanley_mcneil_interval(
    auc: float, n_positive: int, n_negative: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Approximate CI of an ROC AUC from the AUC and the class sizes alone (Hanley & McNeil 1982).

    For a checkpoint that stores its validation AUC but not the per-image scores. It treats images
    as independent (several films of one child are not), so it is narrower than a patient bootstrap:
    the card says so wherever it is used. (nan, nan) without both classes.
    """
    if n_positive < 1 or n_negative < 1 or not 0.0 <= auc <= 1.0:
        return float("nan"), float("nan")
    q1, q2 = auc / (2.0 - auc), 2.0 * auc * auc / (1.0 + auc)
    variance = (auc * (1 - auc) + (n_positive - 1) * (q1 - auc**2) + (n_negative - 1) * (q2 - auc**2)) / (
        n_positive * n_negative
    )
    half = float(norm.ppf(0.5 + confidence / 2.0)) * math.sqrt(max(variance, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


def shift_coverage(
    shift: str,
    ranges: Mapping[str, Any] | None,
    covered_by: Sequence[str] | None = None,
    flag: bool | None = None,
) -> str:
    """Did training augmentation cover this kind of stress shift? In words, with the range.

    ``ranges``: the recipe's augmentation ranges (AugmentParams as a dict); None = unknown.
    ``covered_by``: the AugmentParams fields the stress suite says cover this shift (its own
    definition); without it the shift's name decides. ``flag``: the suite's own verdict, used only
    where the ranges are unknown.
    """
    if ranges is None:
        verdict = {True: "yes", False: "no", None: "unknown"}[flag]
        return f"{verdict} (the checkpoint records no recipe)" if flag is None else verdict
    if covered_by is None:
        name = shift.lower()
        field = next((f for keys, f in _SHIFT_KEYWORDS if any(k in name for k in keys)), None)
        covered_by = [field] if field else []
    if not covered_by:
        return "no (no augmentation of this kind)"
    active = [f for f in covered_by if ranges.get(f)]
    if not active:
        return "no (range 0)"
    texts = [
        "random flips" if f == "hflip" else _RANGE_TEXT.get(f, f).format(v=float(ranges[f])) for f in active
    ]
    return "yes (" + ", ".join(texts) + ")"


def augmentation_text(name: str, ranges: Mapping[str, Any] | None) -> str:
    """``anatomy: rotation ±7°, shift ±0.05 of the side, …, no flips`` (ranges in words)."""
    if ranges is None:
        return f"{name} (ranges unknown)"
    parts = [_RANGE_TEXT[f].format(v=float(v)) for f, v in ranges.items() if f in _RANGE_TEXT and v]
    parts.append("horizontal flips" if ranges.get("hflip") else "no flips")
    return f"{name}: " + ", ".join(parts)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> dict[str, list]:
    """A table for the template: ``{"header": [...], "rows": [[...], ...]}`` (cells still raw)."""
    return {"header": list(header), "rows": [list(r) for r in rows]}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        autoescape=False,  # Markdown out: HTML escaping would mangle it; tables use the cell filter
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,  # a missing context key is a bug, not an empty section
    )
    env.filters["cell"] = cell
    env.filters["fmt"] = fmt
    return env


def render_model_card(context: Mapping[str, Any]) -> str:
    """The Markdown model card for ``context`` (the keys ``training.model_card`` builds)."""
    source = resources.files("pneumocxr.evaluation").joinpath(TEMPLATE).read_text("utf-8")
    text = _environment().from_string(source).render(**context)
    while "\n\n\n" in text:  # optional blocks leave blank runs behind: one blank line is enough
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip("\n") + "\n"
