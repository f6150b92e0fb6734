"""What a sweep's members achieved: outcomes per member, the objective, parameter importance, the best.

Outcomes come from each member's run folder (read as core.store.runs reads it: safe-open, capped):
metrics.json's final_loss, best_eval_loss, train_runtime_s and peak_memory_gb, and the answers of
its adapter evaluation that passed their checks (eval/adapter.jsonl, counted as every view counts
them: core.evaluate.answers.pass_count).

Importance is Optuna's: each outcome's values become the trials of an in-memory study over the
sweep's parameters (a grid's axes as categorical distributions, a search's own distributions),
and optuna.importance.get_param_importances evaluates it with PED-ANOVA (Optuna's default
evaluator, which needs no scikit-learn). PED-ANOVA compares the parameter values of the best
trials with all of them; its default top 10% is less than one member in a small sweep, so the
top quantile here holds at least three members (between 10% and 50%).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.evaluate.answers import pass_count
from core.store.files import finite_number, read_jsonl
from core.store.runs import EVAL_DIR, Run
from core.sweeps.definition import OBJECTIVES, Sweep, parse_search

OUTCOMES = {
    "final_loss": "Final loss",
    "best_eval_loss": "Best eval loss",
    "train_runtime_s": "Runtime (s)",
    "peak_memory_gb": "Peak memory (GB)",
    "checks_passed": "Checks passed",
}
MAXIMIZED = ("checks_passed",)
OBJECTIVE_OUTCOMES = {
    "final_loss": "final_loss",
    "eval_loss": "best_eval_loss",
    "checks_passed": "checks_passed",
}
ADAPTER_RESULTS = "adapter.jsonl"


def checks_passed(run: Run) -> float | None:
    """How many answers of the run's adapter evaluation passed their checks; None without one."""
    try:
        rows, _ = read_jsonl(run.path / EVAL_DIR / ADAPTER_RESULTS)
    except OSError:
        return None
    return float(pass_count(rows)[0]) if rows else None


def outcomes(run: Run) -> dict[str, float | None]:
    """The run's value of every OUTCOMES key (None where it has none)."""
    values: dict[str, float | None] = {key: finite_number(run.metrics.get(key)) for key in OUTCOMES}
    values["checks_passed"] = checks_passed(run)
    return values


def objective_value(run: Run, objective: str) -> tuple[float | None, str]:
    """The run's value of the sweep objective, or None and why it has none."""
    if run.state != "completed":
        error = run.status.get("error") or "; ".join(run.problems)
        return None, f"the run is {run.state}" + (f": {error}" if error else "")
    key = OBJECTIVE_OUTCOMES[objective]
    value = outcomes(run)[key]
    if value is None:
        why = {
            "best_eval_loss": "metrics.json has no best_eval_loss: the run had no validation share",
            "checks_passed": "the run's adapter has no evaluation (eval/adapter.jsonl)",
        }.get(key, f"metrics.json has no {key}")
        return None, why
    return value, ""


@dataclass(frozen=True)
class MemberRow:
    """One member as the sweep view shows it."""

    run: str
    state: str
    values: dict[str, Any]
    outcomes: dict[str, float | None]
    config: dict[str, Any]
    error: str | None


def member_rows(sweep: Sweep, runs: Mapping[str, Run]) -> list[MemberRow]:
    """The sweep's members in order, with their state and outcomes (a member whose run folder is
    gone is shown `missing`)."""
    rows = []
    for member in sweep.members:
        run = runs.get(member["run"])
        if run is None:
            rows.append(
                MemberRow(member["run"], "missing", member["values"], dict.fromkeys(OUTCOMES), {}, None)
            )
            continue
        error = run.status.get("error") or ("; ".join(run.problems) or None)
        rows.append(MemberRow(run.name, run.state, member["values"], outcomes(run), run.config, error))
    return rows


def distributions(sweep: Sweep) -> dict[str, Any]:
    """The Optuna distribution of each varied field: a grid's values as categories, a search's own."""
    from optuna.distributions import CategoricalDistribution

    if sweep.kind == "grid":
        return {key: CategoricalDistribution(values) for key, values in sweep.axes.items()}
    params = parse_search([f"{key}={text}" for key, text in sweep.search.items()], sweep.base)
    return {key: param.distribution() for key, param in params.items()}


def target_quantile(count: int) -> float:
    """PED-ANOVA's top quantile for `count` members: at least three of them, between 10% and 50%."""
    return min(0.5, max(0.1, 3 / max(count, 1)))


def importance(sweep: Sweep, rows: Sequence[MemberRow], outcome: str) -> dict[str, float] | str:
    """Each varied field's importance (summing to 1) for `outcome`, by Optuna's PED-ANOVA evaluator;
    or why there is none (fewer than three members with a value, a single parameter value)."""
    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    spaces = distributions(sweep)
    measured = [
        (row, value)
        for row in rows
        if (value := row.outcomes.get(outcome)) is not None and all(key in row.values for key in spaces)
    ]
    if len(measured) < 3:
        return f"{len(measured)} member(s) have a {OUTCOMES[outcome].lower()}: importance needs three or more"
    if len({value for _, value in measured}) == 1:
        return f"every member has the same {OUTCOMES[outcome].lower()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if outcome in MAXIMIZED else "minimize")
    for row, value in measured:
        params = {key: row.values[key] for key in spaces}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=spaces, value=value))
    try:
        found = get_param_importances(
            study, evaluator=PedAnovaImportanceEvaluator(target_quantile=target_quantile(len(measured)))
        )
    except (ValueError, RuntimeError) as exc:
        return f"Optuna could not evaluate it: {exc}"
    if not found or not math.isfinite(sum(found.values())):
        return "Optuna found no parameter that matters"
    return {key: found.get(key, 0.0) for key in spaces}


def best_member(sweep: Sweep, rows: Sequence[MemberRow]) -> MemberRow | None:
    """The completed member with the best value of the sweep's objective, or None."""
    key = OBJECTIVE_OUTCOMES[sweep.objective]
    scored = [row for row in rows if row.state == "completed" and row.outcomes.get(key) is not None]
    if not scored:
        return None
    sign = -1 if OBJECTIVES[sweep.objective] == "maximize" else 1
    return min(scored, key=lambda row: sign * row.outcomes[key])


def config_changes(base: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The fields whose value in `config` differs from `base`: field -> (base's, config's)."""
    return {key: (base.get(key), value) for key, value in config.items() if base.get(key) != value}
