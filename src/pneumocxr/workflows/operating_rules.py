"""The threshold rules a checkpoint stores, and a predictor that decides at another stored rule.

``pneumocxr train`` stores every rule of ``evaluation.thresholds`` (chosen on the calibrated
validation probabilities) under ``extra["operating_point"]["rules"]`` and uses one of them
(``threshold_rule``) as the checkpoint's threshold. ``evaluate --threshold-rule RULE`` measures the
same model at another rule's threshold without the validation images; ``ensemble create`` stores
them the same way. Checkpoints and ensembles written before the rules were stored hold
no such table: asking them for a rule is refused with the reason, never answered with a guess.
Cheap to import (no evaluation code): the API may use it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pneumocxr.config import THRESHOLD_RULES
from pneumocxr.errors import CheckpointError, ConfigError
from pneumocxr.models import CheckpointMeta

APPLIED_KEY = "threshold_rule_applied"  # in the meta of a predictor returned by with_threshold_rule

__all__ = [
    "APPLIED_KEY",
    "check_rule_name",
    "own_rule",
    "rule_summary",
    "rule_threshold",
    "stored_rules",
    "with_threshold_rule",
]


def check_rule_name(rule: str) -> str:
    """``rule`` if it names a threshold rule, else a ConfigError listing them."""
    if rule not in THRESHOLD_RULES:
        raise ConfigError(
            f"--threshold-rule {rule!r} is not a threshold rule; use one of {', '.join(THRESHOLD_RULES)}"
        )
    return rule


def stored_rules(meta: CheckpointMeta) -> dict[str, dict[str, Any]]:
    """rule → {threshold, sensitivity, specificity, …} as the checkpoint stores them ({} when none)."""
    operating = meta.extra.get("operating_point")
    rules = operating.get("rules") if isinstance(operating, Mapping) else None
    return {str(k): dict(v) for k, v in rules.items()} if isinstance(rules, Mapping) else {}


def rule_threshold(meta: CheckpointMeta, rule: str) -> float:
    """The threshold ``rule`` chose on the checkpoint's validation split, or a clear refusal."""
    check_rule_name(rule)
    rules = stored_rules(meta)
    if not rules:
        again = "re-create the ensemble" if "threshold_choice" in meta.extra else "retrain it"
        raise CheckpointError(
            f"{meta.path} stores no threshold rules (it was written before pneumocxr stored every "
            f"threshold rule); omit --threshold-rule to use its threshold {meta.threshold:.4g}, or {again} "
            "to store them"
        )
    if rule not in rules:
        raise CheckpointError(
            f"{meta.path} stores no threshold for rule {rule!r} (it has {', '.join(rules)}); "
            "choose one of those"
        )
    threshold = float(rules[rule]["threshold"])
    if not 0.0 < threshold < 1.0:
        raise CheckpointError(f"{meta.path}: rule {rule!r} stores threshold {threshold!r}, not in (0, 1)")
    return threshold


def with_threshold_rule(predictor: Any, rule: str) -> Any:
    """A shallow copy of ``predictor`` (a Predictor, ensemble or MC-dropout wrapper: anything that
    decides at ``self.meta.threshold``) deciding at ``rule``'s stored threshold; the model is shared.

    Its meta records what was applied under ``APPLIED_KEY`` (rule, the checkpoint's own threshold
    and rule), so every output can say which threshold it used.
    """
    meta = predictor.meta
    threshold = rule_threshold(meta, rule)
    applied = {
        "rule": rule,
        "threshold": threshold,
        "checkpoint_threshold": meta.threshold,
        "checkpoint_rule": own_rule(meta),
    }
    other = copy.copy(predictor)
    other.meta = replace(meta, threshold=threshold, extra={**meta.extra, APPLIED_KEY: applied})
    return other


def own_rule(meta: CheckpointMeta) -> str | None:
    """The rule that chose the checkpoint's own threshold. A checkpoint written before the rules were
    stored records method "youden" with the threshold ON the highest maximum of J: today's
    ``youden_edge``. An ensemble: its ``threshold_choice`` method. None when nothing is recorded."""
    operating = meta.extra.get("operating_point")
    if isinstance(operating, Mapping):
        if operating.get("threshold_rule"):
            return str(operating["threshold_rule"])
        return "youden_edge" if operating.get("method") == "youden" else operating.get("method")
    choice = meta.extra.get("threshold_choice")
    return choice.get("method") if isinstance(choice, Mapping) else None


def rule_summary(meta: CheckpointMeta) -> dict[str, Any]:
    """What metrics.json says about the threshold used: the rule applied (the checkpoint's own when
    none was asked for) and every stored rule's threshold and validation sensitivity/specificity."""
    own = own_rule(meta)
    applied = meta.extra.get(APPLIED_KEY) or {
        "rule": own,
        "threshold": meta.threshold,
        "checkpoint_threshold": meta.threshold,
        "checkpoint_rule": own,
    }
    keep = ("threshold", "sensitivity", "specificity", "margin_logit")
    return {
        **applied,
        "stored_rules": {name: {k: v.get(k) for k in keep} for name, v in stored_rules(meta).items()},
    }
