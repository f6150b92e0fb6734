"""core.compare: smoothing, downsampling, curves, deltas, config diff, the answer matrix, exports."""

import csv
import io
import json

import numpy as np
import pytest

from core import compare
from core.compare import Column, build_matrix, delta, metrics_rows
from core.evaluate.ratings import answer_sha256
from core.store.csv_cells import restore_cell
from core.store.files import append_jsonl
from core.store.runs import create_run, initial_status, list_runs, read_run_folder
from core.store.seed import import_seed_runs

LOSS = compare.METRIC_BY_KEY["train_loss"]
SPEED = compare.METRIC_BY_KEY["tokens_per_s"]


def tensorboard_smoothing(values, weight):
    """TensorBoard's own loop (tf-scalar-card smoothing), the reference for compare.smooth."""
    last, out = 0.0, []
    for count, value in enumerate(values, 1):
        last = last * weight + (1 - weight) * value
        out.append(last / (1 - weight**count))
    return out


@pytest.mark.parametrize("weight", [0.3, 0.6, 0.9, 0.99])
def test_smooth_is_tensorboards_debiased_ema(weight):
    values = np.random.default_rng(1).normal(2.0, 0.5, 300)
    assert np.allclose(compare.smooth(values, weight), tensorboard_smoothing(values, weight))


def test_smooth_is_not_pulled_to_zero_at_the_start_and_zero_weight_changes_nothing():
    values = np.array([2.0, 2.0, 1.0])
    assert compare.smooth(values, 0.9)[0] == 2.0
    assert compare.smooth(values, 0.9)[1] == pytest.approx(2.0)
    assert list(compare.smooth(values, 0.0)) == [2.0, 2.0, 1.0]
    with pytest.raises(ValueError, match="smoothing weight"):
        compare.smooth(values, 1.0)


def test_downsample_keeps_the_shape_within_the_point_budget():
    x = np.arange(1, 1001, dtype=float)
    y = np.linspace(3.0, 1.0, 1000)
    y[436] = 9.0  # one spike
    y[700] = 0.1  # one dip
    dx, dy = compare.downsample(x, y, 500)
    assert len(dx) <= 500 and len(dx) >= 250
    assert dx[0] == 1 and dx[-1] == 1000 and np.all(np.diff(dx) > 0)
    assert 437.0 in dx and 9.0 in dy and 0.1 in dy
    short_x, short_y = compare.downsample(x[:40], y[:40], 500)
    assert list(short_x) == list(x[:40])


def test_read_curve_keeps_the_later_record_of_a_repeated_step_and_skips_bad_lines(tmp_path):
    events = tmp_path / "events.jsonl"
    for step in (1, 2, 3):  # first attempt, then a resume from the checkpoint at step 2
        append_jsonl(
            events,
            {"step": step, "loss": 3.0 - step * 0.1, "tokens_seen": step * 100, "elapsed_s": step * 1.5},
        )
    append_jsonl(events, {"step": 3, "loss": 2.5, "tokens_seen": 300, "elapsed_s": 5.0})
    append_jsonl(events, {"step": 4, "loss": None, "tokens_seen": 400})
    with events.open("a") as handle:
        handle.write('{"step": 5, "lo')  # torn by a crash
    curve = compare.read_curve(events)
    assert list(curve.step) == [1, 2, 3] and list(curve.loss) == [2.9, 2.8, 2.5]
    assert list(curve.tokens_seen) == [100, 200, 300] and curve.elapsed_s[-1] == 5.0
    assert curve.skipped == 2
    assert len(compare.read_curve(tmp_path / "absent.jsonl")) == 0
    (tmp_path / "folder.jsonl").mkdir()
    unreadable = compare.read_curve(tmp_path / "folder.jsonl")
    assert len(unreadable) == 0 and unreadable.problem.startswith(
        "folder.jsonl cannot be read (not a regular file)"
    )


def test_curve_points_leave_out_an_axis_that_was_never_recorded(tmp_path):
    events = tmp_path / "events.jsonl"
    for step in range(1, 11):
        append_jsonl(events, {"step": step, "loss": 1.0 / step, "tokens_seen": 0, "elapsed_s": step * 0.2})
    curve = compare.read_curve(events)
    x, y = compare.curve_points(curve, "tokens_seen", 0.5)
    assert len(x) == 0 and len(y) == 0
    x, y = compare.curve_points(curve, "elapsed_s", 0.0)
    assert list(x) == pytest.approx([step * 0.2 for step in range(1, 11)]) and y[-1] == pytest.approx(0.1)
    x, y = compare.curve_points(curve, "step", 0.6)
    assert y[-1] > 0.1  # smoothed: the last point still remembers the higher losses before it


def test_deltas_point_the_arrow_by_direction_and_judge_by_what_is_better():
    lower = delta(LOSS, 0.8806, 0.8918)
    assert (lower.verdict, lower.text(4)) == ("better", "▼ -0.0112 (-1.3%)")
    assert delta(LOSS, 0.95, 0.8918).verdict == "worse"
    faster = delta(SPEED, 1200.0, 1000.0)
    assert (faster.verdict, faster.text(1)) == ("better", "▲ +200.0 (+20.0%)")
    assert delta(SPEED, 900.0, 1000.0).verdict == "worse"
    assert delta(LOSS, 0.88061, 0.88064).text(4) == "= 0"
    assert delta(LOSS, None, 0.9).text(4) == "—"
    assert delta(compare.METRIC_BY_KEY["steps"], 400.0, 600.0).verdict == "changed"
    assert delta(LOSS, 0.5, 0.0).text(4) == "▲ +0.5000"  # no % of a zero base


def seed_runs(root):
    import_seed_runs(root)
    return list_runs(root)


def test_seed_runs_are_picked_and_the_lab_baseline_is_the_default(runs_root):
    runs = seed_runs(runs_root)
    create_run(
        runs_root, "still_training", {"base_model": "tiny-llama"}, status=initial_status("running", 30)
    )
    broken = runs_root / "no_status"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    runs = list_runs(runs_root)
    picked = compare.default_runs(runs)
    assert sorted(picked) == sorted(run.name for run in runs if run.imported)
    assert "still_training" in [run.name for run in compare.selectable_runs(runs)]
    assert "no_status" not in [run.name for run in compare.selectable_runs(runs)]
    chosen = [run for run in runs if run.name in picked]
    assert compare.default_baseline(chosen) == "baseline_1B_r16_10k_600steps"
    others = [run for run in chosen if "baseline" not in run.name]
    assert compare.default_baseline(others) == min(run.name for run in others)  # same creation time: by name
    assert compare.default_curve_runs(["a", "b", "c"], "c", limit=2) == ["c", "a"]


def test_metrics_against_the_lab_baseline(runs_root):
    runs = seed_runs(runs_root)
    rows = {row.run: row for row in metrics_rows(runs, "baseline_1B_r16_10k_600steps")}
    t2 = rows["model_centric_1B_r64_10k_600steps"]
    assert (
        t2.deltas["train_loss"].text(4) == "▼ -0.0112 (-1.3%)" and t2.deltas["train_loss"].verdict == "better"
    )
    assert (
        t2.deltas["train_runtime_s"].text(1) == "▲ +55.7 (+2.1%)"
        and t2.deltas["train_runtime_s"].verdict == "worse"
    )
    assert t2.deltas["peak_memory_gb"].text(3) == "▲ +0.391 (+15.2%)"
    assert rows["exp3_1B_10k_600steps"].deltas["train_loss"].verdict == "missing"
    assert rows["baseline_1B_r16_10k_600steps"].deltas["train_loss"].verdict == "baseline"
    assert t2.values["steps"] == 600 and t2.measure == "GPU reserved"
    table = compare.metrics_frame(list(rows.values())).set_index("Run")
    row = table.loc["model_centric_1B_r64_10k_600steps"]
    assert row["Train loss (mean)"] == 0.8806 and row["Δ Train loss (mean)"] == "🟢 ▼ -0.0112 (-1.3%)"
    assert row["Δ Runtime (s)"] == "🔴 ▲ +55.7 (+2.1%)" and row["Δ Steps"] == "= 0"
    assert (
        table.loc["model2_3B_r64_30k_400steps", "Δ Steps"] == "▼ -200 (-33.3%)"
    )  # no better direction, no mark
    assert table.loc["baseline_1B_r16_10k_600steps", "Δ Runtime (s)"] == "baseline"


def cpu_run(root, name, **metrics):
    create_run(
        root,
        name,
        {"base_model": "tiny-llama", "lora_r": 8},
        status=initial_status("completed", 30),
        metrics={
            "train_loss": 2.0,
            "peak_memory_gb": 0.55,
            "lora_memory_gb": 0.1,
            "memory_measure": "process_rss",
            "device": "cpu",
            "device_memory_gb": None,
            **metrics,
        },
    )
    return read_run_folder(root / name)


def test_cpu_memory_is_not_compared_with_gpu_memory_and_device_share(runs_root):
    runs = seed_runs(runs_root)
    cpu = cpu_run(runs_root, "cpu_run")
    gpu = read_run_folder(
        create_run(
            runs_root,
            "gpu_run",
            {"base_model": "x"},
            status=initial_status("completed"),
            metrics={"peak_memory_gb": 3.75, "memory_measure": "cuda_reserved", "device_memory_gb": 15.0},
        )
    )
    rows = {row.run: row for row in metrics_rows([*runs, cpu, gpu], "baseline_1B_r16_10k_600steps")}
    assert rows["cpu_run"].measure == "CPU RSS"
    assert rows["cpu_run"].deltas["peak_memory_gb"].text(3) == "not comparable"
    assert rows["cpu_run"].deltas["train_loss"].verdict == "worse"
    assert rows["gpu_run"].peak_share == pytest.approx(25.0) and rows["cpu_run"].peak_share is None


def test_config_diff_shows_only_the_fields_that_differ(runs_root):
    runs = seed_runs(runs_root)
    diff = compare.config_diff(runs)
    assert list(diff.columns) == ["base_model", "split", "lora_r", "lora_alpha", "max_steps"]
    assert diff.loc["exp3_1B_10k_600steps", "lora_r"] == "—"
    assert diff.loc["model2_3B_r64_30k_400steps", "max_steps"] == "400"
    same = [run for run in runs if run.name.startswith(("model_centric", "data_centric"))]
    assert list(compare.config_diff(same).columns) == ["split"]
    a = cpu_run(runs_root, "a")
    assert compare.config_diff([a, cpu_run(runs_root, "b")]).columns.empty


def answer(prompt_id, text, passed, failed=(), latency=1.0, prompt_set="lab", variant="adapter"):
    """An eval row in the fixed eval format (docs: eval_format)."""
    checks = [
        {"name": "words", "passed": "words" not in failed, "detail": "42 words"},
        {
            "name": "leakage",
            "passed": "leakage" not in failed,
            "detail": "none" if "leakage" not in failed else "'assistant' at a line start",
        },
    ]
    return {
        "variant": variant,
        "prompt_set": prompt_set,
        "prompt_id": prompt_id,
        "prompt": f"Prompt {prompt_id}?",
        "answer": text,
        "checks": checks,
        "passed": passed,
        "latency_s": latency,
        "new_tokens": 40,
        "max_new_tokens": 256,
        "model": "tiny-llama + adapter",
        "created_at": "2026-11-28T15:00:00Z",
    }


RESULTS = {
    "r16": {
        "adapter": [
            answer("vpn", "A VPN encrypts traffic.", True, latency=1.2),
            answer("email", "Dear Ms. Lee,\nassistant\nThanks", False, failed=("leakage",)),
            answer("recipe", "Pasta, oil, garlic.", True),
        ],
        "base": [answer("vpn", "VPN, tunnel", False, failed=("words",), variant="base")],
    },
    "r64": {
        "adapter": [
            answer("vpn", 'A VPN tunnels, encrypts "all" traffic.', True, latency=0.8),
            answer("email", "Dear Ms. Lee, thank you | Best", True),
            answer("recipe", "Pasta, oil, garlic.", True),
            answer("other", "from another set", True, prompt_set="mine"),
        ],
        "gguf-model-q8_0": [answer("vpn", "A VPN.", False, failed=("words",), variant="gguf-model-q8_0")],
    },
}
RATINGS = {
    "r64": {"adapter": {"email": {"rating": 5, "note": "best email"}, "vpn": {"rating": 9, "note": ""}}}
}


def test_matrix_columns_prompt_sets_and_pass_counts():
    columns = compare.matrix_columns(RESULTS)
    assert [c.label for c in columns] == [
        "r16 · adapter",
        "r16 · base",
        "r64 · adapter",
        "r64 · gguf:model-q8_0.gguf",
    ]
    assert compare.prompt_sets(RESULTS) == ["lab", "mine"]
    assert compare.default_matrix_columns(columns, "r64", limit=3) == [columns[2], columns[3], columns[0]]
    matrix = build_matrix(RESULTS, RATINGS, columns, "lab")
    assert [row.prompt_id for row in matrix.prompts] == ["vpn", "email", "recipe"]
    counts = {c.label: value for c, value in matrix.pass_counts().items()}
    assert counts == {
        "r16 · adapter": (2, 0, 3),
        "r16 · base": (0, 0, 1),
        "r64 · adapter": (3, 0, 3),
        "r64 · gguf:model-q8_0.gguf": (0, 0, 1),
    }
    email = matrix.prompts[1].cells[Column("r64", "adapter")]
    assert (email.rating, email.note) == (5, "best email")
    assert matrix.prompts[0].cells[Column("r64", "adapter")].rating is None  # 9 is not a 1-5 rating
    assert matrix.prompts[1].cells[Column("r16", "adapter")].failed_checks == ["leakage"]


def test_rows_without_a_prompt_set_are_one_set_and_are_shown():
    """Eval rows written without prompt_set (or with a non-text one) form one set that the matrix shows."""
    bare = {
        "r16": {
            "adapter": [
                {k: v for k, v in row.items() if k != "prompt_set"} for row in RESULTS["r16"]["adapter"]
            ]
        },
        "r64": {
            "adapter": [{**row, "prompt_set": None} for row in RESULTS["r64"]["adapter"][:2]]
            + [{**RESULTS["r64"]["adapter"][2], "prompt_set": 7}]
        },
    }
    (unnamed,) = compare.prompt_sets(bare)
    matrix = build_matrix(bare, {}, compare.matrix_columns(bare), unnamed)
    assert [row.prompt_id for row in matrix.prompts] == ["vpn", "email", "recipe"]
    assert {row.prompt_set for row in matrix.prompts} == {unnamed} and unnamed == compare.UNNAMED_SET
    assert matrix.pass_counts() == {Column("r16", "adapter"): (2, 0, 3), Column("r64", "adapter"): (3, 0, 3)}
    mixed = {"r16": bare["r16"], "r64": {"adapter": RESULTS["r64"]["adapter"]}}
    assert compare.prompt_sets(mixed) == [unnamed, "lab", "mine"]
    assert [
        row.prompt_id for row in build_matrix(mixed, {}, compare.matrix_columns(mixed), "lab").prompts
    ] == ["vpn", "email", "recipe"]


def test_a_rating_is_shown_only_next_to_the_answer_it_rates():
    """After a re-evaluation, a rating of the earlier answer is left out; one without an answer hash
    (saved before ratings recorded it) is shown as before."""
    rated_answer = RESULTS["r64"]["adapter"][1]["answer"]
    ratings = {
        "r64": {
            "adapter": {
                "email": {"rating": 5, "note": "best email", "answer_sha256": answer_sha256(rated_answer)},
                "vpn": {
                    "rating": 2,
                    "note": "rated an earlier answer",
                    "answer_sha256": answer_sha256("An earlier answer."),
                },
                "recipe": {"rating": 3, "note": "saved before answers were recorded"},
            }
        }
    }
    matrix = build_matrix(RESULTS, ratings, [Column("r64", "adapter")], "lab")
    cells = {row.prompt_id: row.cells[Column("r64", "adapter")] for row in matrix.prompts}
    assert (cells["email"].rating, cells["email"].note) == (5, "best email")
    assert (cells["vpn"].rating, cells["vpn"].note) == (None, "")
    assert (cells["recipe"].rating, cells["recipe"].note) == (3, "saved before answers were recorded")
    exported = {row["prompt_id"]: row for row in csv.DictReader(io.StringIO(compare.answers_csv(matrix)))}
    assert (exported["vpn"]["rating"], exported["vpn"]["note"]) == ("", "")


def test_odd_rows_make_cells_that_say_what_is_unknown():
    odd = {
        "x": {
            "adapter": [
                {
                    "prompt_set": "lab",
                    "prompt_id": "vpn",
                    "answer": None,
                    "checks": 5,
                    "passed": "yes",
                    "latency_s": "fast",
                },
                {"prompt_set": "lab", "prompt_id": 7},
            ]
        }
    }
    matrix = build_matrix(odd, {"x": {"adapter": {"vpn": "five"}}}, [Column("x", "adapter")], "lab")
    cell = matrix.prompts[0].cells[Column("x", "adapter")]
    assert (cell.answer, cell.checks, cell.verdict, cell.latency_s, cell.rating) == (
        "",
        (),
        "not_run",
        None,
        None,
    )
    assert len(matrix.prompts) == 1 and compare.cell_summary(cell) == "⏸️" and not matrix.prompts[0].disagrees


def test_disagreement_filter_keeps_prompts_whose_pass_fail_differ():
    adapters = [Column("r16", "adapter"), Column("r64", "adapter")]
    matrix = build_matrix(RESULTS, {}, adapters, "lab")
    assert [row.prompt_id for row in matrix.disagreements().prompts] == ["email"]
    everything = build_matrix(RESULTS, {}, compare.matrix_columns(RESULTS), "lab")
    assert [row.prompt_id for row in everything.disagreements().prompts] == ["vpn", "email"]
    table = compare.matrix_frame(matrix.disagreements())
    assert table.to_dict("records") == [
        {"Prompt": "email", "r16 · adapter": "❌ leakage · 1.0 s", "r64 · adapter": "✅ · 1.0 s"}
    ]


def test_an_answer_that_needs_a_judge_is_neither_passed_nor_failed_everywhere():
    """A row written with verdicts (needs_judge) next to rows written before them (passed only)."""
    judged = {
        **answer("swedish", "Kaffet är på tok för varmt för att dricka.", None),
        "verdict": "needs_judge",
        "checks": [
            {"name": "translation", "passed": None, "verdict": "needs_judge", "detail": "WER 0.12"},
            {"name": "leakage", "passed": True, "verdict": "pass", "detail": "none"},
        ],
    }
    results = {
        "r16": {"adapter": [answer("vpn", "A VPN tunnels.", True), judged]},
        "r64": {"adapter": [answer("vpn", "A VPN encrypts.", True), answer("swedish", "Kaffet är...", True)]},
    }
    matrix = build_matrix(results, {}, compare.matrix_columns(results), "lab")
    cell = matrix.prompts[1].cells[Column("r16", "adapter")]
    assert (cell.verdict, cell.failed_checks, cell.checks_with("needs_judge")) == (
        "needs_judge",
        [],
        ["translation"],
    )
    assert compare.cell_summary(cell) == "⚖️ translation · 1.0 s"
    assert matrix.pass_counts() == {Column("r16", "adapter"): (1, 1, 2), Column("r64", "adapter"): (2, 0, 2)}
    assert [row.prompt_id for row in matrix.disagreements().prompts] == ["swedish"]
    assert compare.pass_counts_frame(matrix).to_dict("records")[0] == {
        "Run": "r16",
        "Variant": "adapter",
        "Passed": 1,
        "Needs a judge": 1,
        "Answered": 2,
        "Pass rate (%)": 50.0,
    }
    exported = list(csv.DictReader(io.StringIO(compare.answers_csv(matrix))))
    assert [(r["prompt_id"], r["passed"], r["verdict"]) for r in exported if r["run"] == "r16"] == [
        ("vpn", "true", "pass"),
        ("swedish", "", "needs_judge"),
    ]


def test_answers_csv_holds_every_answer_verbatim():
    matrix = build_matrix(RESULTS, RATINGS, compare.matrix_columns(RESULTS), "lab")
    rows = list(csv.DictReader(io.StringIO(compare.answers_csv(matrix))))
    assert len(rows) == 8 and list(rows[0]) == list(compare.ANSWER_COLUMNS)
    email = next(r for r in rows if r["run"] == "r16" and r["prompt_id"] == "email")
    assert email["answer"] == "Dear Ms. Lee,\nassistant\nThanks"
    assert (email["passed"], email["failed_checks"], email["latency_s"]) == ("false", "leakage", "1.0")
    rated = next(
        r for r in rows if r["run"] == "r64" and r["prompt_id"] == "email" and r["variant"] == "adapter"
    )
    assert (rated["rating"], rated["note"]) == ("5", "best email")
    assert (
        next(r for r in rows if r["run"] == "r64" and r["prompt_id"] == "vpn")["answer"]
        == 'A VPN tunnels, encrypts "all" traffic.'
    )


def test_answers_csv_neutralises_formulas_in_text_cells():
    """Prompts, answers, ids (from eval files) and notes (from people) cannot start a formula in a
    spreadsheet; numbers stay plain numbers; restore_cell gives every text back exactly."""
    rows = [
        {**answer("=1+1", ' =HYPERLINK("http://evil.example","open")', True, latency=0.25), "prompt": "+cmd"},
        {**answer("list", "- first\n- second", False, failed=("words",)), "prompt": "@SUM(1+1)"},
        {**answer("quote", "'quoted", True), "prompt": "\tTab first"},
    ]
    ratings = {"r16": {"adapter": {"list": {"rating": 4, "note": "-2+3"}}}}
    matrix = build_matrix({"r16": {"adapter": rows}}, ratings, [Column("r16", "adapter")], "lab")
    exported = list(csv.DictReader(io.StringIO(compare.answers_csv(matrix))))
    assert [(r["prompt_id"], r["prompt"], r["answer"]) for r in exported] == [
        ("'=1+1", "'+cmd", '\' =HYPERLINK("http://evil.example","open")'),
        ("list", "'@SUM(1+1)", "'- first\n- second"),
        ("quote", "'\tTab first", "''quoted"),
    ]
    assert (exported[1]["note"], exported[1]["rating"], exported[1]["new_tokens"]) == ("'-2+3", "4", "40")
    assert (exported[0]["latency_s"], exported[0]["passed"]) == ("0.25", "true")
    originals = [(row["prompt_id"], row["prompt"], row["answer"]) for row in rows]
    assert [
        tuple(restore_cell(r[c]) for c in ("prompt_id", "prompt", "answer")) for r in exported
    ] == originals


def test_markdown_report_has_the_tables_and_the_check_summary(runs_root):
    runs = seed_runs(runs_root)
    broken = runs_root / "half"
    broken.mkdir()
    (broken / "status.json").write_text('{"state": "runn')
    matrix = build_matrix(RESULTS, {}, [Column("r16", "adapter"), Column("r64", "adapter")], "lab")
    report = compare.markdown_report(
        metrics_rows(runs, "baseline_1B_r16_10k_600steps"),
        compare.config_diff(runs),
        matrix,
        baseline="baseline_1B_r16_10k_600steps",
        broken=[read_run_folder(broken)],
        generated_at="2026-11-28",
    )
    lines = report.splitlines()
    assert lines[0] == "# Run comparison"
    assert "5 run(s), baseline **baseline_1B_r16_10k_600steps**, generated 2026-11-28." in lines
    t2 = next(line for line in lines if line.startswith("| model_centric_1B_r64_10k_600steps | GPU reserved"))
    assert "| 0.8806 ▼ -0.0112 (-1.3%) better |" in t2 and "| 2649.7 ▲ +55.7 (+2.1%) worse |" in t2
    assert "| Run | base_model | split | lora_r | lora_alpha | max_steps |" in lines
    assert (
        "| r16 | adapter | 2 | 0 | 3 | 66.7 |" in lines and "| r64 | adapter | 3 | 0 | 3 | 100.0 |" in lines
    )
    assert "### Per prompt (1 of 3 prompts with differing results)" in lines
    assert "| email | ❌ leakage · 1.0 s | ✅ · 1.0 s |" in lines
    assert any(
        line.startswith("- **half**: config.json is missing; status.json is not valid JSON") for line in lines
    )
    header = next(line for line in lines if line.startswith("| Run | Memory |"))
    assert all(line.count(" | ") == header.count(" | ") for line in lines if "| GPU reserved |" in line)
    no_eval = compare.markdown_report(
        metrics_rows(runs[:1], None), compare.config_diff(runs[:1]), None, baseline=None
    )
    assert "No evaluation results for these runs." in no_eval and "do not differ" in no_eval


def test_file_keys_change_with_the_file(runs_root):
    seed_runs(runs_root)
    before = compare.root_signature(runs_root)
    assert len(before) == 5 and all(len(keys) == 3 and keys[2] is not None for _, keys in before)
    run = runs_root / "baseline_1B_r16_10k_600steps"
    (run / "metrics.json").write_text(json.dumps({"train_loss": 0.5}))
    assert compare.root_signature(runs_root) != before
    empty = compare.eval_signature(run)
    (run / "eval").mkdir()
    (run / "eval" / "adapter.jsonl").write_text(json.dumps(answer("vpn", "x", True)) + "\n")
    assert compare.eval_signature(run) != empty and compare.root_signature(runs_root / "absent") == ()


def test_the_report_carries_no_image_or_link_from_the_run_files(runs_root):
    """Config values, a broken run's folder name and its problems from files that carry markdown:
    in the downloaded report (rendered by markdown-it as GitHub would) they are text only."""
    from markdown_it import MarkdownIt

    image = "![p](http://127.0.0.1:9/pixel.png)"
    runs = seed_runs(runs_root)
    config = json.loads((runs[0].path / "config.json").read_text())
    (runs[0].path / "config.json").write_text(json.dumps({**config, "dataset": f"data {image}"}))
    (runs_root / "[x](http:..127.0.0.1:9)").mkdir()
    runs = [read_run_folder(run.path) for run in runs]
    report = compare.markdown_report(
        metrics_rows(runs, runs[0].name),
        compare.config_diff(runs),
        None,
        baseline=runs[0].name,
        broken=[read_run_folder(runs_root / "[x](http:..127.0.0.1:9)")],
    )
    html = MarkdownIt("commonmark").enable("table").render(report)
    assert "pixel" in html and "<img" not in html and "<a " not in html


def test_config_diff_shows_packing_where_two_runs_differ_in_it(runs_root):
    """Packed runs see other batches and other losses: the diff must say which was packed."""
    from core.train.presets import get_preset

    runs = []
    for name, packing in (("t1_unpacked", False), ("t1_packed", True)):
        config = {**get_preset("t1_baseline").config(), "packing": packing}
        runs.append(read_run_folder(create_run(runs_root, name, config, status=initial_status("completed"))))
    diff = compare.config_diff(runs)
    assert list(diff.columns) == ["packing"]
    assert list(diff["packing"]) == ["False", "True"]
