"""Anki export: CSV headers and rows, .apkg contents read back with sqlite3, stable ids, errors, no temp files."""

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import genanki
import pytest
from conftest import parse_csv, read_apkg

from core.cards.anki import (
    BASIC_MODEL_ID,
    CARD_TYPES,
    CLOZE_MODEL_ID,
    Card,
    apkg_bytes,
    cards_to_csv,
    deck_id,
    field_html,
    normalize_tags,
    note_guid,
    slugify_tag,
    write_apkg,
)

TRICKY = 'a < b & "c", d\nsecond line'
BASIC = [Card(TRICKY, "it's <b>bold</b>?"), Card("Capital of France?", "Paris")]
CLOZE = [
    Card("The {{c1::mitochondria}} is the {{c2::powerhouse}}.", "Biology 101"),
    Card("{{c1::H2O}} is water", ""),
]


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty tempfile.gettempdir(), so leftovers are ours and other processes cannot disturb the check."""
    folder = tmp_path / "system-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    assert tempfile.gettempdir() == str(folder)
    return folder


# --- small helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('a < b & "c"', "a &lt; b &amp; &quot;c&quot;"),
        ("it's", "it&#x27;s"),
        ("one\ntwo\r\nthree\rfour", "one<br>two<br>three<br>four"),
        ("The {{c1::capital}} of {{c2::France::country}}", "The {{c1::capital}} of {{c2::France::country}}"),
        ("{{c1::x < y}}", "{{c1::x &lt; y}}"),
        ("", ""),
    ],
)
def test_field_html_escapes_and_keeps_cloze_markers(text, expected):
    assert field_html(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Cell Biology", "cell_biology"),
        ("  tabs\tand \n newlines  ", "tabs_and_newlines"),
        ("Bio::Cells", "bio::cells"),
        ("Bio :: Cell Parts", "bio::cell_parts"),
        ("c++ & c#!", "c_c"),
        ("a:b", "ab"),
        ("::lead::::double::", "lead::double"),
        ("Ünïcode Wörds", "ünïcode_wörds"),
        ("x-ray", "x-ray"),
        ("!!!", ""),
        ("   ", ""),
    ],
)
def test_slugify_tag(text, expected):
    assert slugify_tag(text) == expected


def test_normalize_tags_drops_empty_and_duplicates_keeping_order():
    assert normalize_tags(["Zoo", "cell biology", "", "!!", "Cell Biology", "cell_biology", "zoo", "a"]) == (
        "zoo",
        "cell_biology",
        "a",
    )
    assert normalize_tags([]) == ()
    assert all(" " not in tag for tag in normalize_tags(["a b c", "d\te"]))


def test_deck_id_and_model_ids_are_fixed_and_in_ankis_range():
    assert deck_id("Biology") == deck_id("Biology") != deck_id("Chemistry")
    for value in (deck_id("Biology"), deck_id(""), deck_id("ü" * 500), BASIC_MODEL_ID, CLOZE_MODEL_ID):
        assert (1 << 30) <= value < (1 << 31)
    assert BASIC_MODEL_ID != CLOZE_MODEL_ID
    assert CARD_TYPES == ("basic", "cloze")


def test_note_guid_is_genankis_guid_for_deck_and_front():
    assert note_guid("Deck", "Front") == genanki.guid_for("Deck", "Front")
    assert (
        note_guid("Deck", "Front")
        != note_guid("Deck", "Other front")
        != note_guid("Other deck", "Other front")
    )


def test_import_does_not_load_genanki():
    code = (
        "import sys, core.cards.anki; assert 'genanki' not in sys.modules and 'streamlit' not in sys.modules"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


# --- CSV ---------------------------------------------------------------------------------------------


def test_csv_basic_headers_rows_escaping_tags_and_guids():
    header, rows = parse_csv(
        cards_to_csv(BASIC, "Biology", "basic", ["Cell Biology", "exam 1", "cell biology"])
    )
    assert header == [
        "#separator:Comma",
        "#html:true",
        "#notetype:Basic",
        "#deck:Biology",
        "#columns:Front,Back,Tags,GUID,Deck",
        "#tags column:3",
        "#guid column:4",
        "#deck column:5",
    ]
    assert rows == [
        [
            "a &lt; b &amp; &quot;c&quot;, d<br>second line",
            "it&#x27;s &lt;b&gt;bold&lt;/b&gt;?",
            "cell_biology exam_1",
            note_guid("Biology", TRICKY),
            "Biology",
        ],
        [
            "Capital of France?",
            "Paris",
            "cell_biology exam_1",
            note_guid("Biology", "Capital of France?"),
            "Biology",
        ],
    ]


def test_csv_cloze_headers_keep_markers():
    header, rows = parse_csv(cards_to_csv(CLOZE, "Biology", "cloze", []))
    assert "#notetype:Cloze" in header and "#columns:Text,Back Extra,Tags,GUID,Deck" in header
    assert rows[0] == [
        "The {{c1::mitochondria}} is the {{c2::powerhouse}}.",
        "Biology 101",
        "",
        note_guid("Biology", CLOZE[0].front),
        "Biology",
    ]
    assert rows[1][:2] == ["{{c1::H2O}} is water", ""]


def test_csv_deck_name_cannot_break_the_header():
    text = cards_to_csv(BASIC, "  Bio\n#notetype:Cloze\r\nlogy #1\u2028x ", "basic", [])
    header, rows = parse_csv(text)
    assert header[3] == "#deck:Bio #notetype:Cloze logy #1 x"
    assert len(header) == 8 and header[2] == "#notetype:Basic" and len(rows) == 2
    assert rows[0][3] == note_guid("Bio #notetype:Cloze logy #1 x", TRICKY)
    assert rows[0][4] == "Bio #notetype:Cloze logy #1 x"


def test_csv_rows_never_start_with_a_comment_marker():
    # Anki's CSV reader skips every line starting with "#", also after the header.
    text = cards_to_csv([Card("# of legs on a spider?", "8")], "Zoo", "basic", [])
    data_lines = text.splitlines()[8:]
    assert data_lines == [
        f'"# of legs on a spider?","8","","{note_guid("Zoo", "# of legs on a spider?")}","Zoo"'
    ]


# --- .apkg -------------------------------------------------------------------------------------------


def test_apkg_basic_notes_fields_tags_guids_model_and_deck(tmp_path):
    path = tmp_path / "biology.apkg"
    write_apkg(BASIC, "Biology", "basic", ["Cell Biology", "exam 1"], path)
    package = read_apkg(path.read_bytes(), tmp_path)
    assert [note["fields"] for note in package["notes"]] == [
        ["a &lt; b &amp; &quot;c&quot;, d<br>second line", "it&#x27;s &lt;b&gt;bold&lt;/b&gt;?"],
        ["Capital of France?", "Paris"],
    ]
    assert [note["guid"] for note in package["notes"]] == [note_guid("Biology", card.front) for card in BASIC]
    assert all(note["tags"] == ["cell_biology", "exam_1"] for note in package["notes"])
    assert {note["mid"] for note in package["notes"]} == {BASIC_MODEL_ID}
    did = deck_id("Biology")
    assert package["decks"][str(did)]["name"] == "Biology"
    assert [(nid, d, ord_) for nid, d, ord_ in package["cards"]] == [
        (n["id"], did, 0) for n in package["notes"]
    ]
    model = package["models"][str(BASIC_MODEL_ID)]
    assert model["type"] == 0 and [f["name"] for f in model["flds"]] == ["Front", "Back"]


def test_apkg_cloze_uses_the_cloze_model_and_keeps_markers(tmp_path):
    package = read_apkg(apkg_bytes(CLOZE, "Biology", "cloze", ["bio"]), tmp_path)
    assert {note["mid"] for note in package["notes"]} == {CLOZE_MODEL_ID}
    assert [note["fields"] for note in package["notes"]] == [[card.front, card.back] for card in CLOZE]
    model = package["models"][str(CLOZE_MODEL_ID)]
    assert model["type"] == 1 and [f["name"] for f in model["flds"]] == ["Text", "Back Extra"]
    assert "{{cloze:Text}}" in model["tmpls"][0]["qfmt"]
    first, second = (note["id"] for note in package["notes"])
    assert [(nid, ord_) for nid, _, ord_ in package["cards"]] == [(first, 0), (first, 1), (second, 0)]


def test_guids_are_stable_across_exports_and_follow_the_front(tmp_path):
    once = read_apkg(apkg_bytes(BASIC, "Biology", "basic", []), tmp_path)
    twice = read_apkg(apkg_bytes(BASIC, "Biology", "basic", []), tmp_path)
    assert [n["guid"] for n in once["notes"]] == [n["guid"] for n in twice["notes"]]

    edited_back = [Card(BASIC[0].front, "a new answer"), BASIC[1]]
    edited_front = [Card("Capital of Italy?", "Rome"), BASIC[1]]
    after_back = read_apkg(apkg_bytes(edited_back, "Biology", "basic", []), tmp_path)
    after_front = read_apkg(apkg_bytes(edited_front, "Biology", "basic", []), tmp_path)
    assert [n["guid"] for n in after_back["notes"]] == [n["guid"] for n in once["notes"]]
    assert after_front["notes"][0]["guid"] != once["notes"][0]["guid"]
    assert after_front["notes"][1]["guid"] == once["notes"][1]["guid"]

    _, rows = parse_csv(cards_to_csv(BASIC, "Biology", "basic", []))
    assert [row[3] for row in rows] == [n["guid"] for n in once["notes"]]


def test_apkg_deck_name_is_the_same_one_line_name_as_in_the_csv(tmp_path):
    package = read_apkg(apkg_bytes(BASIC, " Bio\nlogy ", "basic", []), tmp_path)
    assert package["decks"][str(deck_id("Bio logy"))]["name"] == "Bio logy"
    assert package["notes"][0]["guid"] == note_guid("Bio logy", TRICKY)


# --- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cards", "deck", "card_type", "message"),
    [
        (BASIC, "Biology", "reversed", "unknown card type 'reversed'"),
        ([], "Biology", "basic", "no cards"),
        (BASIC, "", "basic", "deck name is empty"),
        (BASIC, " \n\t", "basic", "deck name is empty"),
        (
            [CLOZE[0], Card("no marker here", "x")],
            "Biology",
            "cloze",
            "card 2 is a cloze card without a {{c1::...}}",
        ),
        ([Card("{{c1::}} empty", "")], "Biology", "cloze", "card 1 is a cloze card"),
        ([Card("  ", "back")], "Biology", "basic", "card 1 has an empty front"),
        (
            [Card("Q", "a"), Card("R", "b"), Card("Q", "c")],
            "Biology",
            "basic",
            "cards 1 and 3 have the same front",
        ),
    ],
)
def test_invalid_exports_raise_a_clear_value_error(tmp_path, private_tmp, cards, deck, card_type, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        cards_to_csv(cards, deck, card_type, [])
    with pytest.raises(ValueError, match=re.escape(message)):
        write_apkg(cards, deck, card_type, [], tmp_path / "out.apkg")
    with pytest.raises(ValueError, match=re.escape(message)):
        apkg_bytes(cards, deck, card_type, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["system-tmp"]
    assert list(private_tmp.iterdir()) == []


# --- files left behind -------------------------------------------------------------------------------


def test_genanki_write_to_file_leaves_its_sqlite_file_in_the_temp_folder(tmp_path, private_tmp):
    # Why core.cards.anki does not call Package.write_to_file: this is the leak, and this fixture sees it.
    genanki.Package(genanki.Deck(deck_id("x"), "x")).write_to_file(str(tmp_path / "plain.apkg"))
    leftovers = list(private_tmp.iterdir())
    assert len(leftovers) == 1 and leftovers[0].read_bytes().startswith(b"SQLite format 3")


def test_exports_leave_no_temp_files(tmp_path, private_tmp):
    target_dir = tmp_path / "exports"
    target_dir.mkdir()
    (target_dir / "other.txt").write_text("keep me")
    write_apkg(BASIC, "Biology", "basic", ["a"], target_dir / "biology.apkg")
    write_apkg(CLOZE, "Biology", "cloze", ["a"], target_dir / "biology.apkg")  # overwrite
    assert apkg_bytes(BASIC, "Biology", "basic", [])[:2] == b"PK"
    assert sorted(p.name for p in target_dir.iterdir()) == ["biology.apkg", "other.txt"]
    assert list(private_tmp.iterdir()) == []
    assert (
        read_apkg((target_dir / "biology.apkg").read_bytes(), tmp_path)["notes"][0]["mid"] == CLOZE_MODEL_ID
    )


def test_failed_write_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, private_tmp):
    path = tmp_path / "deck.apkg"
    write_apkg(BASIC, "Biology", "basic", [], path)
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_apkg([Card("no marker", "")], "Biology", "cloze", [], path)
    assert path.read_bytes() == before

    blocked = tmp_path / "blocked.apkg"  # a non-empty folder: os.replace fails after the package is written
    blocked.mkdir()
    (blocked / "inside").write_text("x")
    with pytest.raises(OSError):
        write_apkg(BASIC, "Biology", "basic", [], blocked)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked.apkg", "deck.apkg", "system-tmp"]
    assert [p.name for p in blocked.iterdir()] == ["inside"]

    with pytest.raises(OSError):
        write_apkg(BASIC, "Biology", "basic", [], tmp_path / "missing-folder" / "deck.apkg")
    assert not (tmp_path / "missing-folder").exists()
    assert list(private_tmp.iterdir()) == []
    assert os.listdir(tmp_path) and path.read_bytes() == before
