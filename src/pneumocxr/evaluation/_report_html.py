"""HTML building blocks for the report: Jinja2 macros (report_blocks.html.j2) for tables, embedded
figures, notes; number formatting; tolerant readers of the output tree. Generic on purpose;
``report`` holds what the sections say.

Nothing here escapes by hand: every block is a macro rendered with Jinja2's autoescape, which
escapes text (names, config values, error messages from files) and keeps markup that another
block rendered (``Html``, markupsafe's ``Markup``). So text from files can never inject markup.
"""

from __future__ import annotations

import base64
import csv
import functools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SELECTION_LABEL = "validation (used for selection: optimistic)"
TEST_LABEL = "test (held out: evaluated once, after every choice was made)"
BLOCKS = "report_blocks.html.j2"

Html = Markup  # markup a template rendered: safe to place as it is; anything else is text to escape


def _template_source(name: str) -> str:
    return resources.files("pneumocxr.evaluation").joinpath(name).read_text("utf-8")


@functools.cache
def jinja_environment() -> jinja2.Environment:
    """The report's Jinja2 environment: packaged templates, autoescape on, undefined names an error."""
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(_template_source),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


@functools.cache
def _blocks() -> Any:
    return jinja_environment().get_template(BLOCKS).module


def join(parts: Iterable[object]) -> Html:
    return _blocks().join(list(parts))


def tag(name: str, content: object, cls: str = "") -> Html:
    return _blocks().tag(name, content, cls)


# ----------------------------------------------------------------------------- numbers


def num(value: object) -> float:
    """A float from JSON/CSV (None, "", "nan", text → NaN)."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def fmt(value: object, digits: int = 3) -> str:
    v = num(value)
    return "n/a" if math.isnan(v) else f"{v:.{digits}f}"


def fmt_ci(value: object, low: object, high: object, digits: int = 3) -> str:
    """``0.953 (0.931–0.970)``; the value alone without an interval; ``n/a`` when undefined."""
    v, lo, hi = num(value), num(low), num(high)
    if math.isnan(v):
        return "n/a"
    if math.isnan(lo) or math.isnan(hi):
        return f"{v:.{digits}f}"
    return f"{v:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"


def fmt_p(value: object) -> str:
    p = num(value)
    return "–" if math.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


# ----------------------------------------------------------------------------- building blocks


def not_run(what: str, reason: str) -> Html:
    return _blocks().not_run(what, reason)


def callout(*paragraphs: object, warn: bool = False) -> Html:
    return _blocks().callout(list(paragraphs), warn)


def table(
    head: Sequence[object],
    rows: Iterable[Sequence[object]],
    *,
    labels: int = 1,
    caption: str = "",
    align: Sequence[bool] | None = None,
) -> Html:
    """A table whose first ``labels`` columns are text and the rest right-aligned numbers
    (``align``: one flag per column, True = right-aligned number, overrides ``labels``)."""

    def cells(values: Sequence[object]) -> list[tuple[object, str]]:
        out = []
        for i, value in enumerate(values):
            right = align[i] if align is not None and i < len(align) else i >= labels
            cls = ("num" if right else "") + (" na" if str(value) in ("n/a", "–") else "")
            out.append((value, cls.strip()))
        return out

    return _blocks().table(cells(head), [cells(row) for row in rows], caption)


def figures(items: Sequence[Html], columns: int = 2) -> Html:
    """Figures side by side, ``columns`` (1–4) to a row."""
    return _blocks().figures(list(items), max(1, min(columns, 4)))


def pre(text: str) -> Html:
    return _blocks().pre(text)


def column_title(model: object, data: str, sub: str) -> Html:
    """A table column heading: the model (and data), a second muted line below."""
    return _blocks().column_title(model, data, sub)


@dataclass
class Tree:
    """The output folder being reported on, with tolerant readers that say why a file is unusable."""

    root: Path
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # evaluation/*/metrics.json
    split_labels: dict[str, str] = field(default_factory=dict)  # from results/run_summary.json

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def json(self, path: Path) -> tuple[Any, str]:
        """(data, "") or (None, why it cannot be used)."""
        try:
            return json.loads(path.read_text(encoding="utf-8")), ""
        except FileNotFoundError:
            return None, f"{self.rel(path)} not found"
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            return None, f"{self.rel(path)} is unreadable ({exc})"

    def csv(self, path: Path) -> tuple[list[dict[str, str]] | None, str]:
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                return list(csv.DictReader(fh)), ""
        except FileNotFoundError:
            return None, f"{self.rel(path)} not found"
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            return None, f"{self.rel(path)} is unreadable ({exc})"

    def figure(self, path: Path, caption: str) -> Html:
        """The PNG embedded as a data: URI, or a "not run" note naming the file."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return not_run(caption, f"{self.rel(path)} not found")
        except OSError as exc:
            return not_run(caption, f"{self.rel(path)} is unreadable ({exc})")
        if not data.startswith(PNG_SIGNATURE):
            return not_run(caption, f"{self.rel(path)} is not a PNG image")
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        return _blocks().figure(uri, caption)

    def folders(self, sub: str) -> list[Path]:
        base = self.root / sub
        return sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def split_label(self, split: str, selection: dict | None = None) -> str:
        """How honest a split's numbers are: test, optimistic validation, external, or plain."""
        if split in self.split_labels:
            return str(self.split_labels[split])
        selection = selection or {}
        if selection.get("could_have_been_used_for_selection") is True:
            return f"{split} — used for training or selection: optimistic"
        if selection.get("same_dataset") is False:
            return f"{split} — external validation"
        if split == "test":
            return TEST_LABEL
        if split.lower() in ("validation", "selection", "val_carved", "val_selection"):
            return SELECTION_LABEL
        if split == "val" and selection.get("could_have_been_used_for_selection") is False:
            return "val — official folder (not used for selection)"
        return split if selection else f"{split} — use in training or selection not recorded"


# ----------------------------------------------------------------------------- generic data


def _scalar(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _show(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.4g}"  # 1500.3 s, not 1500
    return "–" if value is None else str(value)


def data_block(value: Any) -> Html:
    """Any JSON value, readably: a key/value table, a table of records, or indented JSON."""
    if isinstance(value, dict) and value and all(_scalar(v) for v in value.values()):
        rows = [(k, _show(v)) for k, v in value.items()]
        return table(["Key", "Value"], rows, align=[False, False])
    records = isinstance(value, list) and value and all(isinstance(v, dict) for v in value)
    if records and all(_scalar(x) for v in value for x in v.values()):
        keys = list(dict.fromkeys(k for v in value for k in v))
        numeric = [all(isinstance(v.get(k), (int, float)) for v in value) for k in keys]
        return table(keys, [[_show(v.get(k)) for k in keys] for v in value], align=numeric)
    if _scalar(value):
        return tag("p", _show(value))
    return pre(json.dumps(value, indent=2, default=str))
