"""The card rules (core.cards.rules), one by one, on the cards the issue saw pass: fronts that ask
nothing, backs that restate the front, near-duplicates, placeholder deletions, filler Extra fields,
runaway repeats and text copied from the prompt; and that the summary counts only cards that pass."""

import json

import pytest

from core.cards.anki import Card
from core.cards.generation import CardRequest, CardResult, parse_cards, rule_text
from core.cards.rules import (
    NEAR_DUPLICATE,
    asks_something,
    card_problem,
    duplicate_of,
    instruction_ngrams,
    restates,
    similarity,
)


@pytest.mark.parametrize(
    "front",
    [
        "What is the water cycle?",
        "In which year did the Western Roman Empire fall?",
        "The Roman Empire was built by whom?",
        "Name the three states of water.",
        "Define photosynthesis.",
    ],
)
def test_a_front_that_asks_or_prompts_recall_passes(front):
    assert asks_something(front)
    assert card_problem(Card(front, "Something else entirely."), "basic") is None


@pytest.mark.parametrize(
    "front",
    [
        "Photosynthesis is a process that involves plants.",  # seen in the issue
        "The water cycle",  # seen in the issue
        "The sun drives this process by heating the crust. 2?",  # a statement with a "?" glued on
        "The remainder, or what we call,?",
    ],
)
def test_a_front_that_asks_nothing_is_not_a_question(front):
    assert card_problem(Card(front, "Chlorophyll."), "basic") == "not a question"


@pytest.mark.parametrize(
    ("front", "back"),
    [
        ("What is the water cycle?", "The water cycle."),
        ("The Roman Empire was built by whom?", "The Roman Empire was built by"),
        ("Which gas do plants release, oxygen?", "Oxygen"),
        ("What is photosynthesis in plants?", "Photosynthesis in plants"),
    ],
)
def test_a_back_that_restates_the_front_is_dropped(front, back):
    assert restates(front, back)
    assert card_problem(Card(front, back), "basic") == "answer repeats the question"


def test_a_back_with_its_own_content_is_not_a_restatement():
    assert not restates("What is the water cycle?", "Water moving between sea, air and land.")
    assert not restates("What does a sponge absorb?", "sorb")  # a part of a word is not the answer


def test_exact_and_near_duplicates_are_found_and_different_questions_are_not():
    deck = [Card("What is the main source of energy for the water cycle?", "The sun.")]
    assert duplicate_of(
        Card("what is the MAIN source of energy, for the water cycle?", "x"), "basic", deck
    ) == (
        "duplicate",
        0,
    )
    near = Card("What is the main energy source for the water cycle?", "x")
    assert similarity(near.front, deck[0].front) >= NEAR_DUPLICATE
    assert duplicate_of(near, "basic", deck) == ("near-duplicate", 0)
    for other in (
        "What is the capital of Spain?",  # same frame, another fact
        "What happens during condensation in the water cycle?",
        "Where does most evaporation take place?",
    ):
        assert duplicate_of(Card(other, "x"), "basic", deck) is None
    assert (
        duplicate_of(
            Card("What is the capital of Spain?", "x"), "basic", [Card("What is the capital of France?", "y")]
        )
        is None
    )


def test_cloze_duplicates_compare_the_sentence_not_the_markers():
    deck = [Card("Plants release {{c1::oxygen}} during photosynthesis.", "")]
    assert duplicate_of(Card("Plants {{c1::release}} oxygen during photosynthesis.", ""), "cloze", deck) == (
        "duplicate",
        0,
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Water boils at {{c1:::1}} degrees.", "placeholder deletion"),  # the ":1"
        ("Water boils at {{c1::100}} degrees.", "placeholder deletion"),  # a digit hides nothing to learn
        ("The key idea here is {{c1::term}}.", "placeholder deletion"),
        ("The sun heats {{c1::the}} oceans.", "placeholder deletion"),  # a filler word
        ("{{c1::Evaporation}} matters.", "deletion is the whole sentence"),
        ("Plants release oxygen during photosynthesis.", "no cloze deletion"),
    ],
)
def test_a_cloze_deletion_must_hide_a_real_span(text, reason):
    assert card_problem(Card(text, ""), "cloze") == reason


def test_with_notes_a_cloze_deletion_must_be_a_span_of_the_notes():
    notes = "Water evaporates from the oceans and condenses into clouds."
    assert card_problem(Card("Water {{c1::evaporates}} from the oceans.", ""), "cloze", source=notes) is None
    assert (
        card_problem(Card("Water {{c1::sublimates}} from the oceans.", ""), "cloze", source=notes)
        == "deletion not in the notes"
    )


@pytest.mark.parametrize("extra", ["###", "...", "- - -", "#1"])
def test_an_extra_field_of_filler_is_rejected(extra):
    card = Card("The sun drives {{c1::evaporation}} of sea water.", extra)
    assert card_problem(card, "cloze") == "filler Extra"
    assert card_problem(Card(card.front, ""), "cloze") is None  # no Extra at all is fine
    assert card_problem(Card(card.front, "Heat turns liquid water into vapour."), "cloze") is None


@pytest.mark.parametrize(
    "card",
    [
        Card("The {{c1::sun}} heats the oceans.", "sunsunsunsunsun"),  # seen in the issue
        Card("What is very very very hot?", "Lava."),
        Card("What heats the ocean?", "The sun sun sun."),
    ],
)
def test_runs_of_a_repeated_token_are_rejected(card):
    kind = "cloze" if "{{c1::" in card.front else "basic"
    assert card_problem(card, kind) == "repeated token"


def test_text_copied_from_the_prompts_instructions_is_rejected():
    request = CardRequest(topic="the water cycle")
    copied = instruction_ngrams(rule_text(request, 5))
    echo = Card("What should you remember?", "Remember: each answer is short: one sentence or a few words.")
    assert card_problem(echo, "basic", copied=copied) == "copied the instructions"
    assert (
        card_problem(Card("What drives evaporation?", "Heat from the sun."), "basic", copied=copied) is None
    )
    assert "water" not in {word for gram in copied for word in gram}  # the topic is not an instruction


def test_every_dropped_card_keeps_its_reason_and_the_summary_counts_only_cards_that_passed():
    text = json.dumps(
        {
            "cards": [
                {"text": "Water boils at {{c1:::1}} degrees.", "extra": "###"},
                {"text": "The sun drives {{c1::evaporation}} of sea water.", "extra": "###"},
                {"text": "Clouds form when water vapour {{c1::condenses}}.", "extra": ""},
                {"text": "Clouds form when water vapour {{c1::condenses}} .", "extra": ""},
            ]
        }
    )
    cards, rejected = parse_cards(text, "cloze")
    assert cards == [Card("Clouds form when water vapour {{c1::condenses}}.", "")]
    assert [(r.front, r.reason) for r in rejected] == [
        ("Water boils at {{c1:::1}} degrees.", "placeholder deletion"),
        ("The sun drives {{c1::evaporation}} of sea water.", "filler Extra"),
        ("Clouds form when water vapour {{c1::condenses}} .", "duplicate"),
    ]
    result = CardResult(cards=cards, requested=4, rejected=rejected, attempts=1, seconds=2.0)
    assert result.summary() == (
        "1 of 4 cards in 1 attempt, 2.0 s; dropped 3 candidates "
        "(placeholder deletion: 1, filler Extra: 1, duplicate: 1)"
    )
