"""`python -m core bench` (lm-evaluation-harness benchmarks of a run's variant, as a job) and
`python -m core judge` (a pairwise judge of two variants' answers through a chat endpoint)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from core.store.paths import runs_root


def _bench(args: argparse.Namespace) -> int:
    from core.evaluate.bench import check_bench_request, parse_tasks, run_benchmarks
    from core.jobs.lifecycle import run_job
    from core.store.runs import load_run

    run = load_run(runs_root(args.runs_dir), args.name)
    tasks = parse_tasks(args.tasks)
    check_bench_request(run.path, args.variant, tasks)
    with run_job(run.path, "bench", interrupt=True) as job:  # a task can take long: a stop ends it at once
        document = run_benchmarks(
            run.path, args.variant, tasks, limit=args.limit, batch_size=args.batch_size, progress=job.stage
        )
    for score in document["tasks"]:
        stderr = f" ± {score['stderr']:.3f}" if score["stderr"] is not None else ""
        print(
            f"{score['task']}: {score['metric']} {score['value']:.4f}{stderr} (n={score['n']}, {score['seconds']:.1f} s)"
        )
    return 0


def _side(root: Path, spec: str) -> Any:
    from core.evaluate.judge import Side
    from core.store.runs import load_run

    name, _, variant = spec.partition(":")
    return Side(load_run(root, name).path, variant or "adapter")


def _judge(args: argparse.Namespace) -> int:
    from core.evaluate.judge import KEY_SETTING, ChatEndpoint, judge_pair, read_rubric, save_judgement

    root = runs_root(args.runs_dir)
    first, second = _side(root, args.a), _side(root, args.b)
    key = os.environ.get(KEY_SETTING) or os.environ.get("OPENAI_API_KEY")
    endpoint = ChatEndpoint(args.endpoint, args.model, key, timeout_s=args.timeout)
    document = judge_pair(
        first, second, endpoint, read_rubric(Path(args.rubric)) if args.rubric else read_rubric()
    )
    path = save_judgement(first, second, document)
    low, high = document["interval"]
    print(
        f"{document['a']} vs {document['b']}: {document['wins']} wins, {document['ties']} ties, "
        f"{document['losses']} losses; win rate {document['win_rate']:.2f} (95% interval {low:.2f}-{high:.2f})"
    )
    agreement = document["agreement"]
    if agreement:
        print(f"agrees with your ratings on {agreement['agreed']} of {agreement['prompts']} prompts")
    else:
        print("no prompt has your ratings of both answers: the judge's agreement with you is unknown")
    print(f"wrote {path}")
    return 0


def add_evaluate_commands(commands: Any) -> None:
    """The `bench` and `judge` commands, under the command line's subcommands."""
    from core.evaluate.bench import DEFAULT_TASKS, VARIANTS

    bench = commands.add_parser(
        "bench",
        help="standard benchmarks of a run's variant through lm-evaluation-harness (a job)",
        description="Run lm-eval tasks on the run's adapter (on its base model), its base model alone, or its "
        "merged export, one task at a time; results in <run>/eval/bench-<variant>.json, shown on Compare. "
        "Tasks: lm-eval names, this project's local tasks (data/bench_tasks/: peft_capitals_mc, "
        "peft_capitals_gen) or a task .yaml file.",
    )
    bench.add_argument("name", help="the run")
    bench.add_argument("--variant", choices=VARIANTS, default="adapter")
    bench.add_argument(
        "--tasks", default=",".join(DEFAULT_TASKS), help="comma-separated (default: %(default)s)"
    )
    bench.add_argument("--limit", type=int, help="at most this many examples per task")
    bench.add_argument("--batch-size", type=int, default=8)
    bench.set_defaults(handler=_bench)

    judge = commands.add_parser(
        "judge",
        help="a pairwise judge of two variants' evaluated answers through an OpenAI-compatible endpoint",
        description="Ask a chat endpoint which answer is better for every prompt both variants answered in "
        "their evaluations, in both orders; a verdict counts when both orders agree. Prints the win rate "
        "with a 95%% bootstrap interval and the agreement with your ratings; the judgement goes to the "
        "first run's eval/ folder. A key, where the endpoint needs one, from $JUDGE_API_KEY or $OPENAI_API_KEY.",
    )
    judge.add_argument(
        "a", metavar="RUN_A[:VARIANT]", help="the first side (variant: adapter, base or gguf:FILE)"
    )
    judge.add_argument("b", metavar="RUN_B[:VARIANT]", help="the second side")
    judge.add_argument(
        "--endpoint", required=True, help="the endpoint's base URL, e.g. http://127.0.0.1:8080/v1"
    )
    judge.add_argument("--model", required=True, help="the judge model's name at the endpoint")
    judge.add_argument("--rubric", help="a rubric file (default: data/judge_rubric.md)")
    judge.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    judge.set_defaults(handler=_judge)
