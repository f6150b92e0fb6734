"""Sweeps: a grid or an Optuna search of run configs, queued as runs and compared as one experiment.

- definition: axes (`--grid`, `--search`), the members of a grid and their names, the checks that
  refuse a sweep before anything is created, and the sweep record `<runs>/.sweeps/NAME.json`;
- search: the Optuna study of a search (SQLite in `<runs>/.sweeps/`), one trial per queued run
  through ask/tell, resumed after a restart;
- outcomes: what each member achieved, parameter importance (Optuna's evaluators) and the best
  member;
- command: the `sweep` and `queue` subcommands of `python -m core`.

The queue itself (one runner starting queued runs one after another) is core.jobs.queue.
"""
