"""Standard benchmarks of a run's variant through lm-evaluation-harness (the `lm-eval` package).

A variant is the run's adapter on its full-precision base model (loaded as evaluations load it,
core.models.generation.load_run_model, so the adapter is applied by peft), the base model alone,
or the merged 16-bit model of the run's export (`merged/`). Tasks are lm-eval task names (the
tinyBenchmarks by default: about 100 examples each, made to estimate MMLU, HellaSwag, ARC and
GSM8K in minutes), the project's local tasks in data/bench_tasks/ (offline, written for tests),
or a task YAML file (its data files are found beside it). Prompts go through the model's chat
template, as the run was trained. Each task runs on its own, so each has its time, and the
results so far are written after each: `<run>/eval/bench-<variant>.json`.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import describe
from core.jobs.protocol import JobStopped
from core.models.generation import check_adapter, inference_placement, load_run_model
from core.store.files import FileProblem, finite_number, read_capped, read_json_object, write_json_atomic
from core.store.paths import DATA_DIR
from core.store.runs import EVAL_DIR, MERGED_DIR, now_iso

DEFAULT_TASKS = ("tinyMMLU", "tinyHellaswag", "tinyArc", "tinyGSM8k")
LOCAL_TASKS_DIR = DATA_DIR / "bench_tasks"
VARIANTS = ("adapter", "base", "merged")
BENCH_PREFIX = "bench-"
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
MAX_TASKS = 50
MAX_EXAMPLES, MAX_SECONDS = 10**9, 10**9  # a stored n or time beyond these is not a real one
MAX_TASK_FILE_BYTES = 1 << 20
Z_95 = 1.959964  # a 95% normal interval is value ± Z_95 x stderr


class BenchError(ValueError):
    """A benchmark that cannot run as asked (variant, task, missing package); the message says why."""


@dataclass(frozen=True)
class TaskScore:
    """One task's headline figure: its first metric (as the task lists them) after its filter."""

    task: str
    metric: str
    value: float
    stderr: float | None
    n: int
    seconds: float
    higher_is_better: bool | None

    def interval(self) -> tuple[float, float] | None:
        """The 95% confidence interval, where the harness gave a standard error."""
        if self.stderr is None:
            return None
        return self.value - Z_95 * self.stderr, self.value + Z_95 * self.stderr


def bench_path(run_path: Path, variant: str) -> Path:
    """Where a variant's benchmark results are kept."""
    return run_path / EVAL_DIR / f"{BENCH_PREFIX}{variant}.json"


def parse_tasks(text: str) -> list[str]:
    """Task names or YAML paths from comma-separated text; BenchError for a malformed one."""
    tasks = [part.strip() for part in text.split(",") if part.strip()]
    if not tasks:
        raise BenchError("name at least one task")
    if len(tasks) > MAX_TASKS:
        raise BenchError(f"at most {MAX_TASKS} tasks at once")
    for task in tasks:
        if not task.endswith((".yaml", ".yml")) and not TASK_NAME.fullmatch(task):
            raise BenchError(f"{task!r} is not a task name or a .yaml file")
    return tasks


def _local_config(path: Path) -> dict[str, Any] | None:
    """A task YAML as an lm-eval config, its data files made absolute from the YAML's folder; None
    for a YAML that only lm-eval's own loader reads (custom tags such as !function)."""
    import yaml

    try:
        text = read_capped(path, MAX_TASK_FILE_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"cannot read the task file {path}: {exc}") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(config, dict) or not isinstance(config.get("task"), str):
        raise BenchError(f"{path} is not an lm-eval task (no `task:` name)")
    kwargs = config.get("dataset_kwargs")
    if isinstance(kwargs, dict) and isinstance(kwargs.get("data_files"), dict):
        kwargs["data_files"] = {
            split: str((path.parent / str(file)).resolve()) for split, file in kwargs["data_files"].items()
        }
    return config


def resolve_tasks(tasks: list[str]) -> tuple[list[str | dict[str, Any]], list[str], bool]:
    """What lm-eval is given for `tasks`: task names or configs, folders to search for tasks, and
    whether its own task registry is needed (a name that is neither local nor a file)."""
    resolved: list[str | dict[str, Any]] = []
    folders: list[str] = []
    registry = False
    for task in tasks:
        path = Path(task) if task.endswith((".yaml", ".yml")) else LOCAL_TASKS_DIR / f"{task}.yaml"
        if task.endswith((".yaml", ".yml")) and not path.is_file():
            raise BenchError(f"no task file {task}")
        if not path.is_file():
            resolved.append(task)
            registry = True
            continue
        config = _local_config(path)
        if config is None:
            folders.append(str(path.parent.resolve()))
            resolved.append(re.search(r"^task:\s*(\S+)", path.read_text(encoding="utf-8"), re.M)[1])
        else:
            resolved.append(config)
    return resolved, folders, registry


def _model(run_path: Path, variant: str, batch_size: int) -> Any:
    """lm-eval's HFLM wrapping the variant's transformers model and the run's tokenizer."""
    try:
        from lm_eval.models.huggingface import HFLM
    except ImportError as exc:
        raise BenchError(
            f"benchmarks need lm-eval and the training stack ({exc}): pip install lm-eval"
        ) from None
    device, dtype = inference_placement()
    if variant == "merged":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = run_path / MERGED_DIR
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype="auto").to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    else:
        model, tokenizer = load_run_model(run_path, adapter=variant == "adapter", dtype=dtype, device=device)
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


def check_bench_request(run_path: Path, variant: str, tasks: list[str]) -> None:
    """BenchError or InferenceError before a job starts: the variant must exist, tasks must resolve."""
    if variant not in VARIANTS:
        raise BenchError(f"variant must be one of {', '.join(VARIANTS)} (got {variant!r})")
    if variant == "adapter":
        check_adapter(run_path)
    if variant == "merged" and not (run_path / MERGED_DIR / "config.json").is_file():
        raise BenchError(f"run {run_path.name} has no merged model: export it first (python -m core export)")
    resolve_tasks(tasks)


def headline(task: str, results: Mapping[str, Any]) -> tuple[str, float, float | None]:
    """The first metric of a task's results (`metric,filter` keys) with its value and stderr."""
    for key, value in results.items():
        if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
            continue
        metric, _, chosen = key.partition(",")
        stderr = results.get(f"{metric}_stderr,{chosen}")
        label = metric if chosen == "none" else f"{metric} ({chosen})"
        return label, float(value), float(stderr) if isinstance(stderr, (int, float)) else None
    raise BenchError(f"lm-eval gave no metric for {task}")


def run_benchmarks(
    run_path: Path,
    variant: str,
    tasks: list[str],
    *,
    limit: int | None = None,
    batch_size: int = 8,
    progress: Callable[[str, float], None] = lambda stage, fraction: None,
) -> dict[str, Any]:
    """Run every task on the variant, one at a time, writing the results after each; the document."""
    check_bench_request(run_path, variant, tasks)
    resolved, folders, registry = resolve_tasks(tasks)
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    progress(f"loading the {variant} model", 0.0)
    model = _model(run_path, variant, batch_size)
    manager = TaskManager(include_path=folders or None, include_defaults=registry)
    document: dict[str, Any] = {
        "variant": variant,
        "started_at": now_iso(),
        "limit": limit,
        "tasks": [],
        "versions": _versions(),
    }
    path = bench_path(run_path, variant)
    path.parent.mkdir(parents=True, exist_ok=True)
    for index, (name, task) in enumerate(zip(tasks, resolved)):
        progress(f"task {index + 1}/{len(tasks)}: {name}", index / len(tasks))
        started = time.monotonic()
        try:
            output = simple_evaluate(
                model=model,
                tasks=[task],
                limit=limit,
                task_manager=manager,
                apply_chat_template=True,
                log_samples=False,
                bootstrap_iters=1000,
            )
        except JobStopped:
            raise
        except Exception as exc:  # lm-eval, datasets and the Hub raise many types; the message matters
            raise BenchError(f"task {name}: {describe(exc)}") from None
        seconds = time.monotonic() - started
        for task_name, results in (output or {}).get("results", {}).items():
            metric, value, stderr = headline(task_name, results)
            higher = output["higher_is_better"].get(task_name, {}).get(metric.split(" ")[0])
            document["tasks"].append(
                {
                    "task": task_name,
                    "metric": metric,
                    "value": value,
                    "stderr": stderr,
                    "n": int(output["n-samples"].get(task_name, {}).get("effective", 0)),
                    "seconds": round(seconds, 2),
                    "higher_is_better": higher if isinstance(higher, bool) else None,
                }
            )
        document["ended_at"] = now_iso()
        write_json_atomic(path, document)
    progress("done", 1.0)
    return document


def _versions() -> dict[str, str]:
    from core.machine.installed import package_version

    return {
        name: version
        for name in ("lm_eval", "transformers", "peft", "torch")
        if (version := package_version(name))
    }


def load_bench_results(run_path: Path) -> dict[str, list[TaskScore]]:
    """Every variant's benchmark scores kept in the run folder (files read as hostile: capped, checked;
    an unreadable file or entry is left out)."""
    found: dict[str, list[TaskScore]] = {}
    for variant in VARIANTS:
        try:
            document = read_json_object(bench_path(run_path, variant))
        except FileProblem:
            continue
        scores = []
        entries = document.get("tasks")
        for entry in entries if isinstance(entries, list) else []:
            score = _stored_score(entry)
            if score is not None:
                scores.append(score)
        if scores:
            found[variant] = scores
    return found


def _stored_score(entry: Any) -> TaskScore | None:
    """A TaskScore from a results file's entry, or None when it is not a well-formed one."""
    if not isinstance(entry, dict):
        return None
    value, stderr = finite_number(entry.get("value")), finite_number(entry.get("stderr"))
    n, seconds = finite_number(entry.get("n")), finite_number(entry.get("seconds"))
    task, metric = entry.get("task"), entry.get("metric")
    if value is None or n is None or not isinstance(task, str) or not isinstance(metric, str):
        return None
    if not 0 <= n <= MAX_EXAMPLES or not 0 <= (seconds or 0.0) <= MAX_SECONDS:
        return None
    higher = entry.get("higher_is_better")
    return TaskScore(
        task=task[:128],
        metric=metric[:128],
        value=value,
        stderr=stderr if stderr is not None and stderr >= 0 else None,
        n=int(n),
        seconds=seconds or 0.0,
        higher_is_better=higher if isinstance(higher, bool) else None,
    )


def bench_frame(runs: Sequence[tuple[str, Path]], baseline: str | None) -> Any:
    """The picked runs' benchmark scores: a row per run, variant and task with its 95% interval, and the
    difference from the baseline run's score of the same variant and task with the interval of that
    difference (the two standard errors combined as if independent: wider than a paired interval)."""
    scores = {
        (name, variant): {s.task: s for s in found}
        for name, path in runs
        for variant, found in load_bench_results(path).items()
    }
    rows = []
    for (name, variant), tasks in scores.items():
        for task, score in tasks.items():
            base = scores.get((baseline, variant), {}).get(task) if baseline and name != baseline else None
            interval = score.interval()
            row = {
                "Run": name,
                "Variant": variant,
                "Task": task,
                "Metric": score.metric,
                "Score": score.value,
                "95% interval": f"{interval[0]:.3f} to {interval[1]:.3f}" if interval else None,
                f"Δ vs {baseline}": None,
                "Δ 95% interval": None,
                "n": score.n,
                "Time (s)": score.seconds,
            }
            if base is not None and base.metric == score.metric:
                difference = score.value - base.value
                row[f"Δ vs {baseline}"] = difference
                if score.stderr is not None and base.stderr is not None:
                    half = Z_95 * math.hypot(score.stderr, base.stderr)
                    row["Δ 95% interval"] = f"{difference - half:+.3f} to {difference + half:+.3f}"
            rows.append(row)
    import pandas as pd

    return pd.DataFrame(rows)
