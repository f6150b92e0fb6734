"""Study-card tables for the Study cards page: the editable deck and the candidates dropped."""

from __future__ import annotations

import pandas as pd

from core.cards.anki import Card
from core.cards.generation import Rejection


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
