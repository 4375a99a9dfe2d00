"""``pneumocxr ensemble create OUT.pt MEMBER…`` and ``pneumocxr ensemble show FILE``."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from pneumocxr.cli.common_args import add_device_options
from pneumocxr.config import THRESHOLD_RULES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ensemble",
        help="combine checkpoints (or a cv folder's folds) into one ensemble file",
        description="An ensemble file loads wherever a checkpoint does (evaluate, compare, predict, "
        "explain). It predicts the mean of its members' calibrated probabilities, decided at its own "
        "threshold.",
    )
    actions = parser.add_subparsers(dest="ensemble_action", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        help="write an ensemble file with its own threshold and conformal calibration",
        description="Members: checkpoint files, run folders (their best.pt) or ONE cross-validation folder "
        "(its fold models; the threshold and conformal calibration come from its out-of-fold predictions). "
        "Separately trained runs must share their validation split; the ensemble predicts it to choose "
        "its threshold (every rule is stored; --threshold-rule picks the one it decides at) and calibrate "
        "conformal sets. A single member is allowed: it gives that "
        "checkpoint stored conformal calibration (and TTA with --tta).",
    )
    create.add_argument("out", type=Path, metavar="OUT.pt", help="ensemble file to write")
    create.add_argument(
        "members", nargs="+", type=Path, metavar="MEMBER", help="checkpoints, run or cv folders"
    )
    create.add_argument("--data", type=Path, help="the members' training data, when it has moved since")
    create.add_argument(
        "--alpha",
        type=float,
        default=0.05,
        help="conformal miscoverage: 0.05 = sets hold the truth 95%% of the time",
    )
    create.add_argument(
        "--conformal", choices=("lac", "aps"), default="lac", help="conformal score (default lac)"
    )
    create.add_argument(
        "--class-conditional",
        action="store_true",
        help="conformal coverage per class (Mondrian), not only overall",
    )
    create.add_argument(
        "--tta", action="store_true", help="test-time augmentation (small shifts/scales, no flips) by default"
    )
    create.add_argument(
        "--threshold-rule",
        choices=THRESHOLD_RULES,
        help="the rule the ensemble decides at (default: the rule its members were trained with when they "
        "agree, else youden); every rule is stored for evaluate --threshold-rule",
    )
    add_device_options(create)
    create.add_argument("--cache-dir", type=Path, help="preprocessed-image cache for the validation images")
    create.set_defaults(handler=run_create)
    show = actions.add_parser("show", help="members, threshold and calibration of an ensemble file")
    show.add_argument("file", type=Path, help="an ensemble file")
    show.add_argument("--device", default="cpu", help="device to load it on (default cpu)")
    show.set_defaults(handler=run_show)


def run_create(args: argparse.Namespace) -> int:
    from pneumocxr.workflows.ensemble_create import create_ensemble  # torch: only when this runs

    made = create_ensemble(
        args.out,
        args.members,
        data_root=args.data,
        alpha=args.alpha,
        conformal_method=args.conformal,
        class_conditional=args.class_conditional,
        tta=args.tta,
        device=args.device,
        batch_size=args.batch_size,
        cache_dir=args.cache_dir,
        threshold_rule=args.threshold_rule,
    )
    v, t, c = made.validation, made.threshold, made.conformal
    print(f"ensemble of {len(made.members)}: {', '.join(made.members)}" + (" (with TTA)" if made.tta else ""))
    print(
        f"threshold {t['threshold']:.4f} on the mean calibrated probability, "
        f"chosen on {t['chosen_on']} (rule {t['threshold_rule']})"
    )
    print(
        f"there: AUC {v['roc_auc']:.4f}  accuracy {v['accuracy']:.4f}  sensitivity {v['sensitivity']:.4f}  "
        f"specificity {v['specificity']:.4f}  (optimistic: the same images chose the threshold)"
    )
    print(
        f"conformal ({made.calibration_source}, n={made.n_calibration}): coverage {c['coverage']:.3f}, "
        f"{100 * c['share_uncertain_refer']:.1f}% of images get no single class (uncertain: refer; "
        f"{100 * c['share_two_class']:.1f}% both classes, {100 * c['share_empty']:.1f}% none plausible)"
    )
    print(f"wrote {made.path}; use it like a checkpoint: pneumocxr evaluate --checkpoint {made.path} …")
    if made.split.get("kind") == "cv-holdout":  # patients no fold saw: the honest check of this ensemble
        n, patients = sum(made.split["val_counts"]), len(made.split["val_patients"])
        command = f"pneumocxr evaluate --checkpoint {made.path} --data {made.split['source']}"
        print(
            f"held out of every fold: {n} images of {patients} patients; judge the ensemble on them with "
            f"{command} --split validation --out DIR"
        )
    return 0


def run_show(args: argparse.Namespace) -> int:
    from pneumocxr.inference import load_predictor

    predictor = load_predictor(args.file, device=args.device)
    info = predictor.describe()
    extra = predictor.meta.extra
    if "members" not in info:
        print(f"{args.file} is a single checkpoint ({info['model_name']}), not an ensemble")
        return 0
    print(
        f"{args.file}: {len(info['members'])} members, {info['combine']}" + ("; TTA" if info["tta"] else "")
    )
    for m in info["members"]:
        print(
            f"  {m['name']}: {m['model_name']} at {m['image_size']} px, "
            f"threshold {m['threshold']:.4f}, temperature {m['temperature']:.4g}"
        )
    choice = extra.get("threshold_choice", {})
    print(f"threshold {info['threshold']:.4f}, chosen on {choice.get('chosen_on', 'unknown')}")
    conformal = extra.get("conformal") or {}
    if conformal:
        qhat = [math.inf if q is None else q for q in conformal.get("qhat", [])]
        print(
            f"conformal: {conformal['method']} at alpha {conformal['alpha']}, q̂ {qhat}, "
            f"{len(conformal['labels'])} {conformal['source']} predictions"
        )
    return 0
