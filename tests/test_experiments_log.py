"""The lab's experiments_log.csv: seed figures, malformed rows, lossless round trip, formulas
neutralised, bounded and bulk imports."""

import csv
import errno
import io
import os
import re
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import PROJECT_DIR

from core.store import bulk_runs
from core.store.csv_cells import neutralise_cell, restore_cell
from core.store.experiments_log import (
    EXTRA_COLUMNS,
    LOG_COLUMNS,
    MAX_IMPORT_BYTES,
    MAX_IMPORT_ROWS,
    LogFormatError,
    export_log,
    import_log,
    parse_log,
    run_documents,
)
from core.store.files import sweep_debris
from core.store.runs import create_run, initial_status, list_runs, load_run
from core.store.seed import SEED_LOG, SEED_MARKER, import_seed_runs, prepare_runs_root

HEADER = ",".join(LOG_COLUMNS) + "\n"

# The lab's recorded figures, exactly as its write-up gives them (issue 2).
MODEL_1B = "unsloth/Llama-3.2-1B-Instruct-bnb-4bit"
MODEL_3B = "unsloth/Llama-3.2-3B-Instruct-bnb-4bit"
SEED_FIGURES = {
    # name: (model, split, r, alpha, steps, loss, runtime_s, peak_gb, lora_gb)
    "baseline_1B_r16_10k_600steps": (MODEL_1B, "train[:10000]", 16, 16, 600, 0.8918, 2594.04, 2.564, 1.361),
    "model_centric_1B_r64_10k_600steps": (
        MODEL_1B,
        "train[:10000]",
        64,
        64,
        600,
        0.8806,
        2649.69,
        2.955,
        1.752,
    ),
    "data_centric_1B_r64_30k_600steps": (
        MODEL_1B,
        "train[:30000]",
        64,
        64,
        600,
        0.8835,
        2647.19,
        3.367,
        0.385,
    ),
    "model2_3B_r64_30k_400steps": (MODEL_3B, "train[:30000]", 64, 64, 400, 0.7688, 3515.17, 4.43, 1.36),
    "exp3_1B_10k_600steps": (MODEL_1B, "train[:10000]", None, None, 600, None, 1533.65, 2.275, 1.072),
}


def test_seed_import_reproduces_every_figure(runs_root):
    report = prepare_runs_root(runs_root)
    assert report is not None and sorted(report.imported) == sorted(SEED_FIGURES)
    assert report.problems == [] and report.existing == []
    for name, figures in SEED_FIGURES.items():
        run = load_run(runs_root, name)
        c, m = run.config, run.metrics
        actual = (
            c["base_model"],
            c["split"],
            c["lora_r"],
            c["lora_alpha"],
            c["max_steps"],
            m["train_loss"],
            m["train_runtime_s"],
            m["peak_memory_gb"],
            m["lora_memory_gb"],
        )
        assert actual == figures, name
        assert run.state == "completed" and run.imported
        assert c["dataset"] == "mlabonne/FineTome-100k"
        assert m["device"] == "Tesla T4 (Colab)" and m["memory_measure"] == "cuda_reserved"


def test_an_existing_root_is_seeded_once(runs_root):
    create_run(runs_root, "my_own_run", {"base_model": "tiny"})
    report = prepare_runs_root(runs_root)
    assert report is not None and len(report.imported) == 5
    assert (runs_root / SEED_MARKER).is_file()
    assert len(list_runs(runs_root)) == 6
    assert prepare_runs_root(runs_root) is None


def test_deleted_seed_runs_are_not_brought_back_until_asked(runs_root):
    prepare_runs_root(runs_root)
    for run in list_runs(runs_root):
        for file in run.path.iterdir():
            file.unlink()
        run.path.rmdir()
    assert prepare_runs_root(runs_root) is None
    assert list_runs(runs_root) == []
    assert len(import_seed_runs(runs_root).imported) == 5


MALFORMED = (
    HEADER + "good_one,m,train[:10],8,50,1.5,10.0,1.0,0.5\n"  # line 2
    "bad_rank,m,train[:10],abc,50,1.5,10.0,1.0,0.5\n"  # line 3
    "../escape,m,train[:10],8,50,1.5,10.0,1.0,0.5\n"  # line 4
    "\n"  # line 5: blank, ignored
    "short_row,m,train[:10],8\n"  # line 6
    "good_one,m,train[:10],8,50,1.5,10.0,1.0,0.5\n"  # line 7: repeats line 2
    "negative,m,train[:10],8,50,-1.5,10.0,1.0,0.5\n"  # line 8
    "half_step,m,train[:10],8,12.5,1.5,10.0,1.0,0.5\n"  # line 9
    '"quoted,name",m,train[:10],8,50,1.5,10.0,1.0,0.5\n'  # line 10
    "good_two,m,train[:10],,,nan,,,\n"  # line 11: all figures missing is fine
)


def test_malformed_rows_are_reported_by_line_and_skipped(runs_root):
    runs_root.mkdir()
    report = import_log(runs_root, MALFORMED, source="mine.csv")
    assert report.imported == ["good_one", "good_two"]
    assert report.summary() == "imported 2 run(s), 7 row(s) skipped"
    lines = [problem.split(":")[0] for problem in report.problems]
    assert lines == ["line 3", "line 4", "line 6", "line 7", "line 8", "line 9", "line 10"]
    assert "lora_r 'abc' is not a positive whole number" in report.problems[0]
    assert "slash" in report.problems[1]
    assert "repeats line 2" in report.problems[3]
    assert "12.5" in report.problems[5]
    assert {run.name for run in list_runs(runs_root)} == {"good_one", "good_two"}
    two = load_run(runs_root, "good_two")
    assert two.config["lora_r"] is None and two.metrics["train_loss"] is None
    assert two.config["imported_from"] == {"file": "mine.csv", "line": 11}


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("\n\n", "empty"),
        ("run_name,model_name\nx,y\n", "lacks the column(s) dataset_split"),
        ("name;loss\nx;1\n", "lacks the column(s) run_name"),
    ],
)
def test_a_file_that_is_not_the_schema_creates_nothing(runs_root, text, message):
    runs_root.mkdir()
    with pytest.raises(LogFormatError, match="lacks|empty") as info:
        import_log(runs_root, text, source="x.csv")
    assert message in str(info.value)
    assert list(runs_root.iterdir()) == []


def test_columns_in_any_order_with_a_bom_and_extra_columns():
    text = "\ufeffnotes,train_loss,run_name,lora_gpu_GB,peak_gpu_GB,max_steps,lora_r,dataset_split,model_name,train_runtime_sec\n"
    text += "hello,0.5,r1,0.1,0.2,10,4,train[:5],m,7.25\n"
    rows, problems = parse_log(text)
    assert problems == []
    assert rows[0].values == {
        "run_name": "r1",
        "model_name": "m",
        "dataset_split": "train[:5]",
        "lora_r": 4,
        "max_steps": 10,
        "train_loss": 0.5,
        "train_runtime_sec": 7.25,
        "peak_gpu_GB": 0.2,
        "lora_gpu_GB": 0.1,
    }


def test_export_then_import_is_lossless(runs_root, tmp_path):
    prepare_runs_root(runs_root)
    export = export_log(list_runs(runs_root))
    assert export.left_out == [] and export.exported == sorted(
        SEED_FIGURES
    )  # in name order, whatever the input's
    assert export_log(reversed(list_runs(runs_root))).text == export.text
    assert export.text.splitlines()[0] == ",".join(LOG_COLUMNS + EXTRA_COLUMNS)
    other = tmp_path / "other"
    other.mkdir()
    report = import_log(other, export.text, source="exported.csv")
    assert sorted(report.imported) == sorted(SEED_FIGURES) and report.problems == []

    def everything_but_provenance(run):
        config = {k: v for k, v in run.config.items() if k != "imported_from"}
        status = {k: v for k, v in run.status.items() if not k.endswith("_at")}
        return config, status, run.metrics

    before = {run.name: everything_but_provenance(run) for run in list_runs(runs_root)}
    after = {run.name: everything_but_provenance(run) for run in list_runs(other)}
    assert before == after
    assert load_run(other, "model2_3B_r64_30k_400steps").config["lora_alpha"] == 64
    assert export_log(list_runs(other)).text == export.text
    # The lab's own file survives the trip: its columns, row for row (order aside).
    schema_part = {",".join(line.split(",")[: len(LOG_COLUMNS)]) for line in export.text.splitlines()}
    assert schema_part == set(SEED_LOG.read_text().splitlines())


def test_export_leaves_out_unfinished_runs_and_cpu_memory(tmp_path):
    config = {"base_model": "tiny", "split": "train[:64]", "lora_r": 8, "max_steps": 30}
    create_run(tmp_path, "running", config, status=initial_status("running", 30))
    create_run(
        tmp_path,
        "cpu_done",
        config,
        status=initial_status("completed", 30),
        metrics={
            "train_loss": 2.0,
            "train_runtime_s": 8.5,
            "peak_memory_gb": 0.55,
            "lora_memory_gb": 0.01,
            "memory_measure": "process_rss",
        },
    )
    export = export_log(list_runs(tmp_path))
    assert export.left_out == ["running"] and export.exported == ["cpu_done"]
    assert export.text.splitlines()[1] == "cpu_done,tiny,train[:64],8,30,2.0,8.5,,,,,,,,"


def test_both_memory_definitions_survive_an_export_and_an_import(tmp_path):
    gpu_metrics = {
        "train_loss": 0.9,
        "peak_memory_gb": 2.564,
        "lora_memory_gb": 1.361,
        "training_peak_memory_gb": 2.31,
        "training_memory_gb": 1.02,
        "memory_measure": "cuda_reserved",
        "device": "Tesla T4",
    }
    config = {"base_model": "m", "split": "train[:64]", "lora_r": 16, "max_steps": 30}
    create_run(tmp_path, "t1", config, status=initial_status("completed", 30), metrics=gpu_metrics)
    text = export_log(list_runs(tmp_path)).text
    header, row = text.splitlines()[:2]
    assert "peak_gpu_GB,lora_gpu_GB" in header and "training_peak_gpu_GB,training_gpu_GB" in header
    other = tmp_path / "other"
    other.mkdir()
    import_log(other, text, source="exported.csv")
    metrics = load_run(other, "t1").metrics
    assert {k: metrics[k] for k in gpu_metrics if k != "train_loss"} == {
        k: v for k, v in gpu_metrics.items() if k != "train_loss"
    }


def test_reimport_leaves_existing_runs_unchanged(runs_root):
    prepare_runs_root(runs_root)
    original = load_run(runs_root, "baseline_1B_r16_10k_600steps").metrics
    changed = SEED_LOG.read_text().replace("0.8918", "0.1111")
    report = import_log(runs_root, changed, source="again.csv")
    assert report.imported == [] and len(report.existing) == len(SEED_FIGURES)
    assert load_run(runs_root, "baseline_1B_r16_10k_600steps").metrics == original


def test_an_unbalanced_quote_costs_only_its_own_line():
    text = HEADER + 'a,m,s,8,50,1,1,1,1\nb,"m,s,8,50,1,1,1,1\nc,m,s,8,50,1,1,1,1\nd,m,s,8,50,1,1,1,1\n'
    rows, problems = parse_log(text)
    assert [row.values["run_name"] for row in rows] == ["a", "c", "d"]
    assert problems == ["line 3: not valid CSV (unexpected end of data)"]


@pytest.mark.parametrize("newline", ["\r", "\r\n", "\n"])
def test_any_line_ending(newline):
    text = HEADER.replace("\n", newline) + newline.join(["a,m,s,8,50,1,1,1,1", "b,m,s,8,50,1,1,1,1"])
    rows, problems = parse_log(text)
    assert [row.values["run_name"] for row in rows] == ["a", "b"] and problems == []


def test_a_repeated_schema_column_rejects_the_file():
    with pytest.raises(LogFormatError, match="train_loss more than once"):
        parse_log(HEADER.strip() + ",train_loss\na,m,s,8,50,1,1,1,1,9.9\n")


@pytest.mark.parametrize(
    "column, raw, expected",
    [
        ("lora_r", "16", 16),
        ("lora_r", "16.0", 16),
        ("max_steps", "9007199254740993", 9007199254740993),
        ("lora_r", "1_000", None),
        ("max_steps", "1e20", None),
        ("max_steps", "0", None),
        ("lora_r", "-4", None),
        ("train_loss", "0.8918", 0.8918),
        ("train_loss", "-0", 0.0),
        ("train_loss", "1e-3", 0.001),
        ("train_loss", "inf", None),
        ("train_loss", "1_0.5", None),
        ("peak_gpu_GB", "-1.5", None),
        ("train_loss", "NaN", "missing"),
    ],
)
def test_number_cells(column, raw, expected):
    cells = dict(zip(LOG_COLUMNS, ["a", "m", "s", "8", "50", "1", "1", "1", "1"]))
    cells[column] = raw
    rows, problems = parse_log(HEADER + ",".join(cells[c] for c in LOG_COLUMNS) + "\n")
    if expected is None:
        assert rows == [] and column in problems[0] and repr(raw) in problems[0]
    else:
        value = rows[0].values[column]
        assert (
            value is None if expected == "missing" else (value == expected and type(value) is type(expected))
        )


def test_text_cells_keep_words_that_look_like_missing_markers():
    rows, _ = parse_log(HEADER + "a,NA,none,8,50,1,1,1,1\n")
    assert (rows[0].values["model_name"], rows[0].values["dataset_split"]) == ("NA", "none")


def test_a_run_that_cannot_be_written_is_reported_not_called_existing(runs_root, monkeypatch):
    runs_root.mkdir()

    def full_disk(staging, target):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bulk_runs, "place_new_dir", full_disk)
    report = import_log(runs_root, HEADER + "a,m,s,8,50,1,1,1,1\n", source="x.csv")
    assert report.imported == [] and report.existing == []
    assert report.problems == ["line 2: run 'a' could not be written ([Errno 28] No space left on device)"]
    assert list(runs_root.iterdir()) == []


def test_extra_columns_are_read_when_present():
    text = (
        HEADER.strip()
        + ",lora_alpha,dataset,device,note,training_peak_gpu_GB,training_gpu_GB\n"
        + "a,m,s,8,50,1,1,1,1,32,my/data,NVIDIA A100,first try,2.5,1.25\n"
    )
    rows, problems = parse_log(text)
    assert problems == []
    assert {k: rows[0].values[k] for k in EXTRA_COLUMNS} == {
        "lora_alpha": 32,
        "dataset": "my/data",
        "device": "NVIDIA A100",
        "note": "first try",
        "training_peak_gpu_GB": 2.5,
        "training_gpu_GB": 1.25,
    }


# --- formulas (issue 15, finding 5) ----------------------------------------------------------

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def test_every_short_text_is_neutralised_and_restored_exactly():
    """All texts of up to 3 characters over formula starts, whitespace, a quote and plain ones."""
    alphabet = ["=", "+", "-", "@", "\t", "\r", "\n", " ", "'", "a", "1"]
    texts = [""] + [a + b + c for a in alphabet for b in [""] + alphabet for c in [""] + alphabet]
    for text in texts:
        cell = neutralise_cell(text)
        assert restore_cell(cell) == text, repr(text)
        assert not cell.startswith(FORMULA_STARTS) and not cell.lstrip().startswith(FORMULA_STARTS[:4])
        assert cell == text or cell == "'" + text


# (value in a run folder, its cell in the export)
TEXT_CELLS = [
    ('=HYPERLINK("http://evil.example","open")', '\'=HYPERLINK("http://evil.example","open")'),
    ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
    ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
    ("@SUM(1+1)", "'@SUM(1+1)"),
    ("-0.5", "'-0.5"),  # text that looks like a number is still text
    ("'quoted", "''quoted"),  # a genuine leading quote survives the trip
    ("'=1+1", "''=1+1"),
    ("'", "''"),
    ("a=1+1", "a=1+1"),
    ("plain text", "plain text"),
]


def test_formulas_in_text_columns_are_neutralised_on_export_and_restored_on_import(runs_root, tmp_path):
    for index, (value, _) in enumerate(TEXT_CELLS):
        create_run(
            runs_root,
            f"run_{index}",
            {
                "base_model": value,
                "dataset": value,
                "split": value,
                "lora_r": 8,
                "max_steps": 5,
                "note": value,
            },
            status=initial_status("completed", 5),
            metrics={"train_loss": 0.5, "device": value, "memory_measure": "cuda_reserved"},
        )
    export = export_log(list_runs(runs_root))
    rows = list(csv.DictReader(io.StringIO(export.text)))
    text_columns = ("model_name", "dataset_split", "dataset", "device", "note")
    for row, (_, cell) in zip(rows, TEXT_CELLS):
        assert {row[column] for column in text_columns} == {cell}
        assert (row["lora_r"], row["train_loss"]) == ("8", "0.5")
    other = tmp_path / "other"
    report = import_log(other, export.text, source="exported.csv")
    assert len(report.imported) == len(TEXT_CELLS) and report.problems == []
    for index, (value, _) in enumerate(TEXT_CELLS):
        run = load_run(other, f"run_{index}")
        assert [run.config[key] for key in ("base_model", "dataset", "split", "note")] == [value] * 4
        assert run.metrics["device"] == value
    assert export_log(list_runs(other)).text == export.text


def test_numbers_are_written_as_numbers_and_text_where_a_number_belongs_as_text(runs_root):
    """A run folder from elsewhere may hold a negative number or text in a number's place."""
    create_run(
        runs_root,
        "foreign",
        {"base_model": "m", "split": "s", "lora_r": "=1+1", "max_steps": 5},
        status=initial_status("completed", 5),
        metrics={"train_loss": -0.5, "train_runtime_s": -3, "peak_memory_gb": float("-inf")},
    )
    row = next(csv.DictReader(io.StringIO(export_log(list_runs(runs_root)).text)))
    assert (row["train_loss"], row["train_runtime_sec"]) == ("-0.5", "-3")
    assert (row["lora_r"], row["peak_gpu_GB"]) == ("'=1+1", "")  # not a GPU measure: left out


# --- bounds and bulk import (issue 15, finding 6) --------------------------------------------


def log_rows(count, start=0):
    """`count` data rows for runs run_<start>... ."""
    return "".join(f"run_{i:05d},m,s,8,50,1.5,10.0,1.0,0.5\n" for i in range(start, start + count))


def test_more_rows_than_the_limit_are_refused_and_nothing_is_created(runs_root):
    runs_root.mkdir()
    text = HEADER + log_rows(MAX_IMPORT_ROWS // 2) + "\n\n" + log_rows(MAX_IMPORT_ROWS // 2 + 1, start=50_000)
    with pytest.raises(LogFormatError) as info:
        import_log(runs_root, text, source="big.csv")
    assert str(info.value) == (
        "The file has 10,001 rows; an import takes at most 10,000. Split it into smaller files."
    )
    assert list(runs_root.iterdir()) == []


@pytest.mark.parametrize("filler", ["x", "é"], ids=["ascii", "two-byte characters"])
def test_a_text_larger_than_the_limit_is_refused_before_parsing(runs_root, filler):
    """The limit is in UTF-8 bytes: half as many two-byte characters are as much."""
    runs_root.mkdir()
    note = filler * (50_000 // len(filler.encode()))  # within the csv module's field size limit
    rows = "".join(f"r{i:03d},m,s,8,50,1,1,1,1,{note}\n" for i in range(104))
    before_note = HEADER.strip() + ",note\n" + rows + "last,m,s,8,50,1,1,1,1,"
    fitting = (MAX_IMPORT_BYTES - len(before_note.encode()) - 1) // len(filler.encode())
    good, problems = parse_log(before_note + filler * fitting + "\n")
    assert len(good) == 105 and problems == []
    over = before_note + filler * (fitting + 1) + "\n"
    size = len(over.encode())
    with pytest.raises(LogFormatError) as info:
        import_log(runs_root, over, source="big.csv")
    assert str(info.value) == (
        f"The file is {size:,} bytes (5.0 MB); an import takes at most 5,242,880 bytes (5 MB). "
        "Split it into smaller files."
    )
    assert list(runs_root.iterdir()) == []


def test_the_upload_limit_is_the_import_limit():
    """An upload the Home page accepts is never refused for its size, and no bigger one is held."""
    config = tomllib.loads((PROJECT_DIR / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] * 1024 * 1024 == MAX_IMPORT_BYTES  # Streamlit: MB of 2**20 bytes


def test_a_bulk_import_at_the_limit_writes_what_the_per_run_path_writes(runs_root, tmp_path):
    """10,000 runs in one import; a sample compared byte for byte with create_run's folders."""
    text = HEADER + log_rows(MAX_IMPORT_ROWS)
    report = import_log(runs_root, text, source="many.csv")
    assert len(report.imported) == MAX_IMPORT_ROWS and report.problems == [] and report.existing == []
    assert len(os.listdir(runs_root)) == MAX_IMPORT_ROWS  # no staging folder left behind
    per_run = tmp_path / "per_run"
    rows = parse_log(text)[0][4000:4003]
    for row in rows:
        config, status, metrics = run_documents(row, "many.csv")
        create_run(per_run, row.values["run_name"], config, status=status, metrics=metrics)
    for row in rows:
        name = row.values["run_name"]
        bulk, single = runs_root / name, per_run / name
        assert (
            sorted(os.listdir(bulk))
            == sorted(os.listdir(single))
            == ["config.json", "metrics.json", "status.json"]
        )
        assert (bulk / "config.json").read_bytes() == (single / "config.json").read_bytes()
        assert (bulk / "metrics.json").read_bytes() == (single / "metrics.json").read_bytes()
        stamps = re.compile(r'"\w+_at": "[^"]+"')  # creation times differ
        assert stamps.sub("", (bulk / "status.json").read_text()) == stamps.sub(
            "", (single / "status.json").read_text()
        )


def test_taken_names_are_reported_existing_and_left_untouched(runs_root, monkeypatch):
    """One run exists before the import; another process creates a second while the import
    syncs (simulated by creating it when bulk_runs syncs the file system)."""
    create_run(runs_root, "run_00001", {"base_model": "mine"})
    (runs_root / "run_00003").write_text("not a run, but the name is taken\n")
    before = {path.name: path.read_bytes() for path in (runs_root / "run_00001").iterdir()}
    real_sync = bulk_runs.sync_file_system

    def sync_while_another_run_appears(path):
        create_run(runs_root, "run_00002", {"base_model": "theirs"})
        real_sync(path)

    monkeypatch.setattr(bulk_runs, "sync_file_system", sync_while_another_run_appears)
    report = import_log(runs_root, HEADER + log_rows(5), source="x.csv")
    assert report.imported == ["run_00000", "run_00004"]
    assert report.existing == ["run_00001", "run_00003", "run_00002"] and report.problems == []
    assert {path.name: path.read_bytes() for path in (runs_root / "run_00001").iterdir()} == before
    assert load_run(runs_root, "run_00002").config == {"base_model": "theirs"}
    assert sorted(os.listdir(runs_root)) == [f"run_{i:05d}" for i in range(5)]


def test_a_write_that_fails_on_the_third_run_costs_only_that_run(runs_root, monkeypatch):
    """The disk fills up while the third run's metrics.json is written (a monkeypatched write)."""
    real_write_text = Path.write_text

    def write_text(path, text, *args, **kwargs):
        if path.parent.name == "run_00002" and path.name == "metrics.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_text(path, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    report = import_log(runs_root, HEADER + log_rows(5), source="x.csv")
    assert report.imported == ["run_00000", "run_00001", "run_00003", "run_00004"]
    assert report.problems == [
        "line 4: run 'run_00002' could not be written ([Errno 28] No space left on device)"
    ]
    assert sorted(os.listdir(runs_root)) == ["run_00000", "run_00001", "run_00003", "run_00004"]
    assert not any(run.broken for run in list_runs(runs_root))


CRASH_ON_THIRD_PLACEMENT = """
import os, signal, sys
from pathlib import Path
from core.store import bulk_runs
from core.store.experiments_log import import_log

real_place, placed = bulk_runs.place_new_dir, []

def place_then_crash(staging, target):
    if len(placed) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    placed.append(target)
    return real_place(staging, target)

bulk_runs.place_new_dir = place_then_crash
import_log(Path(sys.argv[1]), sys.stdin.read(), source="x.csv")
"""


def test_a_crash_half_way_leaves_whole_runs_and_only_hidden_debris(runs_root):
    """The importing process is killed (SIGKILL, standing in for a crash or a power cut) as it is
    about to put the third of five runs in place."""
    text = HEADER + log_rows(5)
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_ON_THIRD_PLACEMENT, str(runs_root)],
        input=text,
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    visible = sorted(name for name in os.listdir(runs_root) if not name.startswith("."))
    assert visible == ["run_00000", "run_00001"]
    assert not any(run.broken for run in list_runs(runs_root))
    (debris,) = [name for name in os.listdir(runs_root) if name.startswith(".")]
    assert debris.startswith(".import.") and sorted(os.listdir(runs_root / debris)) == [
        "run_00002",
        "run_00003",
        "run_00004",
    ]
    assert sweep_debris(runs_root) == [debris]  # as the dashboard sweeps a runs root it opens
    again = import_log(runs_root, text, source="x.csv")
    assert again.existing == ["run_00000", "run_00001"] and len(again.imported) == 3
    assert sorted(os.listdir(runs_root)) == [f"run_{i:05d}" for i in range(5)]
