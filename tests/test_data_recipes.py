"""Data before a run: stats of a dataset measured with the run's tokenizer (cached by fingerprint),
recipes that select and hold out rows with a content hash, and the `data` command line."""

import json

import pandas as pd
import pytest
from conftest import run_core, write_conversations

from core.cli import main
from core.data.recipes import (
    RecipeError,
    RecipeSpec,
    build_recipe,
    load_recipe,
    new_run_files,
    recipe_conversations,
    save_recipe,
    select_rows,
)
from core.data.sources import DataSource, load_source, save_upload
from core.data.stats import (
    duplicate_rows,
    length_summary,
    load_tokenizer,
    problems,
    row_stats,
    source_counts,
    summary,
    turn_counts,
)
from core.data.synthetic import synthetic_rows, write_synthetic
from core.train.config import parse_config
from core.train.data import (
    IGNORED_LABEL,
    DataError,
    load_conversations,
    tokenize_conversation,
    tokenizer_adds_bos,
)

SCORED = "data/sample_scored.jsonl"


@pytest.fixture
def tokenizer(tiny_model):
    return load_tokenizer("tiny-llama")


def measured(path, tokenizer, split="train"):
    return row_stats(DataSource(str(path), split), tokenizer, "tiny-llama")


def test_stats_count_what_training_would_train_on(tokenizer):
    stats = measured(SCORED, tokenizer)
    table = stats.table
    assert len(table) == 600 and problems(table) == {}
    conversations, _ = load_conversations(SCORED, "train")
    needs_bos = tokenizer_adds_bos(tokenizer)
    for index in range(0, 600, 37):  # the training tokenization, row by row, agrees
        row = tokenize_conversation(tokenizer, conversations[index], True, needs_bos)
        answers = sum(m["role"] == "assistant" for m in conversations[index])
        assert table["tokens"][index] == len(row["input_ids"])
        # the stats count the answers' text; training also trains each answer's end-of-turn token
        trained = sum(label != IGNORED_LABEL for label in row["labels"])
        assert table["answer_tokens"][index] == trained - answers
        assert table["turns"][index] == sum(m["role"] != "system" for m in conversations[index])
    lengths = length_summary(table, 256)
    over = table["tokens"][table["tokens"] > 256]
    assert lengths.truncated_rows == len(over) > 0 and lengths.tokens_lost == int((over - 256).sum())
    assert lengths.quantiles[1.0] == table["tokens"].max() and 0.5 < lengths.answer_share < 1
    rows = synthetic_rows(600)
    assert dict(source_counts(table)) == dict(pd.Series([r["source"] for r in rows]).value_counts())
    assert duplicate_rows(table) == len(rows) - len({json.dumps(r["conversations"]) for r in rows}) > 0
    assert sum(turn_counts(table).values()) == 600
    report = summary(stats, 256)
    assert report["score"]["min"] >= 3.0 and report["score"]["max"] <= 5.2


def test_both_formats_and_unusable_rows_are_measured(tokenizer, tmp_path):
    sharegpt = write_conversations(
        tmp_path / "a.jsonl", [[("human", "Hi"), ("gpt", "Hello!")], [("human", "x")]]
    )
    messages = tmp_path / "b.jsonl"
    messages.write_text(
        json.dumps(
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
        )
        + "\n"
        + json.dumps({"messages": [{"role": "robot", "content": "beep"}]})
        + "\n"
    )
    first, second = measured(sharegpt, tokenizer).table, measured(messages, tokenizer).table
    assert first["tokens"][0] == second["tokens"][0] > 0  # the same conversation, either form
    assert first["row_hash"][0] == second["row_hash"][0]
    assert problems(first) == {"no assistant turn": 1} and problems(second) == {"unknown role": 1}
    assert first["source"].isna().all() and first["score"].isna().all()
    parquet = tmp_path / "c.parquet"
    pd.DataFrame(synthetic_rows(20)).to_parquet(parquet)
    assert len(measured(parquet, tokenizer).table) == 20


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        ('{"conversations": []}\nnot json\n', "bad.jsonl", "JSON parse error"),
        ('{"text": "hello"}\n', "plain.jsonl", "has no 'conversations'"),
        ("", "empty.jsonl", "cannot read empty.jsonl"),
        ("PAR1 not parquet", "broken.parquet", "cannot read broken.parquet"),
    ],
)
def test_unreadable_files_are_refused_with_the_reason(tmp_path, content, name, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_source(DataSource(str(path)))


def test_sources_that_name_nothing_usable_are_refused():
    for source, message in [
        (DataSource("missing.jsonl"), "no such file"),
        (DataSource("not a dataset"), "neither a dataset file nor a Hub id"),
        (DataSource(SCORED, "test"), "one split, 'train'"),
        (DataSource(SCORED, "train[:x]"), "not a split"),
    ]:
        with pytest.raises(DataError, match=message):
            load_source(source)


def test_a_second_look_reads_the_cache_and_a_changed_file_is_measured_again(tokenizer, tmp_path):
    path = write_synthetic(tmp_path / "rows.jsonl", 2500)
    first = measured(path, tokenizer)
    assert first.measured_shards == 1
    again = measured(path, tokenizer)
    assert again.measured_shards == 0 and again.table.equals(first.table)
    sliced = measured(path, tokenizer, "train[:100]")  # another selection is another fingerprint
    assert sliced.measured_shards == 1 and sliced.table.equals(first.table.iloc[:100])
    tokenizer.chat_template = tokenizer.chat_template.replace("<|eot_id|>", "<|eot_id|>\n")
    assert measured(path, tokenizer).measured_shards == 1  # another template is measured again
    write_synthetic(path, 2500, seed=7)
    changed = measured(path, tokenizer)
    assert changed.measured_shards == 1 and not changed.table["row_hash"].equals(first.table["row_hash"])


def spec(**values):
    return RecipeSpec(source=DataSource(SCORED), model="tiny-llama", **values)


def test_filters_mix_sample_and_hold_out(tokenizer):
    stats = measured(SCORED, tokenizer)
    table = stats.table
    score = pd.to_numeric(table["score"])
    chosen = select_rows(spec(min_score=4.5, sources=("synthetic-qa",), max_tokens=400), stats)
    rows = table.loc[chosen.train]
    assert (pd.to_numeric(rows["score"]) >= 4.5).all() and (rows["source"] == "synthetic-qa").all()
    assert (rows["tokens"] <= 400).all() and not rows["row_hash"].duplicated().any()
    assert [label for label, _ in chosen.funnel][:3] == [
        "rows read",
        "usable conversations",
        "score in [4.5, inf]",
    ]
    top = select_rows(spec(take="top-score", rows=50, validation=0.1, drop_duplicates=False), stats)
    picked = top.train + top.validation
    assert len(top.train) == 45 and len(top.validation) == 5 and not set(top.train) & set(top.validation)
    assert score[picked].min() >= score.drop(picked).max() - 1e-9  # the 50 highest scores
    weights = select_rows(spec(mix={"synthetic-qa": 3, "synthetic-chat": 1}, rows=80), stats)
    sources = table.loc[weights.train, "source"].value_counts()
    assert dict(sources) == {"synthetic-qa": 60, "synthetic-chat": 20}
    counts = select_rows(spec(mix={"synthetic-chat": 500}), stats)
    assert len(counts.train) < 500 and "500 rows asked" in counts.notes[0]
    assert select_rows(spec(rows=80, seed=1), stats).train == select_rows(spec(rows=80, seed=1), stats).train
    assert select_rows(spec(rows=80, seed=1), stats).train != select_rows(spec(rows=80, seed=2), stats).train
    dataset = load_source(DataSource(SCORED))
    matched = select_rows(spec(match="black holes", exclude="Historically"), stats, dataset)
    texts = [json.dumps(dataset[i]["conversations"]) for i in matched.train]
    assert texts and all("black holes" in t and "Historically" not in t for t in texts)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"min_score": 9.0}, "selects no rows to train on"),
        ({"sources": ("nowhere",)}, "source in nowhere: 0"),
        ({"match": "("}, "not a regular expression"),
        ({"validation": 0.9}, "validation share must be between 0 and 0.5"),
        ({"mix": {"synthetic-qa": 0.5}}, "a mix of weights needs a number of rows"),
        ({"min_tokens": 500, "max_tokens": 100}, "min tokens 500 is above max tokens 100"),
    ],
)
def test_a_recipe_that_selects_nothing_is_refused_and_nothing_is_saved(tokenizer, runs_root, values, message):
    stats = measured(SCORED, tokenizer)
    with pytest.raises(RecipeError, match=message):
        save_recipe(runs_root, build_recipe("empty", spec(**values), stats))
    assert not (runs_root / ".recipes").exists()


def test_a_recipe_pins_a_run_to_its_rows_and_detects_changed_data(tokenizer, runs_root, tmp_path):
    path = write_synthetic(tmp_path / "rows.jsonl", 300)
    stats = measured(path, tokenizer)
    document = build_recipe(
        "r", RecipeSpec(DataSource(str(path)), "tiny-llama", rows=100, validation=0.2), stats
    )
    save_recipe(runs_root, document)
    with pytest.raises(RecipeError, match="exists"):
        save_recipe(runs_root, document)
    config, documents = new_run_files(parse_config({"recipe": "r", "base_model": "tiny-llama"}), runs_root)
    assert config.recipe == f"r@{document['hash'][:16]}" and config.dataset == str(path)
    assert documents["recipe.json"]["train_rows"] == document["train_rows"]
    train, validation, report = recipe_conversations(load_recipe(runs_root, "r"))
    assert (len(train), len(validation)) == (80, 20) and "recipe r@" in report.source
    for pinned, problem in [("r@00000000", "has changed since"), ("gone", "no recipe named gone")]:
        with pytest.raises(RecipeError, match=problem):
            new_run_files(parse_config({"recipe": pinned}), runs_root)
    with pytest.raises(RecipeError, match="early stopping watches the validation loss"):
        new_run_files(parse_config({"early_stopping_patience": 2}), runs_root)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[document["train_rows"][3]]["conversations"][-1]["value"] = "changed"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    with pytest.raises(DataError, match="no longer holds the rows"):
        recipe_conversations(load_recipe(runs_root, "r"))


def test_planted_or_malformed_recipes_are_refused(runs_root):
    folder = runs_root / ".recipes"
    folder.mkdir(parents=True)
    (folder / "bad.json").write_text(
        json.dumps({"name": "bad", "source": {"dataset": SCORED, "split": "train"}, "model": "m"})
    )
    (folder / "rows.json").write_text(
        json.dumps(
            {
                "name": "rows",
                "source": {"dataset": SCORED, "split": "train"},
                "model": "x",
                "hash": "0" * 64,
                "train_rows": ["../../etc/passwd"],
                "validation_rows": [],
            }
        )
    )
    (folder / "link.json").symlink_to(folder / "rows.json")
    for name, message in [
        ("bad", "no content hash"),
        ("rows", "list of row numbers"),
        ("link", "cannot read"),
    ]:
        with pytest.raises(RecipeError, match=message):
            load_recipe(runs_root, name)
    with pytest.raises(RecipeError, match="not a recipe name"):
        load_recipe(runs_root, "../x")


def test_uploads_are_kept_by_content_and_bounded(runs_root):
    data = b'{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]}\n'
    path = save_upload(runs_root, "../../evil name.jsonl", data)
    assert path.parent == runs_root / ".datasets" and path.read_bytes() == data
    assert save_upload(runs_root, "again.jsonl", data) == path
    for name, content, message in [
        ("x.exe", data, "upload a"),
        ("x.jsonl", b"  \n", "is empty"),
        ("x.jsonl", b"x" * (5 * 2**20 + 1), "uploads are at most 5 MB"),
    ]:
        with pytest.raises(DataError, match=message):
            save_upload(runs_root, name, content)


def command(capsys, root, *args: str) -> tuple[int, str, str]:
    """`python -m core --runs-dir ROOT data ARGS...` in this process."""
    code = main(["--runs-dir", str(root), "data", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_data_command_prints_stats_and_saves_recipes(tiny_model, runs_root, capsys):
    done = run_core(
        "data",
        "stats",
        SCORED,
        "--model",
        "tiny-llama",
        "--max-seq-length",
        "256",
        "--json",
        runs_root=runs_root,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["rows"] == 600 and report["tokens"]["max_seq_length"] == 256 and report["sources"]
    code, out, _ = command(capsys, runs_root, "stats", SCORED, "--model", "tiny-llama")
    assert code == 0 and "all from the cache" in out and "would be cut" in out
    code, out, err = command(
        capsys, runs_root, "recipe", "best", "--source", SCORED, "--model", "tiny-llama", "--min-score", "4.5",
        "--sources", "synthetic-qa,synthetic-howto", "--rows", "100", "--validation", "0.05",
    )  # fmt: skip
    assert code == 0, err
    assert "95 rows to train on, 5 held out" in out and "--set recipe=best" in out
    code, out, _ = command(capsys, runs_root, "recipes")
    assert out.startswith("best  data/sample_scored.jsonl [train]  95 train, 5 validation")
    for args, message in [
        (
            ["recipe", "none", "--source", SCORED, "--model", "tiny-llama", "--min-score", "9"],
            "selects no rows",
        ),
        (["recipe", "x", "--source", SCORED, "--mix", "a"], "--mix takes source=weight"),
        (["stats", "nothing.jsonl", "--model", "tiny-llama"], "no such file: nothing.jsonl"),
        (["recipe", "../x", "--source", SCORED, "--model", "tiny-llama"], "not a recipe name"),
    ]:
        code, _, err = command(capsys, runs_root, *args)
        assert code == 1 and message in err, (args, err)
    assert sorted(p.name for p in (runs_root / ".recipes").iterdir()) == ["best.json"]


def test_a_mix_by_weight_adds_up_to_its_rows(tokenizer):
    stats = measured(SCORED, tokenizer)
    for rows, mix in [
        (10, {"synthetic-qa": 1, "synthetic-howto": 1, "synthetic-chat": 1}),
        (3, {"synthetic-qa": 1, "synthetic-chat": 1}),
    ]:
        chosen = select_rows(spec(mix=mix, rows=rows), stats)
        assert len(chosen.train) == rows, (rows, mix)


def test_a_recipe_naming_a_row_twice_or_another_name_is_refused(tokenizer, runs_root):
    document = build_recipe("r", spec(rows=20, validation=0.2), measured(SCORED, tokenizer))
    folder = runs_root / ".recipes"
    folder.mkdir(parents=True)
    twice = {**document, "validation_rows": [document["train_rows"][0]], "train_count": 9999}
    (folder / "twice.json").write_text(json.dumps({**twice, "name": "twice"}))
    (folder / "other.json").write_text(json.dumps(document))  # a file whose recipe is named "r"
    with pytest.raises(RecipeError, match="names a row twice"):
        load_recipe(runs_root, "twice")
    with pytest.raises(RecipeError, match="names another recipe"):
        load_recipe(runs_root, "other")
    save_recipe(runs_root, {**document, "train_count": 9999})
    assert load_recipe(runs_root, "r")["train_count"] == 16  # counted from the rows, not taken from the file
