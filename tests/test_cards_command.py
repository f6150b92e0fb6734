"""`python -m core cards` as a user runs it: the bundled model, real CSV and .apkg files."""

import csv
import os
import sqlite3
import subprocess
import sys
import zipfile

from conftest import PROJECT_DIR, run_core

from core.cards.anki import Card, cards_to_csv, note_guid, write_apkg
from core.cards.decks import read_deck


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


def test_without_a_network_and_without_hf_hub_offline_the_command_does_not_stall(runs_root):
    # This machine has no route to the Hub (the normal state here): the variable is taken away, so
    # the command must find that out by itself, quickly, and use the bundled model.
    env = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
    command = [
        sys.executable,
        "-c",
        "from core.models.sources import hub_choice, resolve_model; "
        "import time; t = time.monotonic(); r = resolve_model(hub_choice()); "
        "print(r.choice.kind, round(time.monotonic() - t, 2))",
    ]
    done = subprocess.run(command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=60)
    kind, seconds = done.stdout.split()
    assert kind == "bundled" and float(seconds) < 5, done.stdout  # the Hub client's retries took ~20 s
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "core",
            "--runs-dir",
            str(runs_root),
            "cards",
            "volcanoes",
            "-n",
            "2",
            "--seed",
            "1",
        ],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert "the Hub cannot be reached" in done.stderr and "bundled model instead" in done.stderr


def test_a_deck_grows_from_the_command_line_keeping_its_notes(runs_root, tmp_path):
    old = [
        Card("What do mitochondria produce?", "ATP."),
        Card("Which organelle holds chlorophyll?", "Chloroplasts."),
    ]
    write_apkg(old, "Biology", "basic", [], tmp_path / "old.apkg")
    done = run_core(
        "cards",
        "cells",
        "-n",
        "2",
        "--model",
        "bundled",
        "--seed",
        "5",
        "--grow",
        str(tmp_path / "old.apkg"),
        "--apkg",
        str(tmp_path / "grown.apkg"),
        runs_root=runs_root,
    )
    assert done.returncode == 0, done.stderr
    grown = read_deck("grown.apkg", (tmp_path / "grown.apkg").read_bytes())
    assert grown.name == "Biology"
    guids = {card.front: card.guid for card in grown.notes}
    assert all(guids[card.front] == note_guid("Biology", card.front) for card in old)
    made = [line for line in done.stdout.splitlines() if line[:1].isdigit()]  # "1. front" per new card
    assert made and len(grown.notes) == 2 + len(made)
    (tmp_path / "cloze.csv").write_text(cards_to_csv([Card("Cells hold {{c1::DNA}}.", "")], "B", "cloze", []))
    done = run_core("cards", "cells", "--grow", str(tmp_path / "cloze.csv"), runs_root=runs_root)
    assert done.returncode == 1 and "holds cloze notes: add --type cloze" in done.stderr
