"""``pneumocxr data check``: counts, unreadable files, duplicates and shared patients."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pneumocxr.data.check import CheckReport, check_dataset
from pneumocxr.data.discovery import discover
from pneumocxr.data.duplicates import DEFAULT_NEAR_THRESHOLD, DuplicateGroup
from pneumocxr.labels import SUBLABEL_NORMAL, SUBLABELS

EXIT_UNREADABLE = 1  # some files cannot be decoded (and --allow-bad was not given)
_MAX_LISTED = 20  # items of each kind shown in the human summary; --json has them all


def register(actions: argparse._SubParsersAction) -> None:
    """Add the ``check`` action."""
    parser = actions.add_parser(
        "check",
        help="count images, find unreadable files, duplicates and patients shared between splits",
        description=(
            "Decode every image once (at reduced scale) and report counts per split and class, "
            "unreadable files, byte-identical and near-identical images (within and across splits) "
            "and patient ids found in more than one split. Exit code 1 when a file cannot be decoded, "
            "unless --allow-bad."
        ),
    )
    parser.add_argument("--data", required=True, help="dataset folder, CSV manifest or MedMNIST .npz")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON on stdout")
    parser.add_argument(
        "--allow-bad", action="store_true", help="exit 0 even when some files cannot be decoded"
    )
    parser.add_argument(
        "--near-threshold",
        type=int,
        default=DEFAULT_NEAR_THRESHOLD,
        metavar="N",
        help=f"max Hamming distance between 256-bit perceptual hashes for a near duplicate "
        f"(default {DEFAULT_NEAR_THRESHOLD})",
    )
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: one per CPU)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    report = check_dataset(discover(args.data), near_threshold=args.near_threshold, workers=args.workers)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))
    if report.unreadable and not args.allow_bad:
        return EXIT_UNREADABLE
    return 0


def format_report(report: CheckReport, max_listed: int = _MAX_LISTED, full: str = "--json") -> str:
    """The human summary of a check report (also used by ``pneumocxr run``); ``full`` says where
    the items beyond ``max_listed`` can be seen."""
    lines = [f"dataset: {report.root} ({report.layout} layout), {report.n_images:,} images"]
    lines += _count_table(report)
    lines.append(f"unreadable files: {len(report.unreadable)}")
    lines += [f"  {_short(u.path, report.root)}: {u.reason}" for u in report.unreadable[:max_listed]]
    lines += _more(len(report.unreadable), max_listed, full)
    lines.append(_group_line("exact duplicates (sha256 of bytes)", report.exact_groups))
    near = f"near duplicates ({report.hash_bits}-bit phash, distance <= {report.near_threshold})"
    lines.append(_group_line(near, report.near_groups) + f", {report.near_pairs} pairs of different files")
    for title, groups in (("exact", report.exact_groups), ("near", report.near_groups)):
        lines += [f"  {title}: {_describe(g, report.root)}" for g in groups[:max_listed]]
        lines += _more(len(groups), max_listed, full)
    leaking, conflicts = report.leaking_groups, report.label_conflicts
    lines.append(f"duplicate groups across splits (leakage): {len(leaking)}")
    lines.append(f"duplicate groups with conflicting labels: {len(conflicts)}")
    shared = report.shared_patients
    duplicated = sum(p.duplicated_across_splits for p in shared)
    lines.append(
        f"patient ids in more than one split: {len(shared)} (information only: ids such as personN repeat "
        f"across the official splits without shared images); with images duplicated across them: {duplicated}"
    )
    lines.append(f"time: {report.seconds:.1f} s")
    return "\n".join(lines)


def _count_table(report: CheckReport) -> list[str]:
    present = {name for row in report.sublabel_counts.values() for name in row}
    ordered = (*SUBLABELS, *sorted(present - set(SUBLABELS)))
    subs = [s for s in ordered if s in present and s != SUBLABEL_NORMAL]
    header = f"  {'split':<8}{'NORMAL':>9}{'PNEUMONIA':>11}" + "".join(f"{s:>11}" for s in subs)
    lines = [header]
    for split, per_class in report.counts.items():
        row = report.sublabel_counts.get(split, {})
        cells = f"{per_class.get('NORMAL', 0):>9,}{per_class.get('PNEUMONIA', 0):>11,}"
        lines.append(f"  {split:<8}{cells}" + "".join(f"{row.get(s, 0):>11,}" for s in subs))
    return lines


def _group_line(title: str, groups: list[DuplicateGroup]) -> str:
    files = sum(len(g.paths) for g in groups)
    within = sum(not g.cross_split for g in groups)
    same = sum(g.same_patient for g in groups)
    return (
        f"{title}: {len(groups)} groups ({files} files); within one split {within}, "
        f"across splits {len(groups) - within}; same patient {same}"
    )


def _describe(group: DuplicateGroup, root: str) -> str:
    where = "+".join(group.splits)
    who = group.patients[0] if group.same_patient else f"{len(group.patients)} patients"
    labels = "/".join(group.labels)
    distance = f", distance <= {group.max_distance}" if group.kind == "near" else ""
    return f"[{where}, {labels}, {who}{distance}] " + ", ".join(_short(p, root) for p in group.paths)


def _short(path: str, root: str) -> str:
    """A path relative to the dataset root when it is inside it (shorter lines), else as is."""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def _more(total: int, shown: int, full: str) -> list[str]:
    return [f"  … and {total - shown} more (see {full})"] if total > shown else []
