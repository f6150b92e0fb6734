"""`python -m core data`: measure a dataset (stats), save a recipe of its rows, list recipes."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from core.data.sources import DataSource
from core.store.paths import runs_root
from core.train.config import MODEL_TEMPLATE, RunConfig

DEFAULT_MODEL = RunConfig().base_model


def _source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", default="train", help="split and optional slice (default: train)")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"measure with this model's tokenizer and chat template (default: {DEFAULT_MODEL}; "
        "tiny-llama works offline)",
    )
    parser.add_argument("--chat-template", default=MODEL_TEMPLATE, help="'model' or a .jinja file")


def _measure(source: DataSource, model: str, chat_template: str, quiet: bool) -> Any:
    from core.data.stats import load_tokenizer, row_stats

    tokenizer = load_tokenizer(model, chat_template)

    def progress(done: int, rows: int) -> None:
        if not quiet:
            print(f"\rmeasuring {source.label}: {done:,}/{rows:,} rows", end="", flush=True)

    stats = row_stats(source, tokenizer, model, progress)
    if not quiet:
        print()
    return stats


def _stats(args: argparse.Namespace) -> int:
    from core.data.stats import summary

    started = time.monotonic()
    stats = _measure(DataSource(args.source, args.split), args.model, args.chat_template, args.json)
    report = summary(stats, args.max_seq_length)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    tokens = report["tokens"]
    skipped = ", ".join(f"{reason}: {count}" for reason, count in report["problems"].items())
    print(
        f"{report['source']}: {report['rows']:,} rows, {report['usable']:,} usable conversations"
        + (f" (skipped: {skipped})" if skipped else "")
        + f", {report['duplicates']:,} exact duplicates"
    )
    quantiles = ", ".join(f"{name} {value:,}" for name, value in tokens["quantiles"].items())
    print(
        f"tokens with {report['tokenizer']}'s tokenizer and chat template: {tokens['total']:,} ({quantiles})"
    )
    share = tokens["truncated_rows"] / report["usable"] if report["usable"] else 0.0
    print(
        f"max_seq_length {tokens['max_seq_length']:,}: {tokens['truncated_rows']:,} rows ({share:.1%}) would be "
        f"cut, {tokens['tokens_lost']:,} tokens lost"
    )
    if tokens["answer_share"] is not None:
        print(f"answer tokens (trained with train_on_responses_only): {tokens['answer_share']:.1%}")
    print("turns per conversation: " + ", ".join(f"{t}: {n:,}" for t, n in report["turns"].items()))
    if report["sources"]:
        print("sources: " + ", ".join(f"{name} {count:,}" for name, count in report["sources"].items()))
    if report["score"]:
        score = report["score"]
        print(
            f"score ({score['rows']:,} rows): min {score['min']:g}, median {score['median']:g}, max {score['max']:g}"
        )
    cached = (
        "all from the cache"
        if not report["measured_shards"]
        else f"{report['measured_shards']} shards measured"
    )
    print(f"{time.monotonic() - started:.1f} s ({cached})")
    return 0


def _mix(text: str | None) -> dict[str, float]:
    from core.data.recipes import RecipeError

    if not text:
        return {}
    mix = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            mix[name.strip()] = float(value)
        except ValueError:
            raise RecipeError(
                f"--mix takes source=weight or source=count, comma-separated (got {part!r})"
            ) from None
        if not sep or not name.strip():
            raise RecipeError(f"--mix takes source=weight or source=count, comma-separated (got {part!r})")
    return mix


def _recipe(args: argparse.Namespace) -> int:
    from core.data.recipes import RecipeError, RecipeSpec, build_recipe, save_recipe
    from core.data.sources import load_source

    spec = RecipeSpec(
        source=DataSource(args.source, args.split),
        model=args.model,
        min_score=args.min_score,
        max_score=args.max_score,
        sources=tuple(name.strip() for name in (args.sources or "").split(",") if name.strip()),
        min_tokens=args.min_tokens,
        max_tokens=args.max_tokens,
        match=args.match or "",
        exclude=args.exclude or "",
        drop_duplicates=not args.keep_duplicates,
        mix=_mix(args.mix),
        take=args.take,
        rows=args.rows,
        seed=args.seed,
        validation=args.validation,
    )
    problems = spec.problems()
    if problems:
        raise RecipeError("; ".join(problems))
    stats = _measure(spec.source, args.model, args.chat_template, quiet=False)
    document = build_recipe(
        args.name, spec, stats, load_source(spec.source) if spec.match or spec.exclude else None
    )
    for label, count in document["funnel"]:
        print(f"  {count:>9,}  {label}")
    for note in document["notes"]:
        print(f"note: {note}")
    path = save_recipe(runs_root(args.runs_dir), document, replace_existing=args.replace)
    print(
        f"saved {path}: {document['train_count']:,} rows to train on, {document['validation_count']:,} held out, "
        f"hash {document['hash'][:16]}. Train on it: --set recipe={document['name']}"
    )
    return 0


def _recipes(args: argparse.Namespace) -> int:
    from core.data.recipes import saved_recipes

    found = saved_recipes(runs_root(args.runs_dir))
    if not found:
        print("no recipes saved")
    for name, document in found.items():
        source = document["source"]
        print(
            f"{name}  {source['dataset']} [{source['split']}]  {document['train_count']:,} train, "
            f"{document['validation_count']:,} validation  hash {document['hash'][:16]}  {document['created_at']}"
        )
    return 0


def add_data_commands(commands: Any) -> None:
    """The `data` command and its actions, under the command line's subcommands."""
    data = commands.add_parser("data", help="measure a dataset, save and list data recipes")
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    stats = actions.add_parser(
        "stats",
        help="token lengths, truncation, turns, answer share, sources and scores of a dataset",
        description="Measure every row of a dataset with a model's tokenizer and chat template. The measured "
        "rows are cached by the dataset's fingerprint: a second look is read from the cache.",
    )
    stats.add_argument(
        "source", metavar="SOURCE", help="a Hub dataset id, or a .jsonl/.json/.parquet/.csv file"
    )
    _source_arguments(stats)
    stats.add_argument(
        "--max-seq-length", type=int, default=RunConfig().max_seq_length, help="training length"
    )
    stats.add_argument("--json", action="store_true", help="print the figures as JSON")
    stats.set_defaults(handler=_stats)

    recipe = actions.add_parser(
        "recipe",
        help="save a recipe: the rows a run trains on and holds out",
        description="Filter, mix and sample a dataset's rows and hold a share out for validation; the recipe "
        "is saved in <runs>/.recipes/NAME.json with the content hash of its rows. A run trains on it with "
        "--set recipe=NAME. Nothing is saved when the recipe selects no rows.",
    )
    recipe.add_argument("name", help="recipe name: 1-64 letters, digits, '.', '_' or '-'")
    recipe.add_argument(
        "--source", required=True, help="a Hub dataset id, or a .jsonl/.json/.parquet/.csv file"
    )
    _source_arguments(recipe)
    recipe.add_argument("--min-score", type=float, help="keep rows with at least this score")
    recipe.add_argument("--max-score", type=float, help="keep rows with at most this score")
    recipe.add_argument("--sources", help="keep rows of these sources, comma-separated")
    recipe.add_argument("--min-tokens", type=int, help="keep rows of at least this many tokens")
    recipe.add_argument("--max-tokens", type=int, help="keep rows of at most this many tokens")
    recipe.add_argument("--match", help="keep rows whose text matches this regular expression")
    recipe.add_argument("--exclude", help="drop rows whose text matches this regular expression")
    recipe.add_argument("--keep-duplicates", action="store_true", help="keep exact duplicate conversations")
    recipe.add_argument(
        "--mix", help="rows per source: weights with --rows (a=0.7,b=0.3), else counts (a=500,b=200)"
    )
    recipe.add_argument(
        "--take", default="random", help="which rows a sample keeps: random or top-score (default: random)"
    )
    recipe.add_argument("--rows", type=int, help="sample this many rows (default: all that pass)")
    recipe.add_argument("--seed", type=int, default=3407, help="seed of the sample and the hold-out")
    recipe.add_argument(
        "--validation", type=float, default=0.0, help="share held out for validation, e.g. 0.02"
    )
    recipe.add_argument("--replace", action="store_true", help="replace a saved recipe of this name")
    recipe.set_defaults(handler=_recipe)

    listing = actions.add_parser("recipes", help="list the saved recipes")
    listing.set_defaults(handler=_recipes)
