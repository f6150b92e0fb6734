"""Anki export: study cards as a CSV file Anki imports, or as an .apkg package (genanki).

Re-importing an edited deck must update notes, not duplicate them, so every id is stable:
the note types have fixed ids, the deck id comes from the deck name, and a note's guid comes
from the deck name and the card's front. Fields are HTML, so plain text is escaped.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import itertools
import os
import re
import sqlite3
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.store.csv_cells import neutralise_cell

CARD_TYPES = ("basic", "cloze")

# Fixed forever: a new id makes Anki create a new note type on the next import.
BASIC_MODEL_ID = 1_842_115_061
CLOZE_MODEL_ID = 1_842_115_062

CLOZE_DELETION = re.compile(r"\{\{c[1-9]\d*::(.+?)\}\}", re.DOTALL)
_TAG_PARTS = re.compile(r"::|[\w\s-]")
_CSS = (
    ".card {\n font-family: arial;\n font-size: 20px;\n text-align: center;\n"
    " color: black;\n background-color: white;\n}\n"
)
_CLOZE_CSS = (
    _CSS + ".cloze {\n font-weight: bold;\n color: blue;\n}\n.nightMode .cloze {\n color: lightblue;\n}\n"
)


@dataclass(frozen=True)
class Card:
    """One flashcard. For cloze cards `front` holds the `{{c1::...}}` text and `back` the extra text.

    A note of an uploaded deck also keeps its `guid` and its fields as Anki holds them (`html`),
    so that an export writes it back unchanged and Anki updates it instead of adding a copy.
    """

    front: str
    back: str
    guid: str = ""
    html: tuple[str, str] | None = None

    def fields_html(self) -> tuple[str, str]:
        """The two fields as Anki HTML: an uploaded note's own, else the plain text escaped."""
        return self.html or (field_html(self.front), field_html(self.back))


def deck_id(name: str) -> int:
    """A stable deck id in [2**30, 2**31) derived from the deck name."""
    digest = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")
    return (1 << 30) + digest % (1 << 30)


def slugify_tag(text: str) -> str:
    """One Anki tag: whitespace runs become "_", only letters, digits, "_", "-" and "::" kept, lower case."""
    kept = "".join(_TAG_PARTS.findall(text)).strip()
    tag = re.sub(r"\s+", "_", kept).lower()
    return re.sub(r"_*(?:::_*)+", "::", tag).strip(":").lstrip("-")  # "-x" would start a formula


def normalize_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Slugified tags, empty ones dropped, duplicates removed keeping the first."""
    return tuple(dict.fromkeys(tag for tag in map(slugify_tag, tags) if tag))


def note_guid(deck: str, front: str) -> str:
    """A note's guid: the same deck and front give the same note in Anki, whatever the back says."""
    import genanki

    return genanki.guid_for(deck, front)


def card_guid(card: Card, deck: str) -> str:
    """The guid a card is exported with: an uploaded note's own, else note_guid."""
    return card.guid or note_guid(deck, card.front)


def csv_html(text: str) -> str:
    """An HTML field for the CSV that no spreadsheet takes for a formula, and Anki shows unchanged:
    leading whitespace and a leading =, +, - or @ become character references (&#61; for =)."""
    if neutralise_cell(text) == text or text.startswith("'"):
        return text
    stripped = text.lstrip()
    lead = text[: len(text) - len(stripped)]
    return "".join(f"&#{ord(c)};" for c in lead + stripped[:1]) + stripped[1:]


def field_html(text: str) -> str:
    """Plain text as an Anki HTML field: escaped, newlines as <br>; cloze markers stay intact."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return html.escape(text, quote=True).replace("\n", "<br>")


def _checked_deck(cards: Sequence[Card], deck: str, card_type: str) -> str:
    """Validate an export; return the deck name on one line (a newline would break a CSV header)."""
    if card_type not in CARD_TYPES:
        raise ValueError(f"unknown card type {card_type!r}; expected one of {', '.join(CARD_TYPES)}")
    if not cards:
        raise ValueError("there are no cards to export")
    name = " ".join(deck.split())
    if not name:
        raise ValueError("the deck name is empty")
    if neutralise_cell(name) != name:
        raise ValueError("the deck name cannot start with =, +, - or @ (a spreadsheet would run it)")
    first_seen: dict[str, int] = {}
    for number, card in enumerate(cards, start=1):
        if card_type == "cloze" and not CLOZE_DELETION.search(card.front):
            raise ValueError(
                f"card {number} is a cloze card without a {{{{c1::...}}}} marker: {card.front[:60]!r}"
            )
        if card_type == "basic" and not card.front.strip():
            raise ValueError(f"card {number} has an empty front")
        if card.front in first_seen:
            raise ValueError(
                f"cards {first_seen[card.front]} and {number} have the same front; Anki would merge them into one note"
            )
        first_seen[card.front] = number
    return name


def cards_to_csv(cards: Sequence[Card], deck: str, card_type: str, tags: Iterable[str]) -> str:
    """The cards as an Anki CSV file (Anki 2.1.55+ headers: note type, deck, tags and guid columns)."""
    name = _checked_deck(cards, deck, card_type)
    columns = "Front,Back" if card_type == "basic" else "Text,Back Extra"
    header = [
        "#separator:Comma",
        "#html:true",
        f"#notetype:{'Basic' if card_type == 'basic' else 'Cloze'}",
        f"#deck:{name}",
        f"#columns:{columns},Tags,GUID,Deck",
        "#tags column:3",
        "#guid column:4",
        "#deck column:5",  # #deck only preselects an existing deck; a deck column creates it
    ]
    tag_text = " ".join(normalize_tags(tags))
    out = io.StringIO()
    # Quote every field: Anki skips any data line starting with "#" as a comment.
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
    for card in cards:
        writer.writerow([*map(csv_html, card.fields_html()), tag_text, csv_guid(card_guid(card, name)), name])
    return "\n".join(header) + "\n" + out.getvalue()


def csv_guid(guid: str) -> str:
    """A GUID cell: empty for a GUID that starts like a formula (about 1 in 23 of genanki's), which
    no character reference can hide; Anki then matches that note by its first field."""
    return guid if neutralise_cell(guid) == guid else ""


def _model(card_type: str) -> Any:
    """The genanki note type for a card type, with its fixed id."""
    import genanki

    if card_type == "basic":
        return genanki.Model(
            BASIC_MODEL_ID,
            "Study Cards Basic",
            fields=[{"name": "Front"}, {"name": "Back"}],
            templates=[
                {"name": "Card 1", "qfmt": "{{Front}}", "afmt": "{{FrontSide}}\n\n<hr id=answer>\n\n{{Back}}"}
            ],
            css=_CSS,
        )
    return genanki.Model(
        CLOZE_MODEL_ID,
        "Study Cards Cloze",
        fields=[{"name": "Text"}, {"name": "Back Extra"}],
        templates=[{"name": "Cloze", "qfmt": "{{cloze:Text}}", "afmt": "{{cloze:Text}}<br>\n{{Back Extra}}"}],
        css=_CLOZE_CSS,
        model_type=genanki.Model.CLOZE,
    )


def _write_zip(cards: Sequence[Card], deck: str, card_type: str, tags: Iterable[str], target: Path) -> None:
    """Write the package to `target`, like genanki's Package.write_to_file but without its leak.

    write_to_file builds the SQLite collection in a tempfile.mkstemp() file in the system temp
    folder and never deletes it (nor on errors); here it lives in a directory removed afterwards.
    """
    import genanki

    name = _checked_deck(cards, deck, card_type)
    model, tag_list = _model(card_type), list(normalize_tags(tags))
    package_deck = genanki.Deck(deck_id(name), name)
    for card in cards:
        package_deck.add_note(
            genanki.Note(
                model=model,
                fields=list(card.fields_html()),
                tags=tag_list,
                guid=card_guid(card, name),
            )
        )
    with tempfile.TemporaryDirectory(prefix="anki-export-") as scratch:
        db_path = Path(scratch) / "collection.anki2"
        connection = sqlite3.connect(db_path)
        try:
            now = time.time()
            genanki.Package(package_deck).write_to_db(
                connection.cursor(), now, itertools.count(int(now * 1000))
            )
            connection.commit()
        finally:
            connection.close()
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.write(db_path, "collection.anki2")
            archive.writestr("media", "{}")


def write_apkg(cards: Sequence[Card], deck: str, card_type: str, tags: Iterable[str], path: Path) -> None:
    """Write the cards as an .apkg package to `path`, atomically: a failure leaves no file behind."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        _write_zip(cards, deck, card_type, tags, tmp)
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def apkg_bytes(cards: Sequence[Card], deck: str, card_type: str, tags: Iterable[str]) -> bytes:
    """The .apkg package as bytes (for a download button); nothing stays on disk."""
    with tempfile.TemporaryDirectory(prefix="anki-export-") as scratch:
        target = Path(scratch) / "deck.apkg"
        write_apkg(cards, deck, card_type, tags, target)
        return target.read_bytes()
