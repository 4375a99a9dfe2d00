"""``pneumocxr audit export [--since …] [--format csv|jsonl] [--db …] [--out FILE]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="export the serving audit log",
        description="Export the audit log of `pneumocxr serve` (one row per request that reached the model: "
        "time, request id, key id, input sha256/size/format, model sha256, decision, probabilities, latency, "
        "status). No patient identifiers are stored.",
    )
    parser.add_argument("action", choices=("export",))
    parser.add_argument("--since", help="ISO date or time (UTC unless it names an offset), e.g. 2026-12-01")
    parser.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    parser.add_argument("--db", help="SQLite path or postgresql://… (default output/serve/audit.db)")
    parser.add_argument("--out", type=Path, help="file to write (default: stdout)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pneumocxr.store import open_store
    from pneumocxr.store.audit import AuditLog, parse_since

    log = AuditLog(open_store(args.db))
    since = parse_since(args.since)
    if args.out is None:
        count = log.export(sys.stdout, since=since, fmt=args.format)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w", newline="", encoding="utf-8") as fh:
            count = log.export(fh, since=since, fmt=args.format)
    print(f"{count} audit rows" + (f" → {args.out}" if args.out else ""), file=sys.stderr)
    return 0
