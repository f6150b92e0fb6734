"""Training on a recipe: the real `train` command on the tiny Llama, with the recipe's validation
share evaluated as it trains, early stopping that keeps the best checkpoint, the recipe's hash
recorded, refusals before a run exists, and the validation loss drawn on the Run and Compare pages."""

import json

from conftest import app_at, charts, rerun, run_core
from safetensors.numpy import load_file

from core.compare import read_curve
from core.data.recipes import RecipeSpec, build_recipe, save_recipe
from core.data.sources import DataSource
from core.data.stats import load_tokenizer, row_stats

SCORED = "data/sample_scored.jsonl"


def saved_recipe(runs_root, name: str, **values) -> dict:
    tokenizer = load_tokenizer("tiny-llama")
    stats = row_stats(DataSource(SCORED), tokenizer, "tiny-llama")
    document = build_recipe(name, RecipeSpec(DataSource(SCORED), "tiny-llama", **values), stats)
    save_recipe(runs_root, document)
    return document


def test_a_run_on_a_recipe_evaluates_stops_early_and_keeps_the_best_checkpoint(tiny_model, runs_root):
    recipe = saved_recipe(runs_root, "top", take="top-score", rows=120, validation=0.1)
    done = run_core(
        "train", "early", "--preset", "cpu_smoke", "--set", "recipe=top", "--set", "max_steps=40",
        "--set", "eval_steps=2", "--set", "early_stopping_patience=2", "--set", "learning_rate=0.3",
        "--set", "warmup_steps=0", runs_root=runs_root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    run = runs_root / "early"
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"] == f"top@{recipe['hash'][:16]}" and config["dataset"] == SCORED
    assert json.loads((run / "recipe.json").read_text())["hash"] == recipe["hash"]
    metrics = json.loads((run / "metrics.json").read_text())
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    evaluations = [e for e in events if "eval_loss" in e]
    assert [e["step"] for e in evaluations] == list(range(2, metrics["steps"] + 1, 2))
    assert metrics["stopped_early"] and metrics["steps"] < 40 and metrics["evaluations"] == len(evaluations)
    best = min(evaluations, key=lambda e: e["eval_loss"])
    assert (metrics["best_eval_loss"], metrics["best_eval_step"]) == (best["eval_loss"], best["step"])
    assert metrics["steps"] == best["step"] + 2 * 2  # two evaluations without a lower loss, then it stopped
    assert metrics["validation_rows"] == 12 and metrics["data"]["rows_used"] == 108
    assert metrics["final_loss"] == [e["loss"] for e in events if "loss" in e][-1]
    # the adapter is the best checkpoint's, not the last step's
    adapter = load_file(run / "adapter" / "adapter_model.safetensors")
    kept = load_file(run / "checkpoints" / f"checkpoint-{best['step']}" / "adapter_model.safetensors")
    last = load_file(run / "checkpoints" / f"checkpoint-{metrics['steps']}" / "adapter_model.safetensors")
    assert all((adapter[key] == kept[key]).all() for key in kept)
    assert any((adapter[key] != last[key]).any() for key in last)
    assert metrics["adapter_step"] == best["step"] and metrics["evaluation_s"] > 0
    log = (run / "train.log").read_text()
    assert (
        "stopped early at step" in log and f"the adapter is the best checkpoint's: step {best['step']}" in log
    )
    assert metrics["train_runtime_s"] <= events[-1]["elapsed_s"] + 1  # evaluations are not training time

    curve = read_curve(run / "events.jsonl")
    assert curve.skipped == 0 and curve.eval_loss.tolist() == [e["eval_loss"] for e in evaluations]
    page = rerun(app_at("pages/2_Run.py", {"run": "early"}))
    traces = {trace["name"]: trace for trace in charts(page)["run_loss_chart"]["data"]}
    assert traces["validation"]["y"] == curve.eval_loss.tolist()
    compare = rerun(app_at("pages/3_Compare.py", {"runs": "early"}))
    names = [trace["name"] for trace in charts(compare)["curves"]["data"]]
    assert names == ["early", "early · validation"]


def test_runs_whose_recipe_cannot_be_used_are_refused_before_they_exist(tiny_model, runs_root):
    saved_recipe(runs_root, "plain", rows=50)
    for sets, message in [
        (["recipe=missing"], "no recipe named missing"),
        (["recipe=plain@0123456789abcdef"], "has changed since"),
        (["early_stopping_patience=2"], "early stopping watches the validation loss"),
        (["recipe=plain", "early_stopping_patience=2"], "early stopping watches the validation loss"),
    ]:
        arguments = [item for setting in sets for item in ("--set", setting)]
        done = run_core("train", "never", "--preset", "cpu_smoke", *arguments, runs_root=runs_root)
        assert done.returncode == 1 and message in done.stderr, (sets, done.stderr)
    assert sorted(p.name for p in runs_root.iterdir()) == [".recipes"]
