"""The command line: `python -m core <command> ...`.

Every command exits 0 on success and non-zero with a one-line reason on stderr otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from core.experiments_log import ImportReport, LogFormatError, export_log, import_log
from core.files import write_text_atomic
from core.paths import runs_root
from core.runs import RUN_TABLE_COLUMNS, list_runs, run_summary
from core.seed import import_seed_runs


class CommandError(Exception):
    """A failure to report as one line on stderr with a non-zero exit."""


def _format_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return " ".join(str(value).split())


def format_table(rows: list[dict[str, Any]], columns: dict[str, str]) -> str:
    """A plain-text table of `rows` with the headers of `columns`."""
    cells = [[_format_cell(row[key]) for key in columns] for row in rows]
    widths = [max([len(header)] + [len(r[i]) for r in cells]) for i, header in enumerate(columns.values())]
    lines = ["  ".join(h.ljust(w) for h, w in zip(columns.values(), widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def _print_report(report: ImportReport, source: str, root: Path) -> int:
    for name in report.existing:
        print(f"exists, left unchanged: {name}")
    for problem in report.problems:
        print(f"skipped {problem}", file=sys.stderr)
    print(f"{source}: {report.summary()} into {root}")
    return 1 if report.problems else 0


def _runs_list(args: argparse.Namespace) -> int:
    root = runs_root(args.runs_dir)
    summaries = [run_summary(run) for run in list_runs(root)]
    if args.json:
        print(json.dumps(summaries, indent=2))
    elif not summaries:
        print(
            f"No runs in {root}. The dashboard adds the lab's recorded runs when it first opens "
            "a runs folder; `python -m core runs seed` adds them now."
        )
    else:
        print(format_table(summaries, RUN_TABLE_COLUMNS))
    return 0


def _runs_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {path}: {exc}") from None
    root = runs_root(args.runs_dir)
    try:
        report = import_log(root, text, source=path.name)
    except LogFormatError as exc:
        raise CommandError(f"{path.name}: {exc}") from None
    return _print_report(report, path.name, root)


def _runs_seed(args: argparse.Namespace) -> int:
    root = runs_root(args.runs_dir)
    return _print_report(import_seed_runs(root), "the lab's recorded runs", root)


def _runs_export(args: argparse.Namespace) -> int:
    root = runs_root(args.runs_dir)
    if not root.is_dir():
        raise CommandError(f"no runs folder at {root}")
    export = export_log(list_runs(root))
    if args.file == "-":
        sys.stdout.write(export.text)
    else:
        write_text_atomic(Path(args.file), export.text)
        print(f"wrote {len(export.exported)} run(s) to {args.file}", file=sys.stderr)
    if export.left_out:
        print(
            f"left out {len(export.left_out)} run(s) that are unfinished or broken: {', '.join(export.left_out)}",
            file=sys.stderr,
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="python -m core", description="PEFT dashboard command line.")
    parser.add_argument("--runs-dir", help="runs folder (default: $PEFT_RUNS_DIR, else ./runs)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    runs = commands.add_parser("runs", help="list, import and export runs")
    runs_commands = runs.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    listing = runs_commands.add_parser("list", help="print the runs table")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(handler=_runs_list)
    importing = runs_commands.add_parser("import", help="import an experiments_log.csv as metrics-only runs")
    importing.add_argument("file", help="a CSV in the lab's experiments_log schema")
    importing.set_defaults(handler=_runs_import)
    exporting = runs_commands.add_parser("export", help="write all completed runs as an experiments_log.csv")
    exporting.add_argument("file", help="output CSV path, or - for standard output")
    exporting.set_defaults(handler=_runs_export)
    seeding = runs_commands.add_parser("seed", help="add the lab's recorded runs (T1-T4, Experiment 3)")
    seeding.set_defaults(handler=_runs_seed)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit status."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (CommandError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
