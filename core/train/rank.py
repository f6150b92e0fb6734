"""One process of a multi-process training run: what `accelerate launch` starts for each rank
from the run's training job (core.train.distributed.train_processes). Not a command for people:
`python -m core train NAME` with num_processes > 1 starts it.

Every rank trains (core.train.training.train_process); rank 0 alone writes the run folder, logs
the `core` lines and writes how it ended to the job's outcome file. A SIGTERM or SIGINT only
sets the rank's stop flag: the ranks agree on the step to stop after (see RunRecorder).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from core.jobs.protocol import JobControl, JobStopped
from core.store.runs import read_run_folder, update_status
from core.train.config import parse_config
from core.train.distributed import COMPLETED, STOPPED, die_with_parent


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.train.rank", description=__doc__)
    parser.add_argument("run_path", type=Path)
    parser.add_argument("--runtime-before", type=float, required=True, help="training seconds spent before")
    parser.add_argument("--outcome", type=Path, required=True, help="where rank 0 writes how training ended")
    parser.add_argument("--checkpoint", type=Path, help="the checkpoint to resume from")
    parser.add_argument("--resume", action="store_true", help="the job resumes the run")
    return parser


def _log_core(main: bool) -> None:
    """The `core` loggers' lines on stderr (the job's train.log), as the job writes them; the
    other ranks' only from warnings up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    core = logging.getLogger("core")
    core.addHandler(handler)
    core.setLevel(logging.INFO if main else logging.WARNING)
    core.propagate = False


def main(argv: list[str] | None = None) -> int:
    """Train this rank's share of the run; 0 when it completed or stopped on request."""
    die_with_parent()
    args = _parser().parse_args(argv)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    _log_core(main_rank)
    run_path = args.run_path

    def report(text: str, fraction: float | None) -> None:
        update_status(run_path, stage=text, fraction=fraction)

    job = JobControl(report if main_rank else None)

    def stop(signum: int, frame: Any) -> None:
        job.request_stop(signal.Signals(signum).name)  # only a flag: the ranks stop together

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)

    from core.train.training import plan_here, train_process

    config = parse_config(read_run_folder(run_path).config, check_files=False)
    facts, plan = plan_here(config)
    try:
        train_process(run_path, config, facts, plan, args.checkpoint, args.resume, args.runtime_before, job)
        outcome = COMPLETED
    except JobStopped:
        outcome = STOPPED
    if main_rank:
        args.outcome.write_text(outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
