"""Study-card pieces of the Study cards page: the uploads read, the editable deck and the
candidates dropped."""

from __future__ import annotations

from typing import Any

import pandas as pd

from core.cards.anki import Card
from core.cards.decks import DeckFileError, ExistingDeck, read_deck
from core.cards.generation import CardRequestError, Rejection


def read_uploads(notes_file: Any, deck_file: Any, card_type: str) -> tuple[str, ExistingDeck | None]:
    """The notes file's text and the deck to grow; CardRequestError saying why one cannot be used."""
    try:
        text = notes_file.getvalue().decode("utf-8-sig") if notes_file is not None else ""
    except UnicodeDecodeError:
        raise CardRequestError(
            {f"notes file {notes_file.name}": "is not UTF-8 text; paste the notes instead"}
        ) from None
    try:
        grown = read_deck(deck_file.name, deck_file.getvalue()) if deck_file else None
    except DeckFileError as exc:
        raise CardRequestError({f"deck {deck_file.name}": str(exc)}) from None
    if grown is not None and grown.card_type != card_type:
        raise CardRequestError(
            {f"deck {deck_file.name}": f"holds {grown.card_type} notes: choose that card type to grow it"}
        )
    return text, grown


def cards_frame(cards: list[Card]) -> pd.DataFrame:
    """The deck as an editable table: front and back."""
    return pd.DataFrame({"front": [c.front for c in cards], "back": [c.back for c in cards]})


def frame_cards(frame: pd.DataFrame) -> list[Card]:
    """The cards in the edited table; rows left empty are dropped."""
    rows = frame.fillna("").astype(str).to_dict("records")
    return [
        Card(r["front"].strip(), r["back"].strip()) for r in rows if r["front"].strip() or r["back"].strip()
    ]


def rejections_frame(rejected: list[Rejection]) -> pd.DataFrame:
    """Every candidate that was not shown, with its attempt, its reason and the card it repeats."""
    return pd.DataFrame(
        {
            "attempt": [r.attempt for r in rejected],
            "why": [r.reason for r in rejected],
            "front": [r.front for r in rejected],
            "back": [r.back for r in rejected],
            "repeats": [r.repeats for r in rejected],
        }
    )
