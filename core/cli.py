"""The command line: `python -m core <command> ...`.

Every command exits 0 on success and non-zero with a one-line reason on stderr otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from core.experiments_log import LogFormatError, export_log, import_log
from core.files import write_text_atomic
from core.paths import runs_root
from core.runs import RUN_TABLE_COLUMNS, list_runs, run_summary
from core.seed import prepare_runs_root


class CommandError(Exception):
    """A failure to report as one line on stderr with a non-zero exit."""


def _format_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_table(rows: list[dict[str, Any]], columns: dict[str, str]) -> str:
    """A plain-text table of `rows` with the headers of `columns`."""
    cells = [[_format_cell(row[key]) for key in columns] for row in rows]
    widths = [max([len(header)] + [len(r[i]) for r in cells]) for i, header in enumerate(columns.values())]
    lines = ["  ".join(h.ljust(w) for h, w in zip(columns.values(), widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def _runs_list(args: argparse.Namespace) -> int:
    root = runs_root(args.runs_dir)
    prepare_runs_root(root)
    summaries = [run_summary(run) for run in list_runs(root)]
    if args.json:
        print(json.dumps(summaries, indent=2))
    elif not summaries:
        print(f"No runs in {root}.")
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
    prepare_runs_root(root)
    try:
        report = import_log(root, text, source=path.name)
    except LogFormatError as exc:
        raise CommandError(str(exc)) from None
    for name in report.existing:
        print(f"exists, left unchanged: {name}")
    for problem in report.problems:
        print(f"skipped {problem}", file=sys.stderr)
    print(f"{path.name}: {report.summary()} into {root}")
    return 1 if report.problems else 0


def _runs_export(args: argparse.Namespace) -> int:
    root = runs_root(args.runs_dir)
    prepare_runs_root(root)
    text, left_out = export_log(list_runs(root))
    if args.file == "-":
        sys.stdout.write(text)
    else:
        try:
            write_text_atomic(Path(args.file), text)
        except OSError as exc:
            raise CommandError(f"cannot write {args.file}: {exc}") from None
        print(f"wrote {text.count(chr(10)) - 1} run(s) to {args.file}", file=sys.stderr)
    if left_out:
        print(f"left out {len(left_out)} run(s) that are not completed: {', '.join(left_out)}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="python -m core", description="PEFT dashboard command line.")
    parser.add_argument("--runs-dir", help="runs root (default: $PEFT_RUNS_DIR, else ./runs)")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit status."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
