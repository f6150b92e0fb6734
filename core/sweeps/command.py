"""`python -m core sweep ...` and `python -m core queue ...`: define a sweep, see and run the queue.

`add_sweep_commands(commands)` adds both subcommands to core.cli's parser; each sets its handler.
A sweep that cannot be created exits 1 with the reason (SweepError is a ValueError, which
core.cli.main reports in one line) and creates nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from typing import Any

from core.jobs.queue import (
    cancel_rest,
    enqueue,
    ensure_runner,
    read_queue,
    run_queue,
    runner_running,
    search_item,
)
from core.machine.devices import detect_device
from core.store.paths import runs_root
from core.sweeps.definition import (
    OBJECTIVE_HELP,
    OBJECTIVES,
    Member,
    SweepError,
    check_members,
    check_new_sweep,
    create_grid,
    estimate,
    grid_members,
    machine_check,
    new_sweep,
    parse_grid,
    parse_search,
    read_sweep,
    recover_sweeps,
    retry_sweep,
    search_corners,
    write_sweep,
)
from core.train.config import ConfigError, apply_overrides, format_setting
from core.train.presets import DATA_ROWS, SWEEP_PRESETS, BaseConfigError, base_config


def _base(args: argparse.Namespace) -> tuple[dict[str, Any], str | None]:
    """The base config document (preset or file, with --set) and the preset's name."""
    try:
        base = base_config(args.preset, args.config)
    except BaseConfigError as exc:
        raise SweepError(str(exc)) from None
    try:
        return apply_overrides(base, args.set), args.preset
    except ConfigError as exc:
        raise SweepError(f"--set: {exc}") from None


def _sweep(args: argparse.Namespace) -> int:
    root = runs_root(args.runs_dir)
    if args.sweep_preset:
        if args.grid or args.search or args.preset or args.config:
            raise SweepError(
                "--sweep-preset brings its base and its grid: leave out --preset, --config, --grid, --search"
            )
        chosen = SWEEP_PRESETS.get(args.sweep_preset)
        if chosen is None:
            raise SweepError(
                f"no sweep preset named {args.sweep_preset!r}; sweep presets: {', '.join(SWEEP_PRESETS)}"
            )
        args.preset = chosen.preset
        args.grid = [f"{key}={','.join(map(format_setting, values))}" for key, values in chosen.grid.items()]
    if not (args.preset or args.config):
        raise SweepError("a sweep needs a base: --preset P, --config FILE or --sweep-preset S")
    base, preset = _base(args)
    recover_sweeps(root)
    check_new_sweep(root, args.name, args.objective, base)
    check = machine_check(detect_device)
    axes = parse_grid(args.grid, base)
    params = parse_search(args.search, base)
    sweep = new_sweep(
        args.name,
        base,
        preset=preset,
        axes=axes,
        search=params,
        trials=args.trials,
        objective=args.objective,
    )
    if sweep.kind == "grid":
        members = check_members(root, grid_members(args.name, base, axes), check)
        sweep = replace(sweep, members=[{"run": m.name, "values": m.values} for m in members])
    else:
        check_members(root, search_corners(args.name, base, params), check)
        members = []
    cost = estimate(members)
    if args.dry_run:
        print(json.dumps({**sweep.to_dict(), "estimate": cost.__dict__}, indent=2))
        return 0
    if members:
        create_grid(root, sweep, members)
    else:
        write_sweep(root, sweep)
        enqueue(root, [search_item(sweep.name)])
    _print_created(sweep.name, members, sweep.trials, cost)
    if not args.no_start:
        started = ensure_runner(root)
        print("the queue's runner " + ("started" if started else "is running: the sweep waits its turn"))
    return 0


def _print_created(name: str, members: list[Member], trials: int, cost: Any) -> None:
    if members:
        for member in members:
            print(member.name)
        time = f", about {cost.total_s / 3600:.1f} h on a T4" if cost.total_s is not None else ""
        memory = f", peak ≈ {cost.peak_gb:.1f} GB" if cost.peak_gb is not None else ""
        print(f"sweep {name}: {len(members)} run(s) queued{time}{memory}", file=sys.stderr)
    else:
        print(
            f"search {name}: {trials} trial(s) queued (one run each, created as the search goes)",
            file=sys.stderr,
        )


def _queue(args: argparse.Namespace) -> int:
    root = runs_root(args.runs_dir)
    recover_sweeps(root)
    action = args.queue_command or "list"
    if action == "run":
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
        done = run_queue(root)
        if done < 0:
            print("another runner works on this queue", file=sys.stderr)
        return 0
    if action == "start":
        print("started the runner" if ensure_runner(root) else "nothing to start: the queue is empty or runs")
        return 0
    if action == "cancel":
        removed = cancel_rest(root, args.sweep)
        print(f"removed {len(removed)} item(s): {', '.join(removed) or '-'}")
        return 0
    if action == "retry":
        sweep = read_sweep(root, args.sweep)
        queued = retry_sweep(root, sweep)
        if queued and not args.no_start:
            ensure_runner(root)
        print(f"queued again: {', '.join(queued) or 'nothing (no failed or stopped member)'}")
        return 0
    items = read_queue(root)
    print(f"runner: {'running' if runner_running(root) else 'not running'}; {len(items)} item(s)")
    for index, item in enumerate(items, 1):
        print(f"{index:>4}  {item.label}" + (f"  [sweep {item.sweep}]" if item.sweep else ""))
    return 0


def add_sweep_commands(commands: Any) -> None:
    """Add `sweep` and `queue` to the command line's subcommands."""
    sweep = commands.add_parser(
        "sweep",
        help="queue a grid or an Optuna search of runs as one sweep",
        description="Create a sweep: one queued run per combination of --grid values (named "
        "NAME-<field><value>-...), or an Optuna search of --trials runs (NAME-t<number>) over --search "
        f"ranges, and start the queue's runner. {DATA_ROWS}=N trains on the first N rows of the base's "
        "split. A sweep with a refused member creates nothing and names the member. Objectives: "
        + "; ".join(f"{key}: {text}" for key, text in OBJECTIVE_HELP.items())
        + ". Record: <runs>/.sweeps/NAME.json; a search's study: <runs>/.sweeps/NAME.db.",
    )
    sweep.add_argument(
        "name", help="sweep name: 1-64 letters, digits, '.', '_' or '-' (its runs are named from it)"
    )
    source = sweep.add_mutually_exclusive_group()
    source.add_argument("--preset", help="the base: a preset (see: python -m core presets)")
    source.add_argument("--config", help="the base: a JSON file of config fields")
    source.add_argument("--sweep-preset", help=f"a ready sweep: {', '.join(SWEEP_PRESETS)}")
    sweep.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="change the base (repeatable)"
    )
    sweep.add_argument(
        "--grid", action="append", default=[], metavar="FIELD=V1,V2", help="a grid axis (repeatable)"
    )
    sweep.add_argument(
        "--search",
        action="append",
        default=[],
        metavar="FIELD=SPEC",
        help="a searched field: int:LOW:HIGH[:log], float:LOW:HIGH[:log] or cat:A,B (repeatable)",
    )
    sweep.add_argument("--trials", type=int, default=12, help="a search's completed trials (default 12)")
    sweep.add_argument(
        "--objective", choices=tuple(OBJECTIVES), default="final_loss", help="what the best member has best"
    )
    sweep.add_argument("--dry-run", action="store_true", help="check and print the sweep, create nothing")
    sweep.add_argument("--no-start", action="store_true", help="queue the runs without starting the runner")
    sweep.set_defaults(handler=_sweep)

    queue = commands.add_parser(
        "queue",
        help="list the queue, run it, cancel the rest, retry a sweep's failed runs",
        description="The queue of runs and searches started one after another by one runner process.",
    )
    actions = queue.add_subparsers(dest="queue_command", metavar="ACTION")
    actions.add_parser("list", help="the queue's items in order (the default)")
    actions.add_parser("run", help="be the runner: work on the queue until it is empty (foreground)")
    actions.add_parser("start", help="start the runner in the background when the queue has items")
    cancel = actions.add_parser("cancel", help="remove every item that has not started")
    cancel.add_argument("--sweep", help="only this sweep's items")
    retry = actions.add_parser("retry", help="queue a sweep's failed and stopped runs again (resumed)")
    retry.add_argument("sweep", help="sweep name")
    retry.add_argument("--no-start", action="store_true", help="do not start the runner")
    queue.set_defaults(handler=_queue)
