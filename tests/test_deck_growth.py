"""Decks that grow: an uploaded deck (our CSV, Anki's own CSV export, an .apkg from genanki or from
Anki) is read with its GUIDs, hostile uploads are refused without being unpacked, new cards made by
the bundled model skip what the deck has, and a real Anki collection (the `anki` package, Anki's
own backend) imports the grown deck as only the new notes new, the old ones matched by GUID."""

import io
import sqlite3
import zipfile
from pathlib import Path

import pytest
from anki.collection import Collection, ImportAnkiPackageOptions, ImportAnkiPackageRequest, ImportCsvRequest
from anki.import_export_pb2 import ExportAnkiPackageOptions

from core.cards import decks
from core.cards.anki import Card, apkg_bytes, cards_to_csv, note_guid
from core.cards.decks import DeckFileError, read_deck
from core.cards.generation import CardRequest, generate_cards
from core.models.gguf import GgufModel
from core.models.sources import bundled_path
from core.store.csv_cells import FORMULA_STARTS

DECK = "Biology 101"
OLD = [
    Card("What do mitochondria produce?", "ATP, the cell's <energy> currency."),
    Card("Which organelle holds chlorophyll?", "The chloroplast."),
    Card("What does the cell membrane do?", "It controls what enters & leaves the cell."),
]


def anki(tmp_path: Path) -> Collection:
    """A fresh, empty Anki collection in a temp folder."""
    return Collection(str(tmp_path / "collection.anki2"))


def import_apkg(collection: Collection, data: bytes, tmp_path: Path):
    path = tmp_path / "import.apkg"
    path.write_bytes(data)
    request = ImportAnkiPackageRequest(package_path=str(path), options=ImportAnkiPackageOptions())
    return collection.import_anki_package(request).log


def import_csv(collection: Collection, text: str, tmp_path: Path):
    path = tmp_path / "import.csv"
    path.write_text(text, encoding="utf-8")
    metadata = collection.get_csv_metadata(path=str(path), delimiter=None)
    return collection.import_csv(ImportCsvRequest(path=str(path), metadata=metadata)).log


def plain(cards) -> list[tuple[str, str, str]]:
    return sorted((card.front, card.back, card.guid) for card in cards)


EXPECTED = sorted((card.front, card.back, note_guid(DECK, card.front)) for card in OLD)


def test_our_csv_and_apkg_are_read_back_with_their_guids():
    for name, data in (
        ("deck.csv", cards_to_csv(OLD, DECK, "basic", ["cells"]).encode()),
        ("deck.apkg", apkg_bytes(OLD, DECK, "basic", ["cells"])),
    ):
        deck = read_deck(name, data)
        assert plain(deck.notes) == EXPECTED and deck.card_type == "basic" and deck.name == DECK
        assert all(card.html for card in deck.notes)  # Anki's HTML kept to write back unchanged


def test_ankis_own_csv_export_and_package_are_read(tmp_path):
    collection = anki(tmp_path)
    import_apkg(collection, apkg_bytes(OLD, DECK, "basic", []), tmp_path)
    exported = tmp_path / "notes.txt"
    collection.export_note_csv(
        out_path=str(exported),
        limit=None,
        with_html=True,
        with_tags=True,
        with_deck=True,
        with_notetype=True,
        with_guid=True,
    )
    package = tmp_path / "anki.apkg"
    collection.export_anki_package(
        out_path=str(package),
        options=ExportAnkiPackageOptions(with_scheduling=False, with_media=False, legacy=True),
        limit=None,
    )
    collection.close()
    assert exported.read_text().startswith("#separator:tab")
    for name, data in (("notes.txt", exported.read_bytes()), ("anki.apkg", package.read_bytes())):
        deck = read_deck(name, data)
        assert plain(deck.notes) == EXPECTED and deck.name == DECK and deck.card_type == "basic"


def test_a_cloze_deck_is_read_as_cloze():
    cloze = [Card("Plants release {{c1::oxygen}} in light.", "")]
    for name, data in (
        ("cloze.csv", cards_to_csv(cloze, DECK, "cloze", []).encode()),
        ("cloze.apkg", apkg_bytes(cloze, DECK, "cloze", [])),
    ):
        assert read_deck(name, data).card_type == "cloze"


def zipped(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_hostile_uploads_are_refused_without_unpacking_anything(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(decks, "MAX_COLLECTION_BYTES", 1024 * 1024)
    cases = {
        "a zip bomb": (zipped({"collection.anki2": b"\0" * (4 * 1024 * 1024)}), "unpacked"),
        "traversal": (zipped({"../../evil.anki2": b"x", "/etc/cron.d/x": b"y"}), "holds no Anki collection"),
        "not a zip": (b"PK\x03\x04 but not really", "not a zip archive"),
        "not SQLite": (zipped({"collection.anki2": b"hello"}), "not an SQLite database"),
        "newest format": (zipped({"collection.anki21b": b"\x28\xb5\x2f\xfd"}), "Support older Anki versions"),
    }
    for data, message in cases.values():
        with pytest.raises(DeckFileError, match=message):
            read_deck("deck.apkg", data)
    assert list(tmp_path.iterdir()) == []  # nothing was extracted anywhere
    monkeypatch.setattr(decks, "MAX_UPLOAD_BYTES", 10)
    with pytest.raises(DeckFileError, match="at most 10"):
        read_deck("deck.csv", b"x" * 11)


def test_a_damaged_collection_and_bad_csv_say_what_is_wrong(tmp_path):
    broken = tmp_path / "broken.anki2"
    with sqlite3.connect(broken) as db:
        db.execute("create table other (x)")
    with pytest.raises(DeckFileError, match="no notes table"):
        read_deck("deck.apkg", zipped({"collection.anki2": broken.read_bytes()}))
    with pytest.raises(DeckFileError, match="not UTF-8"):
        read_deck("deck.csv", b"\xff\xfe\x00garbage")
    with pytest.raises(DeckFileError, match="holds no notes"):
        read_deck("deck.csv", b"#separator:Comma\n#html:true\n")


@pytest.fixture(scope="module")
def smollm() -> GgufModel:
    return GgufModel(bundled_path())


def test_a_grown_deck_imports_into_anki_with_only_the_new_notes_new(smollm, tmp_path):
    request = CardRequest(topic="the water cycle", count=3, deck=DECK)
    first = generate_cards(smollm, request, seed=11)
    assert len(first.cards) == 3
    collection = anki(tmp_path)
    original = apkg_bytes(first.cards, DECK, "basic", [])
    assert len(import_apkg(collection, original, tmp_path).new) == 3

    deck = read_deck("deck.apkg", original)
    grown = generate_cards(
        smollm, CardRequest(topic="the water cycle", count=3, deck=DECK), avoid=deck.notes, seed=12
    )
    assert grown.cards, grown.summary()
    known = {card.front for card in deck.notes}
    assert not known & {card.front for card in grown.cards}
    skipped = [r for r in grown.rejected if r.reason == "already in the deck"]
    assert all(r.repeats in known for r in skipped)  # each skipped card names the note it repeats

    log = import_apkg(collection, apkg_bytes([*deck.notes, *grown.cards], DECK, "basic", []), tmp_path)
    assert len(log.new) == len(grown.cards)
    assert len(log.duplicate) + len(log.updated) == 3  # the old notes matched by GUID, not added again
    assert collection.note_count() == 3 + len(grown.cards)
    collection.close()


def test_a_grown_csv_updates_the_old_notes_in_anki(tmp_path):
    collection = anki(tmp_path)
    assert len(import_csv(collection, cards_to_csv(OLD, DECK, "basic", []), tmp_path).new) == 3
    deck = read_deck("deck.csv", cards_to_csv(OLD, DECK, "basic", []).encode())
    new = [Card("What is a ribosome?", "Where proteins are made.")]
    log = import_csv(collection, cards_to_csv([*deck.notes, *new], DECK, "basic", []), tmp_path)
    assert len(log.new) == 1 and collection.note_count() == 4
    collection.close()


def test_csv_cells_never_start_a_formula_and_anki_still_reads_them(tmp_path):
    formula_guid = next(
        f"Why is {n} odd?" for n in range(1000) if note_guid(DECK, f"Why is {n} odd?")[0] in FORMULA_STARTS
    )
    cards = [Card("=HYPERLINK(1) is what?", "+1"), Card(" @cmd is?", "-2"), Card(formula_guid, "Because.")]
    text = cards_to_csv(cards, DECK, "basic", ["-tag"])
    rows = [line for line in text.splitlines() if not line.startswith("#")]
    for row in rows:
        for cell in row[1:-1].split('","'):
            assert not cell.lstrip().startswith(FORMULA_STARTS), row
    collection = anki(tmp_path)
    import_csv(collection, text, tmp_path)
    fields = sorted(tuple(collection.get_note(nid).fields) for nid in collection.find_notes(""))
    assert sorted(decks.html_text(f[0]) for f in fields) == sorted(c.front.strip() for c in cards)
    assert sorted(decks.html_text(f[1]) for f in fields) == sorted(c.back for c in cards)
    log = import_csv(collection, text, tmp_path)  # the card with no GUID cell is matched by its front
    assert len(log.new) == 0 and collection.note_count() == 3
    collection.close()
