"""The command line: `python -m core <command> ...`.

Every command exits 0 on success and non-zero with a one-line reason on stderr otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core import describe
from core.data.command import add_data_commands
from core.evaluate.sandbox import DEFAULT_TIMEOUT_S
from core.interop.command import add_interop_commands
from core.jobs.lifecycle import (
    JOB_KINDS,
    JobError,
    job_view,
    kill_job,
    request_stop,
    run_job,
    wait_for_job,
    with_live_states,
)
from core.jobs.protocol import JobStopped
from core.machine.devices import PlanError
from core.store.experiments_log import (
    ImportReport,
    LogFormatError,
    check_import_size,
    export_log,
    import_log,
)
from core.store.files import write_text_atomic
from core.store.paths import runs_root
from core.store.runs import (
    RUN_TABLE_COLUMNS,
    TRAIN_LOG,
    RunNameError,
    create_run,
    initial_status,
    list_runs,
    load_run,
    run_summary,
    validate_run_name,
)
from core.store.seed import import_seed_runs
from core.sweeps.command import add_sweep_commands
from core.train.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    parse_config,
    set_help,
    with_resolved_paths,
)
from core.train.presets import PRESETS, BaseConfigError, base_config, train_command
from core.train.training import TrainingError

MAX_ANSWER_BYTES = 1 << 20
"""`check --file` reads at most this much (the answer itself is limited to checks.MAX_ANSWER_CHARS)."""


class CommandError(Exception):
    """A failure to report as one line on stderr with a non-zero exit."""


def _format_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return " ".join(str(value).split())


def format_table(rows: list[dict[str, Any]], columns: dict[str, str]) -> str:
    """A plain-text table of `rows` with the headers of `columns`."""
    cells = [[_format_cell(row[key]) for key in columns] for row in rows]
    widths = [max([len(header)] + [len(r[i]) for r in cells]) for i, header in enumerate(columns.values())]
    lines = ["  ".join(h.ljust(w) for h, w in zip(columns.values(), widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def _print_report(report: ImportReport, source: str, root: Path) -> int:
    for name in report.existing:
        print(f"exists, left unchanged: {name}")
    for problem in report.problems:
        print(f"skipped {problem}", file=sys.stderr)
    print(f"{source}: {report.summary()} into {root}")
    return 1 if report.problems else 0


def _runs_list(args: argparse.Namespace) -> int:
    root = runs_root(args.runs_dir)
    summaries = [run_summary(run) for run in with_live_states(list_runs(root))]
    if args.json:
        print(json.dumps(summaries, indent=2))
    elif not summaries:
        print(
            f"No runs in {root}. The dashboard adds the lab's recorded runs when it first opens "
            "a runs folder; `python -m core runs seed` adds them now."
        )
    else:
        print(format_table(summaries, RUN_TABLE_COLUMNS))
    return 0


def _runs_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        check_import_size(path.stat().st_size)  # a huge file is refused before it is read
        text = path.read_text(encoding="utf-8-sig")
    except LogFormatError as exc:
        raise CommandError(f"{path.name}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {path}: {exc}") from None
    root = runs_root(args.runs_dir)
    try:
        report = import_log(root, text, source=path.name)
    except LogFormatError as exc:
        raise CommandError(f"{path.name}: {exc}") from None
    return _print_report(report, path.name, root)


def _runs_seed(args: argparse.Namespace) -> int:
    root = runs_root(args.runs_dir)
    return _print_report(import_seed_runs(root), "the lab's recorded runs", root)


def _runs_export(args: argparse.Namespace) -> int:
    root = runs_root(args.runs_dir)
    if not root.is_dir():
        raise CommandError(f"no runs folder at {root}")
    export = export_log(list_runs(root))
    if args.file == "-":
        sys.stdout.write(export.text)
    else:
        write_text_atomic(Path(args.file), export.text)
        print(f"wrote {len(export.exported)} run(s) to {args.file}", file=sys.stderr)
    if export.left_out:
        print(
            f"left out {len(export.left_out)} run(s) that are unfinished or broken: {', '.join(export.left_out)}",
            file=sys.stderr,
        )
    return 0


def _remote(spec: str) -> Any:
    """The store a REMOTE argument names, with this process's Hub token for a bucket."""
    from core.export.gguf_files import environment_token
    from core.remote.stores import RemoteError, open_remote

    try:
        return open_remote(spec, token=environment_token())
    except RemoteError as exc:
        raise CommandError(str(exc)) from None


def _runs_sync(args: argparse.Namespace) -> int:
    from core.remote.stores import RemoteError
    from core.remote.sync import pull, push

    root = runs_root(args.runs_dir)
    runs = [validate_run_name(name) for name in args.run] or None
    extras = [part.strip() for part in (args.with_files or "").split(",") if part.strip()]
    store = _remote(args.remote)
    root.mkdir(parents=True, exist_ok=True)
    steps = {"push": (push,), "pull": (pull,), "sync": (pull, push)}[args.runs_command]
    problems = []
    try:
        for step in steps:
            report = step(root, store, runs, extras)
            print(f"{step.__name__} {store.name}: {report.summary()}", file=sys.stderr)
            problems += report.problems
    except RemoteError as exc:
        raise CommandError(str(exc)) from None
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _presets(args: argparse.Namespace) -> int:
    if args.json:
        print(
            json.dumps(
                {
                    p.name: {"title": p.title, "description": p.description, "config": p.config()}
                    for p in PRESETS.values()
                },
                indent=2,
            )
        )
        return 0
    rows = []
    for preset in PRESETS.values():
        config = preset.config()
        rows.append(
            {
                "name": preset.name,
                "title": preset.title,
                "model": config["base_model"],
                "data": f"{config['dataset']} [{config['split']}]",
                "lora": f"{config['lora_r']}/{config['lora_alpha']}",
                "steps": config["max_steps"],
                "save": config["save_steps"],
            }
        )
    columns = {
        "name": "Preset",
        "title": "Title",
        "model": "Base model",
        "data": "Data",
        "lora": "LoRA r/alpha",
        "steps": "Steps",
        "save": "Save every",
    }
    print(format_table(rows, columns))
    print(
        "\nEvery preset starts from the lab notebook's defaults: python -m core presets --json shows all settings."
    )
    return 0


def _new_config(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config document a train command asks for, and the document its --set lines apply to."""
    try:
        base = base_config(args.preset, args.config)
    except BaseConfigError as exc:
        raise CommandError(str(exc)) from None
    return apply_overrides(base, args.set), base


def _pinned_to_recipe(config: RunConfig, root: Path) -> tuple[RunConfig, dict[str, dict[str, Any]]]:
    """A new run's config pinned to its recipe and the documents its folder gets (core.data.recipes);
    without a recipe, a local dataset is read first (a Hub dataset is read by the job)."""
    from core.data.recipes import RecipeError, new_run_files
    from core.train.new_runs import local_data_problem

    try:
        config, documents = new_run_files(config, root)
    except RecipeError as exc:
        raise CommandError(str(exc)) from None
    problem = local_data_problem(config)
    if problem:
        raise CommandError(problem)
    return config, documents


def _live_sync(path: Path, remote: str, every_s: float) -> Any:
    """The training job's live sync to `remote` (core.remote.live), stopping the job itself
    when a dashboard elsewhere asks."""
    from core.remote.live import LiveSync

    if not every_s >= 1:
        raise CommandError(f"--sync-every must be at least 1 second (got {every_s:g})")

    def stop_this_job() -> None:
        try:
            request_stop(path, "train")
        except JobError:  # not recorded as running yet, or ending: signal this process directly
            os.kill(os.getpid(), signal.SIGTERM)

    return LiveSync(path, _remote(remote), every_s, stop_this_job)


def _launch_on_hf_jobs(
    root: Path, name: str, config: Any, documents: dict[str, dict[str, Any]] | None, args: argparse.Namespace
) -> int:
    """Create the run here (queued, with `documents`; None: it exists) and launch it on Hugging Face
    Jobs (core.remote.hf_jobs)."""
    from huggingface_hub import HfApi

    from core.export.gguf_files import environment_token
    from core.remote.dashboard import REMOTE_SETTING
    from core.remote.hf_jobs import HfJobError, gpu_hardware, launch
    from core.remote.stores import BUCKET_SCHEME, RemoteError

    if args.resume:
        raise CommandError("--resume runs here only: a Hugging Face job starts a queued run")
    remote = args.sync or os.environ.get(REMOTE_SETTING, "").strip()
    if not remote:
        raise CommandError(
            f"--on hf-jobs needs the runs bucket the job trains into: --sync hf://buckets/NAMESPACE/NAME[/prefix], "
            f"or ${REMOTE_SETTING}"
        )
    if not remote.startswith(BUCKET_SCHEME):
        raise CommandError(
            f"a Hugging Face job mounts a bucket: the runs remote must be {BUCKET_SCHEME}... (got {remote})"
        )
    token = environment_token()
    if not token:
        raise CommandError("--on hf-jobs needs a Hugging Face token with write access in $HF_TOKEN")
    api = HfApi()
    try:
        flavours = {hardware.name: hardware for hardware in gpu_hardware(api, token)}
        if args.flavor not in flavours:
            raise CommandError(
                f"Hugging Face Jobs has no GPU flavour {args.flavor!r}; it offers: {', '.join(flavours)}"
            )
        if documents is not None:
            create_run(
                root,
                name,
                config.to_dict(),
                status=initial_status("queued", config.max_steps),
                documents=documents,
            )
        record = launch(root, name, config, remote, args.flavor, api, token)
    except (HfJobError, RemoteError) as exc:
        raise CommandError(str(exc)) from None
    hardware = flavours[args.flavor]
    cost = hardware.cost_usd(config)
    estimate = f", about ${cost:.2f} for {config.max_steps} steps" if cost is not None else ""
    print(
        f"{name}: launched on Hugging Face Jobs as job {record['job_id']} ({hardware.label}, "
        f"${hardware.usd_per_hour:.2f}/hour{estimate}). Its files arrive in {remote}: "
        f"python -m core runs pull {remote} {name}"
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    from core.machine.devices import detect_device
    from core.train.plan import plan_training
    from core.train.training import check_trainable, train_run

    root = runs_root(args.runs_dir)
    name = validate_run_name(args.name)
    creating = bool(args.preset or args.config)
    if args.resume and (creating or args.set):
        raise CommandError(
            "--resume continues with the run's own config: leave out --preset, --config and --set"
        )
    if args.set and not creating:
        raise CommandError("--set changes a preset or a config file: add --preset or --config")
    path = root / name
    if creating:
        document, base = _new_config(args)
        config = with_resolved_paths(parse_config(document))
        if path.exists():
            raise CommandError(
                f"a run named {name} already exists in {root}: pick another name, or continue it with --resume"
            )
        config, documents = _pinned_to_recipe(config, root)
    elif not path.is_dir():
        raise CommandError(f"no run named {name} in {root}: create it with --preset or --config")
    else:
        try:
            config = check_trainable(path, resume=args.resume)
        except TrainingError as exc:
            raise CommandError(str(exc)) from None
    if args.on == "hf-jobs" and not args.dry_run:
        return _launch_on_hf_jobs(root, name, config, documents if creating else None, args)
    try:
        plan, problem = plan_training(config, detect_device(config.backend)), None
    except PlanError as exc:
        plan, problem = None, str(exc)
    if problem and not args.dry_run:
        raise CommandError(problem)
    if args.dry_run:
        command = train_command(
            name,
            config.to_dict() if creating else None,
            preset=args.preset,
            config_file=args.config,
            base=base if creating else None,
            runs_dir=args.runs_dir,
            resume=args.resume,
        )
        plan_document = plan.to_dict() if plan else {"error": f"cannot train here: {problem}"}
        print(
            json.dumps(
                {
                    "run": name,
                    "config": config.to_dict(),
                    "plan": plan_document,
                    "command": shlex.join(command),
                },
                indent=2,
            )
        )
        if problem:
            raise CommandError(f"cannot train here: {problem}")
        return 0
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    live = _live_sync(path, args.sync, args.sync_every) if args.sync else contextlib.nullcontext()
    if creating:
        create_run(
            root,
            name,
            config.to_dict(),
            status=initial_status("queued", config.max_steps),
            documents=documents,
        )
    started = False
    with live:
        try:
            with run_job(path, "train", admit=lambda: check_trainable(path, resume=args.resume)) as job:
                started = True
                train_run(path, job, resume=args.resume)
        except JobStopped:
            pass  # stopped (while training, with a checkpoint): resumable with --resume
        except BaseException:
            if not started:  # refused, or no job: nothing was recorded
                raise
    status = load_run(root, name).status  # how the job ended, as its lifecycle recorded it
    if status.get("state") == "failed":
        raise CommandError(f"training {name} failed: {status.get('error')} (see {path / TRAIN_LOG})")
    print(f"{name}: {status.get('state')} at step {status.get('step')}/{status.get('max_steps')}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    root = runs_root(args.runs_dir)
    path = load_run(root, args.name).path
    try:
        if args.kill:
            view = kill_job(path, args.job)
            print(f"killed the {args.job} job of {args.name} (pid {view.pid}): {view.state}", file=sys.stderr)
            return 0
        already = job_view(path, args.job).stop_requested
        view = request_stop(path, args.job)
    except JobError as exc:
        raise CommandError(str(exc)) from None
    asked = "was already asked" if already else "asked"
    print(f"{asked} the {args.job} job of {args.name} (pid {view.pid}) to stop", file=sys.stderr)
    if args.wait:
        view = wait_for_job(path, args.job, args.wait)
        if view.active:
            raise CommandError(
                f"the {args.job} job of {args.name} is still {view.state} after {args.wait:g} s"
            )
        print(f"{args.name}: {args.job} job {view.state}")
    return 0


def _model_choice(spec: str) -> Any:
    """The card model a --model value names: hub, bundled, or a GGUF path."""
    from core.models.sources import bundled_choice, hub_choice, local_choice

    if spec == "hub":
        return hub_choice()
    if spec == "bundled":
        return bundled_choice()
    return local_choice(spec)


def _cards(args: argparse.Namespace) -> int:
    from core.cards.anki import cards_to_csv, write_apkg
    from core.cards.generation import (
        CardRequest,
        CardRequestError,
        generate_cards,
        validate_request,
    )
    from core.models.gguf import GgufModel, ModelError
    from core.models.sources import resolve_model

    notes = ""
    if args.notes:
        try:
            notes = Path(args.notes).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read notes {args.notes}: {exc}") from None
    existing = []
    if args.grow:
        from core.cards.decks import MAX_UPLOAD_BYTES, DeckFileError, read_deck

        try:
            with open(args.grow, "rb") as handle:
                grown = read_deck(args.grow, handle.read(MAX_UPLOAD_BYTES + 1))
        except (OSError, DeckFileError) as exc:
            raise CommandError(f"cannot grow {args.grow}: {exc}") from None
        if grown.card_type != args.type:
            raise CommandError(f"{args.grow} holds {grown.card_type} notes: add --type {grown.card_type}")
        existing = list(grown.notes)
    request = CardRequest(
        topic=args.topic or "",
        notes=notes,
        count=args.count,
        difficulty=args.difficulty,
        card_type=args.type,
        deck=args.deck or (grown.name if args.grow else ""),
        tags=tuple(tag for text in args.tags for tag in text.split(",")),
    )
    try:
        validate_request(request)
        resolved = resolve_model(_model_choice(args.model))
        if resolved.notice:
            print(f"note: {resolved.notice}", file=sys.stderr)
        result = generate_cards(GgufModel(resolved.path), request, avoid=existing, seed=args.seed)
        if result.error:
            print(f"warning: {result.error}", file=sys.stderr)
    except (CardRequestError, ModelError) as exc:
        raise CommandError(str(exc)) from None
    print(f"{result.summary()} ({resolved.choice.label})", file=sys.stderr)
    if not result.cards:
        raise CommandError("the model produced no usable card; try again, or another model")
    for number, card in enumerate(result.cards, 1):
        print(f"{number}. {card.front}" + (f"\n   {card.back}" if card.back else ""))
    if len(result.cards) < request.count:
        print(f"warning: made {len(result.cards)} of {request.count} cards", file=sys.stderr)
    for rejection in result.rejected:
        if rejection.reason == "already in the deck":
            print(f"skipped, already in the deck: {rejection.front}", file=sys.stderr)
    tags, deck_cards = request.tags, existing + result.cards  # a grown deck keeps its notes' GUIDs
    if args.csv:
        write_text_atomic(
            Path(args.csv), cards_to_csv(deck_cards, request.deck_name, request.card_type, tags)
        )
        print(f"wrote {args.csv}", file=sys.stderr)
    if args.apkg:
        write_apkg(deck_cards, request.deck_name, request.card_type, tags, Path(args.apkg))
        print(f"wrote {args.apkg}", file=sys.stderr)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from core.evaluate.answers import check_request, evaluate_run, summary_line
    from core.evaluate.prompt_sets import resolve_prompt_set

    root = runs_root(args.runs_dir)
    run = load_run(root, args.name)
    prompt_set = resolve_prompt_set(root, args.prompts)
    check_request(run.path, args.variant, args.max_new_tokens)
    with run_job(run.path, "eval", interrupt=True) as job:  # one answer can take long: a stop ends it at once
        rows = evaluate_run(run.path, args.variant, prompt_set, args.max_new_tokens, progress=job.stage)
    print(summary_line(rows))
    return 0


def _check(args: argparse.Namespace) -> int:
    from core.evaluate.answers import find_prompt, try_answer
    from core.evaluate.prompt_sets import resolve_prompt_set
    from core.store.files import read_capped

    prompt_set = resolve_prompt_set(runs_root(args.runs_dir), args.prompts)
    prompt = find_prompt(prompt_set, args.prompt_id)
    answer = args.answer
    if args.file:
        path = Path(args.answer)
        try:
            answer = read_capped(path, MAX_ANSWER_BYTES).decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {path}: {exc}") from None
    result = {"prompt_set": prompt_set.name, "prompt_id": prompt.id, **try_answer(prompt, answer)}
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0


def _checks_calibrate(args: argparse.Namespace) -> int:
    from core.evaluate.calibration import (
        AGREEMENT_COLUMNS,
        LAB_CALIBRATION_FILE,
        CalibrationError,
        agreement_rows,
        calibrate,
        load_calibration,
    )
    from core.evaluate.prompt_sets import PromptSetError, resolve_prompt_set

    try:
        prompt_set = resolve_prompt_set(runs_root(args.runs_dir), args.prompts)
        agreements = calibrate(
            load_calibration(Path(args.file) if args.file else LAB_CALIBRATION_FILE), prompt_set
        )
    except (CalibrationError, PromptSetError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([agreement.as_dict() for agreement in agreements], ensure_ascii=False, indent=2))
    else:
        print(format_table(agreement_rows(agreements), AGREEMENT_COLUMNS))
        for agreement in agreements:
            for kind, verdicts in (("deferred", agreement.deferrals), ("DISAGREES", agreement.disagreements)):
                for v in verdicts:
                    print(
                        f"{kind}: line {v.case.line} ({v.case.prompt}/{v.case.check}): the person says "
                        f"{v.case.expected}, the check {v.result.verdict}: {v.result.detail} "
                        f"(the person: {v.case.reason})"
                    )
    return 1 if any(agreement.disagreements for agreement in agreements) else 0


def _export(args: argparse.Namespace) -> int:
    from core.export.hub import hub_token, push_export, validate_repo_id
    from core.export.pipeline import (
        DEFAULT_QUANTS,
        delete_merged,
        export_run,
        validate_quants,
    )
    from core.export.verify import file_verdict
    from core.models.generation import check_adapter

    run = load_run(runs_root(args.runs_dir), validate_run_name(args.name))
    quants = validate_quants(args.quant or list(DEFAULT_QUANTS))
    check_adapter(run.path)
    if args.push:
        validate_repo_id(args.push)
        hub_token()  # the token is read again by the push: it is never passed around or printed
    with run_job(run.path, "export", interrupt=True) as job:  # merge and convert cannot check for a stop
        document = export_run(run.path, quants, job.stage)
        hub = None
        if args.push:
            hub = push_export(
                run.path, args.push, private=args.private, say=lambda line: job.stage(line, 0.97)
            )
        if args.delete_merged:
            freed = delete_merged(run.path)
            job.stage(f"deleted merged/ ({freed / 1e6:.1f} MB)", 1.0)
    for entry in document["files"]:
        if entry["quant"] in quants:
            print(f"{entry['file']}  {entry['size'] / 1e6:.2f} MB  {file_verdict(entry['verification'])}")
    if hub:
        print(f"pushed to {hub['url']} (commit {hub['commit']})")
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    from core.evaluate.sandbox import limits_for_timeout, run_python

    path = Path(args.file)
    try:
        source = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {path}: {exc}") from None
    run = run_python(source, limits=limits_for_timeout(args.timeout))
    print(json.dumps(run.report()))
    return 0 if run.ok else 1


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


def _add_bench_and_judge(commands: Any) -> None:
    """The `bench` and `judge` commands."""
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="python -m core", description="PEFT dashboard command line.")
    parser.add_argument("--runs-dir", help="runs folder (default: $PEFT_RUNS_DIR, else ./runs)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    runs = commands.add_parser("runs", help="list, import, export and sync runs")
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
    seeding = runs_commands.add_parser("seed", help="add the lab's recorded runs (T1-T4, Experiment 3)")
    seeding.set_defaults(handler=_runs_seed)
    add_interop_commands(runs_commands)
    for action, what in (
        ("push", "send this side's new and changed files of the runs to REMOTE"),
        ("pull", "fetch the other sides' new and changed files of the runs from REMOTE"),
        ("sync", "pull, then push"),
    ):
        syncing = runs_commands.add_parser(
            action,
            help=what,
            description=f"{what[0].upper()}{what[1:]}: a folder, or hf://buckets/NAMESPACE/NAME[/prefix] "
            "(a token from $HF_TOKEN). Each file has one writer (the side whose job writes it; ratings and "
            "stop requests the side that wrote them): a push sends only this side's files, a pull never "
            "replaces them. Light files always move, a run's adapter once it is completed, checkpoints, GGUF "
            "files and the merged model only with --with. Exit status 1 when a file could not be moved.",
        )
        syncing.add_argument(
            "remote", metavar="REMOTE", help="a folder, or hf://buckets/NAMESPACE/NAME[/prefix]"
        )
        syncing.add_argument("run", nargs="*", metavar="RUN", help="only these runs (default: all)")
        syncing.add_argument(
            "--with",
            dest="with_files",
            metavar="PARTS",
            help="also move these, comma-separated: checkpoints, gguf, merged",
        )
        syncing.set_defaults(handler=_runs_sync)

    presets = commands.add_parser("presets", help="list the training presets")
    presets.add_argument("--json", action="store_true", help="print every setting of every preset as JSON")
    presets.set_defaults(handler=_presets)

    train = commands.add_parser(
        "train",
        help="create a run and train it, train a queued run, or resume one",
        description="Train a LoRA run. With --preset or --config a new run folder is created and trained;\n"
        "without, an existing queued run is trained; --resume continues a stopped or failed run from its\n"
        "last checkpoint. Exit status 0 when the run completes or stops, 1 when it fails.",
        epilog=set_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("name", help="run name: 1-64 letters, digits, '.', '_' or '-'")
    source = train.add_mutually_exclusive_group()
    source.add_argument("--preset", help="start from a preset (see: python -m core presets)")
    source.add_argument("--config", help="a JSON file of config fields (missing fields take the defaults)")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config field (repeatable; the fields are listed below)",
    )
    train.add_argument(
        "--dry-run", action="store_true", help="validate and print the config, plan and command"
    )
    train.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    train.add_argument(
        "--sync",
        metavar="REMOTE",
        help="while training, push the run's files to REMOTE (a folder, or hf://buckets/NAMESPACE/NAME[/prefix]) "
        "and stop when a dashboard elsewhere asks through it",
    )
    train.add_argument(
        "--on",
        choices=("here", "hf-jobs"),
        default="here",
        help="where to train: here (default), or hf-jobs: a Hugging Face Jobs GPU, with the runs bucket "
        "(--sync or $PEFT_RUNS_REMOTE) and $HF_TOKEN",
    )
    train.add_argument(
        "--flavor",
        default="t4-small",
        help="the Hugging Face Jobs GPU for --on hf-jobs (default t4-small)",
    )
    train.add_argument(
        "--sync-every",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="push every this many seconds, and at every change of state (default 30)",
    )
    train.set_defaults(handler=_train)

    stop = commands.add_parser(
        "stop",
        help="stop a run's job (training saves a checkpoint first)",
        description="Send the job a stop request (SIGTERM). Training saves a checkpoint at its current step and ends "
        "stopped, to be resumed with train NAME --resume. A job that has not stopped 30 s ($PEFT_STOP_GRACE_S) after "
        "the request is killed. --kill kills it at once (no checkpoint).",
    )
    stop.add_argument("name", help="run name")
    stop.add_argument(
        "--job", choices=JOB_KINDS, default="train", help="which job of the run (default: train)"
    )
    stop.add_argument("--wait", type=float, metavar="SECONDS", help="wait up to SECONDS for the job to end")
    stop.add_argument(
        "--kill", action="store_true", help="kill the job and its children now (SIGKILL) instead of asking"
    )
    stop.set_defaults(handler=_stop)

    cards = commands.add_parser(
        "cards",
        help="make study cards from a topic or notes and write them for Anki",
        description="Generate flashcards with a GGUF model on the CPU and write them as an Anki CSV and/or .apkg.",
    )
    cards.add_argument("topic", nargs="?", help="what the cards are about (or give --notes)")
    cards.add_argument("--notes", help="a .txt or .md file of notes to make the cards from")
    cards.add_argument("-n", "--count", type=int, default=5, help="how many cards, 1-20 (default 5)")
    cards.add_argument("--difficulty", default="beginner", help="beginner, intermediate or advanced")
    cards.add_argument("--type", default="basic", help="basic (question/answer) or cloze")
    cards.add_argument("--deck", help="deck name (default: from the topic)")
    cards.add_argument(
        "--tags", nargs="*", default=[], help="tags for every card (space- or comma-separated)"
    )
    cards.add_argument(
        "--model",
        default="hub",
        help="hub (the lab's model; falls back to the bundled one offline), bundled, or a GGUF path",
    )
    cards.add_argument("--seed", type=int, help="sampling seed, for repeatable decks")
    cards.add_argument("--csv", help="write an Anki CSV here")
    cards.add_argument("--apkg", help="write an Anki package here")
    cards.add_argument(
        "--grow",
        help="an existing deck (our CSV, Anki's CSV export or an .apkg): add only cards it lacks, keep its notes",
    )
    cards.set_defaults(handler=_cards)

    evaluation = commands.add_parser(
        "eval",
        help="answer a prompt set with a run's adapter, base model or GGUF, and check the answers",
        description="Greedy answers to every prompt of a set, checked automatically, written to "
        "<run>/eval/<variant>.jsonl (an earlier evaluation of the variant is replaced). Exit status 0 when the "
        "evaluation ran, whatever the checks say.",
    )
    evaluation.add_argument("name", help="run name")
    evaluation.add_argument(
        "--variant",
        default="adapter",
        help="adapter (default), base (the base model alone) or gguf:FILE (a file in the run's "
        "gguf/ folder, or a path)",
    )
    evaluation.add_argument(
        "--prompts", help="a prompt set: lab (default), a saved set's name, or a .json file"
    )
    evaluation.add_argument(
        "--max-new-tokens", type=int, default=256, help="answer length limit (default 256)"
    )
    evaluation.set_defaults(handler=_eval)

    check = commands.add_parser(
        "check",
        help="run the checks of one prompt on one answer and print the verdicts as JSON",
        description="Run the checks of prompt PROMPT_ID (and the leakage check) on ANSWER, as an evaluation "
        "would, and print one JSON object: the answer's verdict (pass, fail, needs_judge or not_run), passed "
        "(true, false, or null when undecided) and each check's name, passed, verdict and detail. Exit status 0 "
        "whatever the verdict; 1 for an unknown prompt set or prompt, or an unreadable file.",
    )
    check.add_argument("prompt_id", metavar="PROMPT_ID", help="a prompt's id in the set, e.g. swedish")
    check.add_argument("answer", metavar="ANSWER", help="the answer's text (with --file: a file holding it)")
    check.add_argument("--prompts", help="a prompt set: lab (default), a saved set's name, or a .json file")
    check.add_argument("--file", action="store_true", help="ANSWER is the path of a UTF-8 text file")
    check.set_defaults(handler=_check)

    checks = commands.add_parser("checks", help="measure the automatic checks")
    checks_commands = checks.add_subparsers(dest="checks_command", required=True, metavar="ACTION")
    calibration = checks_commands.add_parser(
        "calibrate",
        help="agreement of the checks with a person's verdicts on a calibration set",
        description="Run every answer of a calibration set (JSON lines: prompt, check, answer, expected, "
        "reason; default: data/check_calibration.jsonl) through its check and print the agreement per check "
        "type: the person's pass and fail verdicts, and how many the checks agreed on, deferred (left to a "
        "judge: needs_judge or not_run) and disagreed on; then each deferred and disagreeing case. Exit status "
        "0 when no verdict disagrees (deferrals allowed), 1 when one does, 2 when the calibration set or the "
        "prompt set cannot be read or a case names an unknown prompt or check.",
    )
    calibration.add_argument("--file", help="a calibration set (default: the lab's)")
    calibration.add_argument(
        "--prompts", help="the prompt set the cases name: lab (default), a saved set's name, or a .json file"
    )
    calibration.add_argument("--json", action="store_true", help="print JSON instead of a table")
    calibration.set_defaults(handler=_checks_calibrate)

    export = commands.add_parser(
        "export",
        help="merge a run's adapter, convert it to GGUF, verify the files and optionally push them",
        description="Merge the run's LoRA adapter into its base model in 16-bit (merged/), convert it to GGUF with "
        "llama.cpp's converter (f16, q8_0) or quantizer (k-quants), verify every file against the merged model, and "
        "record lineage in export.json. --push uploads the adapter, the GGUF files and a model card to the Hugging "
        "Face Hub with the token in $HF_TOKEN.",
    )
    export.add_argument("name", help="run name")
    export.add_argument(
        "--quant",
        action="append",
        default=[],
        metavar="QUANT",
        help="a GGUF type, repeatable: f16, q8_0, q2_k, q3_k_m, q4_k_s, q4_k_m, q5_k_s, q5_k_m, q6_k "
        "(default: q8_0, what the lab shipped)",
    )
    export.add_argument(
        "--push", metavar="REPO_ID", help="push to this Hub model repo (owner/name), created if missing"
    )
    export.add_argument(
        "--private",
        action="store_true",
        help="create the Hub repo private (an existing repo keeps its visibility)",
    )
    export.add_argument(
        "--delete-merged", action="store_true", help="delete merged/ afterwards (the GGUF files stay)"
    )
    export.set_defaults(handler=_export)

    sandbox = commands.add_parser(
        "sandbox",
        help="run a Python file exactly as an answer's code is run by a code check",
        description="Run FILE in the code-check sandbox (bubblewrap and an audit hook; see "
        "core/evaluate/sandbox.py) and print one JSON object: outcome, reason, stdout, stderr and "
        'isolation ("bwrap", "audit-hook" with PEFT_UNISOLATED_CODE_CHECKS=1, or "none" when the code '
        "was not run for lack of isolation). Exit status 0 when the code ran to the end, 1 otherwise "
        "(refused, raised, timed out, killed, not run); 1 without JSON when FILE cannot be read.",
    )
    sandbox.add_argument("file", help="a Python file")
    sandbox.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"wall-clock seconds, 0.1-60 (default {DEFAULT_TIMEOUT_S:g}); CPU seconds are this rounded up",
    )
    sandbox.set_defaults(handler=_sandbox)
    add_sweep_commands(commands)
    add_data_commands(commands)
    _add_bench_and_judge(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit status."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except JobStopped as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 1
    except (
        CommandError,
        ConfigError,
        RunNameError,
        PlanError,
        TrainingError,
        JobError,
        OSError,
        ValueError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # anything else still ends in one line, never a traceback
        print(f"error: {describe(exc)}", file=sys.stderr)
        return 1
