"""A sweep's definition: its base config, its axes, its members and their names, its record.

A grid (`--grid lora_r=8,16,64 --grid dataset_rows=10000,30000`) has one member per combination
of the axes' values, named from the sweep and the varied values (`NAME-r8-rows10000`); a search
(`--search lora_r=int:4:64:log`) has one member per Optuna trial (`NAME-t0`, `NAME-t1`, ...,
core.sweeps.search). `dataset_rows` is an axis that is no config field: N rows are the split
`NAME[:N]` of the base config's split (its first N rows; a slice the base split had is replaced).

Every member is checked before anything is created: its config as parse_config checks it, its
name as a run name not yet taken, and whatever the caller checks for this machine (the plan, a
local dataset). A sweep with a problem is refused with every offending member named; nothing is
written. The record `<runs>/.sweeps/NAME.json` keeps the base, the axes, the members (run name
and varied values) and when it was created; it is read through the safe-open helpers and anything
but a sweep's fields with scalar values is "not a sweep record".

Creating a grid is recoverable: its record is written first, marked `creating` with its member
list, while the creator holds `.sweeps/NAME.lock`; then the members are created and queued (one
queue edit), then the mark is dropped. A creation cut short (the process killed) is settled by
the next look (recover_sweeps: the pages' keep_queue_going, the `sweep` and `queue` commands):
when the queue holds the sweep's items it is completed, else rolled back (the record and the
listed members still queued without a job are deleted), so its name can be used again.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.data.recipes import RecipeError, load_recipe, new_run_files
from core.store.files import FileProblem, delete_dir, open_regular, read_json_object, write_json_atomic
from core.store.runs import (
    RunExistsError,
    RunNameError,
    now_iso,
    taken_names,
    validate_run_name,
)
from core.train.config import (
    RECIPE_PATTERN,
    SPLIT_PATTERN,
    ConfigError,
    RunConfig,
    apply_overrides,
    field_specs,
    format_setting,
    parse_config,
    with_resolved_paths,
)
from core.train.new_runs import create_queued_run
from core.train.presets import DATA_ROWS, size_label

SWEEPS_DIR = ".sweeps"
MAX_MEMBERS = 1000
MAX_TRIALS = 1000
OBJECTIVES = {"final_loss": "minimize", "eval_loss": "minimize", "checks_passed": "maximize"}
OBJECTIVE_HELP = {
    "final_loss": "the loss of the last logged step (metrics.json final_loss)",
    "eval_loss": "the best validation loss (metrics.json best_eval_loss; needs a validation share)",
    "checks_passed": "answers of the lab's prompts that pass their checks (an evaluation follows training)",
}
NAME_LABELS = {
    "lora_r": "r",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "learning_rate": "lr",
    DATA_ROWS: "rows",
    "max_steps": "steps",
    "batch_size": "bs",
    "gradient_accumulation_steps": "accum",
    "max_seq_length": "len",
    "warmup_steps": "warmup",
    "weight_decay": "wd",
    "base_model": "",
    "dataset": "data",
}
SEARCH_KINDS = ("int", "float", "cat")
UNFIT_AXES = ("note", "target_modules")  # free text; a list whose commas would split the values
SWEEPABLE = [DATA_ROWS, *(name for name in field_specs() if name not in UNFIT_AXES)]


class SweepError(ValueError):
    """A sweep that cannot be defined or created; the message says why (and which members)."""


@dataclass(frozen=True)
class SearchParam:
    """One searched field: `int:LOW:HIGH[:log]`, `float:LOW:HIGH[:log]` or `cat:A,B,C`."""

    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def text(self) -> str:
        """The spec as --search takes it."""
        if self.kind == "cat":
            return "cat:" + ",".join(format_setting(choice) for choice in self.choices)
        return f"{self.kind}:{format_setting(self.low)}:{format_setting(self.high)}" + (
            ":log" if self.log else ""
        )

    def distribution(self) -> Any:
        """The Optuna distribution of this parameter."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "cat":
            return CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)


@dataclass(frozen=True)
class Member:
    """One run of a sweep: its name, the values of the varied fields, its checked config."""

    name: str
    values: dict[str, Any]
    config: dict[str, Any]


@dataclass(frozen=True)
class Sweep:
    """A sweep as its record keeps it."""

    name: str
    kind: str  # "grid" or "search"
    base: dict[str, Any]
    preset: str | None = None
    axes: dict[str, list[Any]] = field(default_factory=dict)  # a grid's values per field
    search: dict[str, str] = field(default_factory=dict)  # a search's spec per field (SearchParam.text)
    trials: int = 0
    objective: str = "final_loss"
    members: list[dict[str, Any]] = field(default_factory=list)  # {"run": NAME, "values": {...}}
    created: str = ""
    creating: bool = False  # its members are being created and queued (see create_grid)
    retried_failures: int = 0  # a search's failed trials before its last retry (not counted)

    @property
    def direction(self) -> str:
        """minimize or maximize, by the objective."""
        return OBJECTIVES[self.objective]

    @property
    def evaluates(self) -> bool:
        """Whether its members' adapters are evaluated after training (for checks_passed)."""
        return self.objective == "checks_passed"

    @property
    def fields(self) -> list[str]:
        """The varied fields, in the order they were given."""
        return list(self.axes or self.search)

    @property
    def run_names(self) -> list[str]:
        """The members' run names, in order."""
        return [str(member["run"]) for member in self.members]

    def to_dict(self) -> dict[str, Any]:
        """The record's JSON document."""
        return {
            "name": self.name,
            "kind": self.kind,
            "preset": self.preset,
            "base": self.base,
            "axes": self.axes,
            "search": self.search,
            "trials": self.trials,
            "objective": self.objective,
            "members": self.members,
            "created": self.created,
            "creating": self.creating,
            "retried_failures": self.retried_failures,
        }


def _typed(key: str, text: str, base: Mapping[str, Any]) -> Any:
    """The value `text` stands for in field `key` (a dataset_rows count is a whole number)."""
    if key == DATA_ROWS:
        try:
            rows = int(text.strip())
        except ValueError:
            raise SweepError(f"{DATA_ROWS}: {text!r} is not a whole number of rows") from None
        if rows < 1:
            raise SweepError(f"{DATA_ROWS}: {rows} rows is not a positive count")
        return rows
    if key in UNFIT_AXES:
        raise SweepError(f"{key} cannot be swept")
    try:
        return apply_overrides(base, [f"{key}={text}"])[key]
    except ConfigError as exc:
        raise SweepError(str(exc)) from None


def _assignment(text: str, option: str) -> tuple[str, str]:
    key, sep, values = text.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise SweepError(f"{option} {text!r} must look like FIELD=VALUES")
    return key.strip(), values


def parse_grid(assignments: Sequence[str], base: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The axes of `--grid FIELD=V1,V2,...` options, values typed by their field; SweepError for
    an unknown field, a value that does not parse, a field given twice or a value listed twice."""
    axes: dict[str, list[Any]] = {}
    for assignment in assignments:
        key, text = _assignment(assignment, "--grid")
        if key in axes:
            raise SweepError(f"--grid {key} is given twice: list all its values in one --grid")
        values = [_typed(key, part, base) for part in text.split(",") if part.strip()]
        repeated = [value for index, value in enumerate(values) if value in values[:index]]
        if repeated:
            raise SweepError(f"--grid {key} lists {format_setting(repeated[0])} twice")
        axes[key] = values
    return axes


def parse_search(assignments: Sequence[str], base: Mapping[str, Any]) -> dict[str, SearchParam]:
    """The searched fields of `--search FIELD=int:LOW:HIGH[:log]` (or float:..., cat:A,B,...)."""
    params: dict[str, SearchParam] = {}
    for assignment in assignments:
        key, text = _assignment(assignment, "--search")
        if key in params:
            raise SweepError(f"--search {key} is given twice")
        kind, _, rest = text.partition(":")
        if kind == "cat":
            choices = [_typed(key, part, base) for part in rest.split(",") if part.strip()]
            if len(choices) < 2 or len(set(map(format_setting, choices))) < len(choices):
                raise SweepError(f"--search {key}=cat:... needs two or more different values")
            params[key] = SearchParam("cat", choices=tuple(choices))
            continue
        parts = rest.split(":")
        if kind not in SEARCH_KINDS or len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
            raise SweepError(
                f"--search {assignment!r} must be FIELD=int:LOW:HIGH[:log], FIELD=float:LOW:HIGH[:log] "
                "or FIELD=cat:A,B,..."
            )
        try:
            low, high = (int(p) if kind == "int" else float(p) for p in parts[:2])
        except ValueError:
            raise SweepError(
                f"--search {key}: {parts[0]!r} and {parts[1]!r} must be {kind} numbers"
            ) from None
        log = len(parts) == 3
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise SweepError(f"--search {key}: LOW must be less than HIGH (got {low} and {high})")
        if log and low <= 0:
            raise SweepError(f"--search {key}: a log scale needs LOW above 0 (got {low})")
        for bound in (low, high):
            _typed(key, str(bound), base)  # the field takes numbers of this kind
        params[key] = SearchParam(kind, low, high, log)
    return params


def member_config(base: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The config document of a member: `base` with the varied values (dataset_rows as the split)."""
    config = dict(base)
    for key, value in values.items():
        if key == DATA_ROWS:
            found = SPLIT_PATTERN.fullmatch(str(base.get("split", "")))
            split = found.group("name") if found else "train"
            config["split"] = f"{split}[:{int(value)}]"
        else:
            config[key] = value
    return config


def _value_label(key: str, value: Any) -> str:
    if key == "base_model":
        text = size_label(str(value))
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = format_setting(value).rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def member_name(sweep: str, values: Mapping[str, Any]) -> str:
    """`SWEEP-r8-rows10000`: the sweep's name and each varied field's short label and value."""
    return "-".join([sweep, *(f"{NAME_LABELS.get(k, k)}{_value_label(k, v)}" for k, v in values.items())])


def _unique_names(members: Sequence[Member]) -> list[Member]:
    """The members, those whose names collide (models of one size label, floats alike to 6
    digits) with a short hash of their values after the name."""
    names = [member.name for member in members]
    return [
        member
        if names.count(member.name) == 1
        else replace(member, name=f"{member.name}-{_values_hash(member.values)}")
        for member in members
    ]


def _values_hash(values: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:6]


def grid_members(sweep: str, base: Mapping[str, Any], axes: Mapping[str, Sequence[Any]]) -> list[Member]:
    """One member per combination of the axes' values, in the order the axes were given (configs
    not yet checked: see check_members). SweepError for no axis, an empty one or too many members."""
    if not axes:
        raise SweepError("a grid needs at least one --grid FIELD=V1,V2,...")
    empty = [key for key, values in axes.items() if not values]
    if empty:
        raise SweepError(f"--grid {empty[0]} has no values")
    count = math.prod(len(values) for values in axes.values())
    if count > MAX_MEMBERS:
        raise SweepError(f"the grid has {count} members: at most {MAX_MEMBERS}")
    members = []
    for combination in itertools.product(*axes.values()):
        values = dict(zip(axes, combination))
        members.append(Member(member_name(sweep, values), values, member_config(base, values)))
    return _unique_names(members)


def _label(member: Member) -> str:
    varied = ", ".join(f"{key}={format_setting(value)}" for key, value in member.values.items())
    return f"{member.name} ({varied})" if varied else member.name


def check_members(
    root: Path,
    members: Sequence[Member],
    here: Callable[[RunConfig], str | None] | None = None,
) -> list[Member]:
    """The members with their configs checked and normalised (parse_config, local paths resolved);
    SweepError naming every member whose name is taken in `root` or invalid, whose config or data
    recipe (core.data.recipes.new_run_files) is refused, or that `here` (a check for this machine:
    the plan, a local dataset) refuses. Nothing is written."""
    problems, checked = [], []
    seen: set[str] = set()
    taken = taken_names(root)
    for member in members:
        try:
            validate_run_name(member.name)
        except RunNameError as exc:
            problems.append(f"{_label(member)}: {exc}")
            continue
        if member.name in taken or member.name in seen:
            problems.append(f"{_label(member)}: a run named {member.name} already exists")
            continue
        seen.add(member.name)
        if DATA_ROWS in member.values and member.config.get("recipe"):
            problems.append(f"{_label(member)}: the recipe picks the rows: vary recipe, not {DATA_ROWS}")
            continue
        try:
            config = with_resolved_paths(parse_config(member.config))
            new_run_files(config, root)
        except (ConfigError, RecipeError) as exc:
            problems.append(f"{_label(member)}: {exc}")
            continue
        problem = here(config) if here else None
        if problem:
            problems.append(f"{_label(member)}: {problem}")
            continue
        checked.append(Member(member.name, member.values, config.to_dict()))
    if problems:
        shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else [])
        raise SweepError(
            f"{len(problems)} of {len(members)} member(s) refused, nothing was created: " + "; ".join(shown)
        )
    return checked


def machine_check(device_for: Callable[[str], Any]) -> Callable[[RunConfig], str | None]:
    """The check of a member's config for this machine, for the pages and the command line alike:
    its training plan on `device_for(backend)` (DeviceFacts) and a local dataset's rows, each
    found once."""
    from core.machine.devices import PlanError
    from core.train.new_runs import local_data_problem
    from core.train.plan import plan_training

    devices: dict[str, Any] = {}
    data: dict[tuple[str, str, str | None], str | None] = {}

    def check(config: RunConfig) -> str | None:
        if config.backend not in devices:
            devices[config.backend] = device_for(config.backend)
        try:
            plan_training(config, devices[config.backend])
        except PlanError as exc:
            return f"cannot train here: {exc}"
        key = (config.dataset, config.split, config.recipe)
        if key not in data:
            data[key] = local_data_problem(config)
        return data[key]

    return check


def sweeps_dir(root: Path) -> Path:
    """The folder of sweep records and search studies in a runs root."""
    return root / SWEEPS_DIR


def record_path(root: Path, name: str) -> Path:
    """The record of the sweep `name` (a validated run name)."""
    return sweeps_dir(root) / f"{validate_run_name(name)}.json"


def study_path(root: Path, name: str) -> Path:
    """The SQLite file of the search `name`'s Optuna study."""
    return sweeps_dir(root) / f"{validate_run_name(name)}.db"


def check_new_sweep(root: Path, name: str, objective: str, base: Mapping[str, Any]) -> None:
    """SweepError when a sweep of this name exists (a record, or a study left by an earlier
    search, which a new search would inherit), the objective is unknown, or it is eval_loss while
    the base config's recipe holds out no validation rows (or it has no recipe)."""
    validate_run_name(name)
    if objective not in OBJECTIVES:
        raise SweepError(f"unknown objective {objective!r}: one of {', '.join(OBJECTIVES)}")
    if os.path.lexists(record_path(root, name)):
        raise SweepError(f"a sweep named {name} already exists in {root}")
    if os.path.lexists(study_path(root, name)):
        raise SweepError(
            f"{study_path(root, name)} (an earlier search's study) exists: pick another name or delete it"
        )
    if objective == "eval_loss":
        recipe = RECIPE_PATTERN.fullmatch(str(base.get("recipe") or ""))
        if recipe is None:
            raise SweepError("the eval_loss objective needs a validation share: a base config with a recipe")
        try:
            document = load_recipe(root, recipe["name"])
        except RecipeError as exc:
            raise SweepError(str(exc)) from None
        if not document.get("validation_rows"):
            raise SweepError(
                f"the eval_loss objective needs a validation share: the recipe {recipe['name']} holds out none"
            )


def write_sweep(root: Path, sweep: Sweep) -> None:
    """Write the sweep's record (atomically)."""
    sweeps_dir(root).mkdir(parents=True, exist_ok=True)
    write_json_atomic(record_path(root, sweep.name), sweep.to_dict())


@contextmanager
def _creation_lock(root: Path, name: str) -> Iterator[bool]:
    """Hold `.sweeps/NAME.lock` for the block if free: yields False when another process holds it
    (a creation in progress)."""
    sweeps_dir(root).mkdir(parents=True, exist_ok=True)
    descriptor = open_regular(sweeps_dir(root) / f"{validate_run_name(name)}.lock", os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(descriptor)


def create_grid(root: Path, sweep: Sweep, members: Sequence[Member]) -> None:
    """Create the grid: its record marked `creating`, its members as queued runs, their queue
    items (core.jobs.queue), then the record unmarked. A failure half-way deletes what was created
    and raises; a kill half-way is settled by recover_sweeps."""
    from core.jobs.queue import enqueue, run_item

    with _creation_lock(root, sweep.name) as mine:
        if not mine:
            raise SweepError(f"sweep {sweep.name} is being created by another process")
        created: list[Path] = []
        try:
            write_sweep(root, replace(sweep, creating=True))
            for member in members:
                created.append(create_queued_run(root, member.name, parse_config(member.config)))
            enqueue(
                root,
                [run_item(member.name, sweep=sweep.name, evaluate=sweep.evaluates) for member in members],
            )
        except BaseException:
            for path in created:
                delete_dir(path)
            record_path(root, sweep.name).unlink(missing_ok=True)
            raise
        write_sweep(root, sweep)


def recover_sweeps(root: Path) -> list[str]:
    """Settle the grid creations cut short (no creator holds their lock): completed when the queue
    holds the sweep's items, else rolled back (record and listed members still queued with no
    job deleted). Returns the names of the sweeps settled."""
    from core.jobs.lifecycle import job_view
    from core.jobs.queue import read_queue
    from core.store.runs import read_run_folder

    settled = []
    for name in list_sweeps(root):
        try:
            data = read_json_object(record_path(root, name))
        except (FileProblem, RunNameError):
            continue
        if data.get("creating") is not True:
            continue
        with _creation_lock(root, name) as mine:
            if not mine:
                continue  # still being created
            try:
                sweep = _parse_record(name, read_json_object(record_path(root, name)))
            except (FileProblem, SweepError):
                continue
            if not sweep.creating:
                continue
            if any(item.sweep == name for item in read_queue(root)):
                write_sweep(root, replace(sweep, creating=False))
            else:
                for run in sweep.run_names:
                    path = root / run
                    if (
                        path.is_dir()
                        and not path.is_symlink()
                        and read_run_folder(path).state == "queued"
                        and not job_view(path, "train").active
                    ):
                        delete_dir(path)
                record_path(root, name).unlink(missing_ok=True)
            settled.append(name)
    return settled


def retry_sweep(root: Path, sweep: Sweep) -> list[str]:
    """Queue again what failed in the sweep: a grid's failed and stopped members (each resumed
    from its last checkpoint); a search itself, to go on to its trials (a failed trial stays
    failed in the study: a new one takes its place; the failures so far no longer count
    towards its stop). Returns what was queued."""
    from core.jobs.queue import retry_failed

    if sweep.kind == "search":
        from core.sweeps.search import study_counts

        failed = study_counts(root, sweep.name).get("FAIL", 0)
        if failed != sweep.retried_failures:
            write_sweep(root, replace(sweep, retried_failures=failed))  # it may fail `trials` times again
        return retry_failed(root, [], sweep=sweep.name, search=True)
    return retry_failed(root, sweep.run_names, sweep=sweep.name, evaluate=sweep.evaluates)


def read_sweep(root: Path, name: str) -> Sweep:
    """The sweep `name` from its record; SweepError when it is missing, unreadable, not a sweep
    record, or still being created."""
    try:
        data = read_json_object(record_path(root, name))
    except (FileProblem, RunNameError) as exc:
        raise SweepError(f"sweep {name}: {exc}") from None
    sweep = _parse_record(name, data)
    if sweep.creating:
        raise SweepError(
            f"sweep {name} is being created (or its creation was cut short: the next look settles it)"
        )
    return sweep


def _scalar(value: Any) -> Any:
    """`value` when a sweep's value can be it: text, a boolean, a finite number; else ValueError."""
    if isinstance(value, (str, bool)):
        return value
    if isinstance(value, (int, float)) and math.isfinite(float(value)):  # an int past 1e308: OverflowError
        return value
    raise ValueError(f"{value!r:.40} is not a sweep value")


def _parse_record(name: str, data: dict[str, Any]) -> Sweep:
    """The Sweep of a record's document; SweepError for anything but a sweep's fields with
    scalar values, search specs parse_search takes and at most MAX_TRIALS trials."""
    try:
        base = data["base"]
        if not isinstance(base, dict):
            raise ValueError("its base is not an object")
        axes = {
            _field(k): [_scalar(v) for v in _list(values)] for k, values in _mapping(data.get("axes")).items()
        }
        search = {_field(k): str(v) for k, v in _mapping(data.get("search")).items()}
        if search:
            parse_search([f"{key}={text}" for key, text in search.items()], base)
        fields = set(axes or search)
        members = []
        for m in _list(data.get("members")):
            values = {k: _scalar(v) for k, v in _mapping(m.get("values")).items()}
            if not set(values) <= fields:
                raise ValueError(f"member {m.get('run')!r:.40} has values of fields that are not varied")
            members.append({"run": validate_run_name(m["run"]), "values": values})
        trials = int(data.get("trials") or 0)
        if not 0 <= trials <= MAX_TRIALS:
            raise ValueError(f"{trials} trials: at most {MAX_TRIALS}")
        sweep = Sweep(
            name=validate_run_name(data["name"]),
            kind=str(data["kind"]),
            base=dict(base),
            preset=data.get("preset") if isinstance(data.get("preset"), str) else None,
            axes=axes,
            search=search,
            trials=trials,
            objective=str(data.get("objective") or "final_loss"),
            members=members,
            created=str(data.get("created") or ""),
            creating=data.get("creating") is True,
            retried_failures=max(0, int(data.get("retried_failures") or 0)),
        )
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise SweepError(f"sweep {name}: its record is not a sweep record ({exc})") from None
    if sweep.kind not in ("grid", "search") or sweep.objective not in OBJECTIVES:
        raise SweepError(f"sweep {name}: its record has an unknown kind or objective")
    return sweep


def _mapping(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{type(value).__name__} where an object belongs")
    return value


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{type(value).__name__} where a list belongs")
    return value


def _field(key: str) -> str:
    if key not in SWEEPABLE:
        raise ValueError(f"{key!r:.40} is not a field a sweep varies")
    return key


def list_sweeps(root: Path) -> list[str]:
    """The names of the sweeps recorded in the runs root, newest first by file time."""
    folder = sweeps_dir(root)
    if not folder.is_dir():
        return []
    records = [p for p in folder.glob("*.json") if p.is_file() and not p.is_symlink()]
    records.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [p.stem for p in records]


def new_sweep(
    name: str,
    base: dict[str, Any],
    *,
    preset: str | None,
    axes: dict[str, list[Any]] | None = None,
    search: dict[str, SearchParam] | None = None,
    trials: int = 0,
    objective: str = "final_loss",
) -> Sweep:
    """A sweep not yet written: a grid (`axes`) or a search (`search` and `trials`)."""
    if bool(axes) == bool(search):
        raise SweepError("give the grid's axes (--grid) or the search's fields (--search), not both")
    if search and not 1 <= trials <= MAX_TRIALS:
        raise SweepError(f"--trials must be 1-{MAX_TRIALS} (got {trials})")
    return Sweep(
        name=name,
        kind="grid" if axes else "search",
        base=base,
        preset=preset,
        axes=axes or {},
        search={key: param.text() for key, param in (search or {}).items()},
        trials=trials if search else 0,
        objective=objective,
        created=now_iso(),
    )


def duplicate_run(
    root: Path,
    source: Mapping[str, Any],
    source_name: str,
    key: str,
    text: str,
    here: Callable[[RunConfig], str | None] | None = None,
) -> Member:
    """The run `source_name` (config `source`) with one field changed, checked (as check_members
    checks, `here` included), named `SOURCE-<label><value>` (SweepError saying why it cannot be)."""
    value = _typed(key, text, source)
    if member_config(source, {key: value}) == dict(source):
        raise SweepError(f"{key} is already {format_setting(value)} in {source_name}")
    values = {key: value}
    member = Member(member_name(source_name, values), values, member_config(source, values))
    return check_members(root, [member], here)[0]


def create_member_run(root: Path, member: Member) -> Path:
    """Create one member as a queued run, pinned to its recipe (SweepError if its name was taken
    or its recipe changed meanwhile)."""
    try:
        return create_queued_run(root, member.name, parse_config(member.config))
    except (RunExistsError, RecipeError) as exc:
        raise SweepError(str(exc)) from None


@dataclass(frozen=True)
class Estimate:
    """The members' estimated cost on the lab's T4 (core.train.estimate): total time and the
    largest peak memory, over the members the estimate knows (`unknown` counts the others)."""

    total_s: float | None
    peak_gb: float | None
    unknown: int


def estimate(members: Sequence[Member]) -> Estimate:
    """The estimate of running `members` one after another."""
    from core.train.estimate import estimate_memory, estimate_t4_step_s

    seconds, peaks, unknown = [], [], 0
    for member in members:
        try:
            config = parse_config(member.config, check_files=False)
        except ConfigError:
            unknown += 1
            continue
        step_s, memory = estimate_t4_step_s(config), estimate_memory(config)
        if step_s is None or memory is None:
            unknown += 1
            continue
        seconds.append(step_s * config.max_steps)
        peaks.append(memory.peak_gb)
    return Estimate(sum(seconds) if seconds else None, max(peaks) if peaks else None, unknown)


def search_corners(name: str, base: Mapping[str, Any], params: Mapping[str, SearchParam]) -> list[Member]:
    """Members at the corners of a search space (each field at its low and high, or each of its
    choices; at most MAX_MEMBERS): checked before a search is created, so that no trial's config
    can be refused by a bound."""
    ends = [
        list(param.choices) if param.kind == "cat" else [param.low, param.high] for param in params.values()
    ]
    corners = []
    for index, combination in enumerate(itertools.islice(itertools.product(*ends), MAX_MEMBERS)):
        values = {
            key: int(value) if params[key].kind == "int" else value for key, value in zip(params, combination)
        }
        corners.append(Member(f"{name}-corner{index}", values, member_config(base, values)))
    return corners
