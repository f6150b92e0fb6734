"""A search: an Optuna study whose trials are queued runs, resumed after a restart.

The study lives in the runs root, `<runs>/.sweeps/NAME.db` (Optuna's RDB storage on SQLite), so a
runner that starts after a restart loads it and goes on; a study whose direction is not the
record's is refused (a new search never takes a name whose study exists: check_new_sweep). Looks
count its trials with sqlite3 opened read-only, never through Optuna (which would write its
schema into whatever file is there). Each trial goes through ask and tell:
`study.ask()` with the search's distributions, a run `NAME-t<number>` created with the base
config and the trial's values (checked first: a refused config, or a name taken meanwhile, is a
failed trial, its reason kept as the trial's `error` attribute; the trial's `run` attribute is
set only once its run was created), the run trained through the job lifecycle
(core.jobs.queue.run_member), then `study.tell()` with the objective (core.sweeps.outcomes) or
as failed. The trial's run is its `run` attribute.

A trial left `RUNNING` in the study by a runner that died is finished by the next runner: its
run is waited for when it still trains, resumed once from its last checkpoint when it failed or
stopped without having been resumed (the machine went down under it), and told. The search is
done when it has `trials` completed trials, or as many failed ones since it was last retried
(the record's `retried_failures`: a config that always fails would otherwise go on for ever). The sampler is TPE, seeded by the base config's seed and the
number of trials so far (a restart does not repeat the same proposals); its first random trials
are half the search, at most 10. Pruning is not used: a trial is a whole run.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from core.jobs.lifecycle import job_view
from core.jobs.queue import POLL_S, run_member
from core.store.runs import read_run_folder
from core.sweeps.definition import (
    Member,
    Sweep,
    SweepError,
    check_members,
    create_member_run,
    member_config,
    read_sweep,
    study_path,
    sweeps_dir,
    write_sweep,
)
from core.sweeps.outcomes import distributions, objective_value

log = logging.getLogger(__name__)
MAX_STUDY_BYTES = 256 << 20  # a study of 1,000 trials takes about 1 MB


def storage_url(root: Path, name: str) -> str:
    """The SQLite URL of the search's study."""
    return f"sqlite:///{study_path(root, name).resolve()}"


def open_study(root: Path, sweep: Sweep) -> Any:
    """The search's study, created on first use, loaded after; SweepError when the study there
    optimises the other direction (not this search's)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweeps_dir(root).mkdir(parents=True, exist_ok=True)
    url = storage_url(root, sweep.name)
    existing = optuna.create_study(
        storage=url, study_name=sweep.name, direction=sweep.direction, load_if_exists=True
    )
    if existing.direction.name.lower() != sweep.direction:
        raise SweepError(
            f"the study {study_path(root, sweep.name).name} is to {existing.direction.name.lower()}, "
            f"the search {sweep.name} to {sweep.direction}: it is not this search's study"
        )
    seed = int(sweep.base.get("seed") or 0) + len(existing.get_trials(deepcopy=False))
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, min(10, sweep.trials // 2)))
    return optuna.load_study(study_name=sweep.name, storage=url, sampler=sampler)


def study_counts(root: Path, name: str) -> dict[str, int]:
    """The search's trials by state as its study records them ({} before its first trial, or
    for a file that is no study of this name): read with sqlite3 opened read-only, never written
    (a regular file, no link, at most MAX_STUDY_BYTES)."""
    path = study_path(root, name)
    try:
        facts = os.lstat(path)
    except OSError:
        return {}
    if not stat.S_ISREG(facts.st_mode) or facts.st_size > MAX_STUDY_BYTES:
        return {}
    query = (
        "SELECT trials.state, COUNT(*) FROM trials JOIN studies ON trials.study_id = studies.study_id "
        "WHERE studies.study_name = ? GROUP BY trials.state"
    )
    try:
        with closing(sqlite3.connect(f"file:{quote(str(path.absolute()))}?mode=ro", uri=True)) as db:
            rows = db.execute(query, (name,)).fetchall()
    except sqlite3.Error:
        return {}
    return {str(state): int(count) for state, count in rows if isinstance(state, str)}


def trial_counts(study: Any) -> dict[str, int]:
    """The study's trials by state name (COMPLETE, FAIL, RUNNING, ...)."""
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def _with_member(root: Path, sweep: Sweep, member: dict[str, Any]) -> Sweep:
    """The sweep with `member` in its record (written when it was not)."""
    if member["run"] in sweep.run_names:
        return sweep
    sweep = replace(sweep, members=[*sweep.members, member])
    write_sweep(root, sweep)
    return sweep


def _finish_trial(root: Path, sweep: Sweep, study: Any, number: int, run: str, poll_s: float) -> None:
    """Train (or wait for, or resume once) the trial's run and tell the study its objective."""
    from optuna.trial import TrialState

    path = root / run
    job_view(path, "train")  # records a training job found dead (the machine went down under it)
    status = read_run_folder(path)
    resume = status.state in ("failed", "stopped") and not status.status.get("resumes")
    state = run_member(path, resume=resume, evaluate=sweep.evaluates, poll_s=poll_s)
    value, why = objective_value(read_run_folder(path), sweep.objective)
    if value is None:
        log.info("trial %d (%s) failed: %s", number, run, why)
        study.tell(number, state=TrialState.FAIL)
    else:
        log.info("trial %d (%s): %s %s = %g", number, run, state, sweep.objective, value)
        study.tell(number, value)


def advance_search(root: Path, name: str, *, poll_s: float = POLL_S) -> bool:
    """Run the search's next trial (or finish one a dead runner left); True when the search is done."""
    from optuna.trial import TrialState

    sweep = read_sweep(root, name)
    if sweep.kind != "search":
        raise SweepError(f"sweep {name} is a grid, not a search")
    study = open_study(root, sweep)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        run = trial.user_attrs.get("run")
        if not isinstance(run, str) or not (root / run).is_dir():
            log.info("trial %d had no run yet when its runner stopped: failed", trial.number)
            study.tell(trial.number, state=TrialState.FAIL)
            continue
        sweep = _with_member(root, sweep, {"run": run, "values": dict(trial.params)})
        _finish_trial(root, sweep, study, trial.number, run, poll_s)
        return False
    counts = trial_counts(study)
    if counts.get("COMPLETE", 0) >= sweep.trials:
        return True
    failed = counts.get("FAIL", 0) - sweep.retried_failures
    if failed >= sweep.trials:
        log.warning("search %s: %d trials failed, as many as were asked for: stopped", name, failed)
        return True
    trial = study.ask(distributions(sweep))
    values = {key: trial.params[key] for key in sweep.search}
    member = Member(f"{name}-t{trial.number}", values, member_config(sweep.base, values))
    try:
        [member] = check_members(root, [member])
        create_member_run(root, member)  # its name may have been taken since the check
    except SweepError as exc:
        trial.set_user_attr("error", str(exc))
        study.tell(trial, state=TrialState.FAIL)
        return False
    trial.set_user_attr("run", member.name)
    sweep = _with_member(root, sweep, {"run": member.name, "values": values})
    _finish_trial(root, sweep, study, trial.number, member.name, poll_s)
    return False
