"""`python -m core runs import-trainer|import-tensorboard|export-tensorboard`: runs in from a
Trainer output folder or TensorBoard logs, and out as TensorBoard event files.

`add_interop_commands(runs_commands)` adds them to core.cli's `runs` group; each sets its handler.
A refused import exits 1 with the file and the reason (InteropError is a ValueError, which
core.cli.main reports in one line) and creates nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from core.interop.archive import MAX_UNPACKED_BYTES
from core.interop.imports import import_folder, import_zip
from core.interop.runs import ImportReport, InteropError
from core.interop.tensorboard import export_tensorboard
from core.store.paths import runs_root
from core.store.runs import list_runs, load_run


def _import(args: argparse.Namespace, kind: str) -> int:
    path = Path(args.path)
    root = runs_root(args.runs_dir)
    base_model = getattr(args, "base_model", None)
    if path.suffix.lower() == ".zip" and path.is_file():
        if path.stat().st_size > MAX_UNPACKED_BYTES:
            raise InteropError(
                f"{path.name} is larger than {MAX_UNPACKED_BYTES:,} bytes: unzip it and import the folder"
            )
        report = import_zip(
            root, path.read_bytes(), upload_name=path.name, name=args.name, kind=kind, base_model=base_model
        )
    else:
        report = import_folder(root, path, name=args.name, source=str(path), kind=kind, base_model=base_model)
    return _print_report(report, path.name, root)


def _print_report(report: ImportReport, source: str, root: Path) -> int:
    for name in report.existing:
        print(f"not imported: a run named {name} already exists (pick another with --name)", file=sys.stderr)
    for problem in report.problems:
        print(f"left out: {problem}", file=sys.stderr)
    print(f"{source}: {report.summary()} into {root}")
    return 0 if report.created and not report.existing else 1


def _export(args: argparse.Namespace) -> int:
    root = runs_root(args.runs_dir)
    runs = [load_run(root, name) for name in args.run] if args.run else list_runs(root)
    written, left_out = export_tensorboard(runs, Path(args.folder))
    for reason in left_out:
        print(f"left out: {reason}", file=sys.stderr)
    print(f"wrote {len(written)} run(s) to {args.folder}: tensorboard --logdir {args.folder}")
    return 0 if written else 1


def add_interop_commands(runs_commands: Any) -> None:
    """Add import-trainer, import-tensorboard and export-tensorboard to the `runs` subcommands."""
    trainer = runs_commands.add_parser(
        "import-trainer",
        help="import a transformers Trainer output folder (trainer_state.json, the adapter) as a run",
        description="Import a Trainer output folder (outputs/ with checkpoint-N/ folders, or one checkpoint; a "
        ".zip of one) as a completed run: the per-step loss, learning rate, grad norm and epoch and the eval "
        "loss of the newest trainer_state.json, the LoRA settings of adapter_config.json and the adapter "
        "itself (safetensors), so the run can be evaluated and exported. Pickles (training_args.bin, "
        "optimizer.pt, adapter_model.bin) are never loaded. Exit status 1 when nothing was imported.",
    )
    trainer.add_argument("path", help="the Trainer output folder, or a .zip of it")
    trainer.add_argument("--name", help="the run's name (default: the folder's name)")
    trainer.add_argument(
        "--base-model",
        help="the base model the adapter was trained on, when adapter_config.json names a path of another machine",
    )
    trainer.set_defaults(handler=lambda args: _import(args, "trainer"))
    tensorboard = runs_commands.add_parser(
        "import-tensorboard",
        help="import TensorBoard event files (a runs/ or logs/ folder) as runs, one per folder of event files",
        description="Import every folder holding TensorBoard event files under PATH (or in a .zip) as a completed "
        "run: train/loss, train/learning_rate, train/grad_norm, train/epoch and eval/loss per step, and the "
        "hparams where logged. Exit status 1 when nothing was imported or a run's name is taken.",
    )
    tensorboard.add_argument("path", help="a folder of event files (searched below), or a .zip of one")
    tensorboard.add_argument(
        "--name",
        help="the run's name; with several folders, the prefix of theirs (default: the folder's names)",
    )
    tensorboard.set_defaults(handler=lambda args: _import(args, "tensorboard"))
    export = runs_commands.add_parser(
        "export-tensorboard",
        help="write runs as TensorBoard event files with their hparams (tensorboard --logdir FOLDER)",
        description="Write one folder of TensorBoard event files per run (its loss, learning rate, grad norm, "
        "epoch and eval loss per step, its config as hparams, its final loss and runtime) and the experiment's "
        "summary, for TensorBoard's scalars and HParams views. FOLDER is replaced whole if an earlier export "
        "made it; a folder holding anything else is refused.",
    )
    export.add_argument("folder", help="the folder to write (new, empty, or an earlier export)")
    export.add_argument("run", nargs="*", help="the runs to write (default: all)")
    export.set_defaults(handler=_export)
