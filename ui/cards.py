"""Study-card pieces of the Study cards page: the uploads read, the problems and result said, the
editable deck, the candidates dropped and the downloads."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
import streamlit as st

from core.cards.anki import Card, apkg_bytes, cards_to_csv
from core.cards.decks import DeckFileError, ExistingDeck, read_deck
from core.cards.generation import CardRequest, CardRequestError, CardResult, Rejection
from ui.text import escape_markdown

CLOZE_CAVEAT = (
    "The bundled SmolLM2 model rarely manages cloze cards: expect few or none. A larger model does better."
)


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


def show_problems(problems: list[tuple[str, str]], earlier_deck: bool) -> None:
    """What stopped the last Generate, field by field; said until the next one."""
    for field, problem in problems:
        st.error(f"{escape_markdown(field[:1].upper() + field[1:])}: {escape_markdown(problem)}")
    if problems and earlier_deck:
        st.caption("The deck below is the one written before.")


def show_result(result: CardResult, notice: str | None, bundled_cloze: bool) -> None:
    """The result's one summary line, and what the user must know about the model."""
    if notice:
        st.warning(escape_markdown(notice))
    if bundled_cloze:
        st.info(CLOZE_CAVEAT)
    summary = escape_markdown(result.summary())
    if len(result.cards) < result.requested:
        st.warning(f"Made {len(result.cards)} of {result.requested} cards that pass the checks: {summary}.")
    else:
        st.success(summary)


def deck_downloads(cards: list[Card], request: CardRequest) -> None:
    """The deck as Anki CSV and .apkg download buttons, or why it cannot be exported yet."""
    try:
        csv_text = cards_to_csv(cards, request.deck_name, request.card_type, request.tags)
        package = apkg_bytes(cards, request.deck_name, request.card_type, request.tags)
    except ValueError as exc:
        st.error(f"Cannot export the deck yet: {escape_markdown(exc)}")
        return
    csv_column, apkg_column = st.columns(2)
    name = re.sub(r"[^\w-]+", "_", request.deck_name).strip("_") or "study_cards"
    csv_column.download_button("Download CSV for Anki", csv_text, file_name=f"{name}.csv", mime="text/csv")
    apkg_column.download_button(
        "Download Anki package (.apkg)", package, file_name=f"{name}.apkg", mime="application/octet-stream"
    )
