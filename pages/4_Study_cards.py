"""Study cards: a topic or notes become flashcards, checked, edited here and downloaded for Anki;
an uploaded deck grows by cards it does not have yet."""

import logging
from pathlib import Path

import streamlit as st

from core.cards.anki import CARD_TYPES
from core.cards.generation import (
    DIFFICULTIES,
    MAX_CARDS,
    CardRequest,
    CardRequestError,
    generate_cards,
    regenerate_card,
    validate_request,
)
from core.models.gguf import ModelError, ModelSlot
from core.models.sources import (
    ModelChoice,
    ResolvedModel,
    bundled_choice,
    falls_back,
    hub_choice,
    local_choice,
    resolve_model,
    run_choices,
)
from core.store.paths import runs_root
from ui.cards import (
    CLOZE_CAVEAT,
    cards_frame,
    deck_downloads,
    frame_cards,
    read_uploads,
    rejections_frame,
    show_problems,
    show_result,
)
from ui.owner import access_panel, is_owner
from ui.secrets import app_secrets
from ui.text import escape_markdown

LOG = logging.getLogger(__name__)
LOCAL_FILE = "A GGUF file on this machine..."

st.set_page_config(page_title="Study cards · PEFT Dashboard", page_icon="🧪", layout="wide")
access_panel()


@st.cache_resource
def model_slot() -> ModelSlot:
    """The process's one loaded model, shared by every session."""
    return ModelSlot()


@st.cache_data(ttl=600, show_spinner="Fetching the model...")
def resolved(choice: ModelChoice) -> ResolvedModel:
    """A model choice resolved to a file, remembered for 10 minutes (a Hub check per click is slow)."""
    return resolve_model(choice)


def start_generating() -> None:
    state.generate_pending = True  # the run this click starts writes the deck


st.title("Study cards")
st.caption(
    "A topic or your notes become flashcards for Anki, written by a GGUF model on this CPU and checked "
    "before you see them. Upload a deck to add only cards it does not have yet."
)

state = st.session_state
state.setdefault("card_version", 0)
busy = bool(state.pop("generate_pending", False))

choices = {c.label: c for c in [hub_choice(app_secrets()), bundled_choice(), *run_choices(runs_root())]}
model_column, path_column = st.columns(2)
model_label = model_column.selectbox(
    "Model",
    [*choices, *([LOCAL_FILE] if is_owner() else [])],  # any path on the server: the owner's only
    help="Without the Hub a cached copy or the bundled SmolLM2 model is used, and you are told so.",
)
local_path = (
    path_column.text_input("GGUF file path", placeholder="/path/to/model.gguf")
    if model_label == LOCAL_FILE
    else ""
)
card_type = st.radio(  # outside the form: the cloze notice below follows it at once
    "Card type",
    CARD_TYPES,
    horizontal=True,
    help="basic: question and answer; cloze: a sentence with a hidden term",
)
choice = None if model_label == LOCAL_FILE else choices[model_label]
if card_type == "cloze" and choice is not None and falls_back(choice) and not busy:
    st.info(CLOZE_CAVEAT)

with st.form("card_request"):
    topic = st.text_input("Topic", placeholder="e.g. photosynthesis", help="What the cards are about.")
    notes = st.text_area("Notes (optional)", height=140, help="Cards are made from these notes only.")
    upload = st.file_uploader("...or a notes file", type=["txt", "md"])
    left, right = st.columns(2)
    count = left.slider("Cards", 1, MAX_CARDS, 5)
    difficulty = right.selectbox("Difficulty", DIFFICULTIES)
    deck = st.text_input("Deck name", placeholder="Study cards: <topic>, or the uploaded deck's name")
    tags = st.text_input(
        "Tags", placeholder="biology, exam 1", help="Comma-separated; spaces become _ (Anki tags have none)"
    )
    existing_file = st.file_uploader(
        "Grow a deck (optional): our CSV, Anki's CSV export or an .apkg",
        type=["csv", "txt", "apkg"],
        help="Only cards the deck does not have are added; its notes keep their GUIDs, so Anki updates them.",
    )
    # Disabled while the deck is written; the run that ends the writing starts a new one to enable it.
    st.form_submit_button(
        "Generate", type="primary", disabled=busy, on_click=start_generating, key="generate"
    )
    progress_line = st.empty()  # above the fold, under the button


def write_deck() -> list[tuple[str, str]]:
    """The deck the form asks for, kept in the session state; the problems that stopped it."""
    try:
        file_text, grown = read_uploads(upload, existing_file, card_type)
        request = CardRequest(
            topic=topic,
            notes=(notes + "\n\n" + file_text).strip(),
            count=count,
            difficulty=difficulty,
            card_type=card_type,
            deck=deck or (grown.name if grown else ""),
            tags=tuple(tags.split(",")),
        )
        existing = list(grown.notes) if grown else []
        validate_request(request)
        source = resolved(choice or local_choice(local_path))
        progress_line.caption(f"Loading {escape_markdown(source.path.name)}...")
        model = model_slot().get(source.path)
        result = generate_cards(
            model,
            request,
            avoid=existing,
            on_progress=lambda text: progress_line.caption(escape_markdown(text)),
        )
    except (CardRequestError, ModelError) as exc:
        return list(getattr(exc, "problems", {"model": str(exc)}).items())
    state.update(
        cards=result.cards,
        existing=existing,
        request=request,
        result=result,
        notice=source.notice,
        bundled=source.choice.kind == "bundled",
        model_path=str(source.path),
        card_version=state.card_version + 1,
    )
    return []


if busy:
    # Said if another change on the page stops this run before the deck is written.
    state.card_problems = [("generate", "stopped by another change on the page before the deck was written")]
    try:
        state.card_problems = write_deck()
    except Exception as exc:  # a defect: said like any problem, so that Generate comes back
        LOG.exception("writing a deck failed")
        state.card_problems = [
            ("generate", f"failed ({type(exc).__name__}: {exc}); the server log has the details")
        ]
    st.rerun()  # Generate is enabled again; the deck or the problems show from the session state
show_problems(state.get("card_problems", []), earlier_deck="cards" in state)

if "cards" in state:
    request, result, existing = state.request, state.result, state.existing
    show_result(result, state.notice, state.bundled and request.card_type == "cloze")
    skipped = [r for r in result.rejected if r.reason == "already in the deck"]
    if existing:
        st.caption(
            f"Growing a deck of {len(existing)} notes: the downloads hold them unchanged (same GUIDs) "
            f"and the new cards below. {len(skipped)} candidate(s) skipped as already in the deck"
            + (":" if skipped else ".")
        )
        for rejection in skipped:
            st.caption(f"- {escape_markdown(rejection.front)} (like: {escape_markdown(rejection.repeats)})")
    edited = st.data_editor(
        cards_frame(state.cards),
        num_rows="dynamic",
        width="stretch",
        key=f"cards_{state.card_version}",
        column_config={
            "front": st.column_config.TextColumn(
                "Front" if request.card_type == "basic" else "Text (with {{c1::...}})"
            ),
            "back": st.column_config.TextColumn("Back" if request.card_type == "basic" else "Extra"),
        },
    )
    cards = frame_cards(edited)

    again_column, button_column = st.columns([3, 1])
    number = again_column.selectbox("Regenerate card", range(1, len(cards) + 1), disabled=not cards)
    if button_column.button("Regenerate", disabled=not cards):
        state.card_problems = []  # the problems said were the last Generate's
        try:  # the new card must differ from every card, the one it replaces included
            replacement, single = regenerate_card(
                result, request, existing + cards, lambda: model_slot().get(Path(state.model_path))
            )
        except (CardRequestError, ModelError, OSError) as exc:
            st.error(escape_markdown(exc))
        else:
            if replacement is not None:
                cards[number - 1] = replacement
                state.update(cards=cards, card_version=state.card_version + 1)
                st.rerun()
            st.warning(f"No new card: {escape_markdown(single.summary())}.")

    with st.expander(f"Raw model output and the {len(result.rejected)} candidate(s) dropped"):
        if result.rejected:
            st.dataframe(rejections_frame(result.rejected), width="stretch", hide_index=True)
        for index, raw in enumerate(result.raw_outputs, 1):
            st.caption(f"Reply {index}")
            st.code(raw, language="json")

    deck_downloads(existing + cards, request)
