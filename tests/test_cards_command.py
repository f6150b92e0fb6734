"""`python -m core cards` as a user runs it: the bundled model, real CSV and .apkg files."""

import csv
import sqlite3
import zipfile

from conftest import run_core


def test_cards_from_a_topic_are_written_as_csv_and_apkg(runs_root, tmp_path):
    done = run_core(
        "cards",
        "volcanoes",
        "-n",
        "3",
        "--model",
        "bundled",
        "--seed",
        "1",
        "--tags",
        "Earth Science",
        "--csv",
        str(tmp_path / "deck.csv"),
        "--apkg",
        str(tmp_path / "deck.apkg"),
        runs_root=runs_root,
    )
    assert done.returncode == 0, done.stderr
    assert "3 of 3 cards" in done.stderr and "unreliable" in done.stderr  # the bundled model's caveat
    lines = (tmp_path / "deck.csv").read_text(encoding="utf-8").splitlines()
    assert "#deck:Study cards: volcanoes" in lines
    rows = list(csv.reader(line for line in lines if not line.startswith("#")))
    assert len(rows) == 3 and all(row[2] == "earth_science" for row in rows)
    with zipfile.ZipFile(tmp_path / "deck.apkg") as package:
        (tmp_path / "collection.anki2").write_bytes(package.read("collection.anki2"))
    with sqlite3.connect(tmp_path / "collection.anki2") as db:
        fronts = [row[0].split("\x1f")[0] for row in db.execute("select flds from notes")]
    assert sorted(fronts) == sorted(row[0] for row in rows)


def test_bad_card_requests_fail_with_one_line(runs_root, tmp_path):
    done = run_core("cards", "-n", "3", "--model", "bundled", runs_root=runs_root)
    assert (
        done.returncode == 1
        and done.stderr.strip() == "error: topic: give a topic or paste notes to make cards from"
    )
    done = run_core("cards", "rivers", "-n", "30", "--model", "bundled", runs_root=runs_root)
    assert done.returncode == 1 and "count: must be a whole number from 1 to 20" in done.stderr
    (tmp_path / "model.gguf").write_text("not a model")
    done = run_core("cards", "rivers", "--model", str(tmp_path / "model.gguf"), runs_root=runs_root)
    assert (
        done.returncode == 1
        and done.stderr.strip() == "error: model.gguf is not a GGUF file (llama.cpp models start with 'GGUF')"
    )
    done = run_core("cards", "--notes", str(tmp_path / "missing.md"), runs_root=runs_root)
    assert done.returncode == 1 and "cannot read notes" in done.stderr
