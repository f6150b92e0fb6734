"""An existing deck read from an upload, so that new cards can be added without duplicates.

Three formats: this project's CSV, Anki's own CSV export ("Notes in Plain Text" with its
`#...` headers) and an `.apkg` package (a zip holding an SQLite collection). Uploads are
hostile: the file's size is capped, the package is never extracted (one member is read by
name, with a cap on its uncompressed size, so no path traversal, no links followed, no zip
bomb), and the collection is opened from memory, read only. Each note keeps its GUID and its
fields as Anki holds them, so that the grown deck's export updates them in Anki.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
import sqlite3
import zipfile
from dataclasses import dataclass

from core.cards.anki import CLOZE_DELETION, Card

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_COLLECTION_BYTES = 100 * 1024 * 1024
MAX_ZIP_ENTRIES = 10_000
MAX_NOTES = 20_000
COLLECTIONS = ("collection.anki21", "collection.anki2")  # newest legacy format first
_TAG = re.compile(r"<[^>]*>")
_SEPARATORS = {"comma": ",", "semicolon": ";", "tab": "\t", "space": " ", "pipe": "|", "colon": ":"}
_SQLITE_MAGIC = b"SQLite format 3\x00"


class DeckFileError(ValueError):
    """An uploaded deck that cannot be read, with what to do about it."""


@dataclass(frozen=True)
class ExistingDeck:
    """The notes of an uploaded deck (cards with their GUIDs and HTML fields), its name and card type."""

    notes: tuple[Card, ...]
    card_type: str
    name: str = ""


def html_text(field: str) -> str:
    """An Anki HTML field as plain text: line breaks kept, tags dropped, entities decoded."""
    text = re.sub(r"<br\s*/?>", "\n", field, flags=re.IGNORECASE)
    return html.unescape(_TAG.sub("", text)).strip()


def _note(fields: list[str], guid: str, is_html: bool) -> Card | None:
    """A Card for a note's first two fields (None for a note whose first field is empty)."""
    front, back = (fields + ["", ""])[:2]
    if not is_html:
        return Card(front.strip(), back.strip(), guid=guid) if front.strip() else None
    text = html_text(front)
    return Card(text, html_text(back), guid=guid, html=(front, back)) if text else None


def _card_type(names: list[str], notes: list[Card]) -> str:
    """cloze when the note types say so or every note has a cloze deletion, else basic."""
    if any("cloze" in name.lower() for name in names):
        return "cloze"
    return "cloze" if notes and all(CLOZE_DELETION.search(note.front) for note in notes) else "basic"


def _csv_deck(text: str) -> ExistingDeck:
    """Our CSV or Anki's CSV export: `#key:value` headers, then rows of fields."""
    headers: dict[str, str] = {}
    lines = text.splitlines()
    while lines and lines[0].startswith("#"):
        key, _, value = lines.pop(0)[1:].partition(":")
        headers[key.strip().lower()] = value.strip()
    raw = headers.get("separator", "comma")
    separator = _SEPARATORS.get(raw.lower(), raw[:1] or ",")
    is_html = headers.get("html", "false").lower() == "true"

    def column(name: str) -> int | None:  # Anki numbers columns from 1
        value = headers.get(f"{name} column", "")
        return int(value) - 1 if value.isdigit() and int(value) > 0 else None

    special = {"guid": column("guid"), "notetype": column("notetype"), "deck": column("deck")}
    tags = column("tags")
    notes, names, decks = [], [headers.get("notetype", "")], [headers.get("deck", "")]
    for row in csv.reader(lines, delimiter=separator):
        if len(notes) >= MAX_NOTES:
            raise DeckFileError(f"the deck has more than {MAX_NOTES:,} notes; split it first")
        taken = {index for index in (*special.values(), tags) if index is not None}
        fields = [cell for index, cell in enumerate(row) if index not in taken]
        pick = {
            key: row[index] if index is not None and index < len(row) else ""
            for key, index in special.items()
        }
        names.append(pick["notetype"])
        decks.append(pick["deck"])
        note = _note(fields, pick["guid"], is_html)
        if note is not None:
            notes.append(note)
    if not notes:
        raise DeckFileError("the file holds no notes (expected a CSV exported by Anki or by this app)")
    name = next((deck for deck in decks if deck), "")
    return ExistingDeck(tuple(notes), _card_type(names, notes), name)


def _collection_bytes(data: bytes) -> bytes:
    """The SQLite collection inside an .apkg, read by name with a cap (never extracted)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise DeckFileError("the .apkg file is not a zip archive (is it an Anki package?)") from None
    with archive:
        entries = archive.infolist()
        if len(entries) > MAX_ZIP_ENTRIES:
            raise DeckFileError(f"the package has {len(entries):,} entries (at most {MAX_ZIP_ENTRIES:,})")
        names = {entry.filename: entry for entry in entries}
        entry = next((names[name] for name in COLLECTIONS if name in names), None)
        if entry is None:
            if "collection.anki21b" in names:
                raise DeckFileError(
                    "the package uses Anki's newest format only: export it again with "
                    "'Support older Anki versions' ticked, or export the notes as CSV"
                )
            raise DeckFileError("the package holds no Anki collection")
        if entry.file_size > MAX_COLLECTION_BYTES:
            raise DeckFileError(
                f"the collection is {entry.file_size:,} bytes unpacked (at most {MAX_COLLECTION_BYTES:,})"
            )
        try:
            with archive.open(entry) as member:
                content = member.read(MAX_COLLECTION_BYTES + 1)
        except (zipfile.BadZipFile, OSError, NotImplementedError, EOFError) as exc:
            raise DeckFileError(f"the package is damaged: {exc}") from None
    if len(content) > MAX_COLLECTION_BYTES:  # the entry lied about its size: a zip bomb
        raise DeckFileError(f"the collection unpacks to more than {MAX_COLLECTION_BYTES:,} bytes")
    if not content.startswith(_SQLITE_MAGIC):
        raise DeckFileError("the package's collection is not an SQLite database")
    return content


def _apkg_deck(data: bytes) -> ExistingDeck:
    """The notes of an .apkg package's collection, opened in memory and read only."""
    connection = sqlite3.connect(":memory:")
    try:
        connection.deserialize(_collection_bytes(data))
        connection.execute("PRAGMA trusted_schema = OFF")
        connection.execute("PRAGMA query_only = ON")
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"notes", "col"} <= tables:
            raise DeckFileError("the package's collection has no notes table")
        rows = connection.execute(f"SELECT guid, flds, mid FROM notes LIMIT {MAX_NOTES + 1}").fetchall()
        models, decks = connection.execute("SELECT models, decks FROM col LIMIT 1").fetchone() or ("{}", "{}")
    except sqlite3.DatabaseError as exc:
        raise DeckFileError(f"the package's collection cannot be read: {exc}") from None
    finally:
        connection.close()
    if len(rows) > MAX_NOTES:
        raise DeckFileError(f"the deck has more than {MAX_NOTES:,} notes; split it first")
    try:
        types = {str(key): value for key, value in json.loads(models or "{}").items()}
        deck_names = [value.get("name", "") for value in json.loads(decks or "{}").values()]
    except (ValueError, AttributeError):
        types, deck_names = {}, []
    notes = [note for guid, fields, _ in rows if (note := _note(str(fields).split("\x1f"), str(guid), True))]
    if not notes:
        raise DeckFileError("the package holds no notes")
    cloze = [
        "cloze"
        for _, _, mid in rows
        if isinstance(types.get(str(mid)), dict) and types[str(mid)].get("type") == 1  # Anki's cloze kind
    ]
    name = next((deck for deck in deck_names if deck and deck != "Default"), "")
    return ExistingDeck(tuple(notes), _card_type(cloze, notes), name)


def read_deck(filename: str, data: bytes) -> ExistingDeck:
    """The deck in an uploaded file (.csv, .txt or .apkg), or DeckFileError saying what is wrong."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise DeckFileError(f"the file is {len(data):,} bytes (at most {MAX_UPLOAD_BYTES:,})")
    if filename.lower().endswith(".apkg"):
        return _apkg_deck(data)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DeckFileError(
            "the file is not UTF-8 text (expected a CSV exported by Anki or by this app)"
        ) from None
    try:
        return _csv_deck(text)
    except csv.Error as exc:
        raise DeckFileError(f"the CSV cannot be read: {exc}") from None
