"""Study card generation: validation of crafted model replies, prompts, limits, and real
generation with the bundled SmolLM2 model in llama.cpp."""

import json

import pytest

from core.cards.anki import Card
from core.cards.generation import (
    MAX_ATTEMPTS,
    CardRequest,
    CardRequestError,
    build_messages,
    card_schema,
    check_notes_fit,
    generate_cards,
    is_grounded,
    parse_cards,
    validate_request,
)
from core.models.gguf import ChatResult, GgufModel, ModelError
from core.models.sources import bundled_path


def reply(*cards: dict) -> str:
    return json.dumps({"cards": list(cards)})


def qa(question: str, answer: str) -> dict:
    return {"question": question, "answer": answer}


def test_valid_cards_pass_and_bad_ones_are_dropped_by_reason():
    text = reply(
        qa("What gas do plants take in?", "Carbon dioxide."),
        qa("What gas do plants take in?", "CO2."),  # duplicate
        qa("what GAS do plants take in", "Carbon dioxide"),  # duplicate once normalized
        qa("Which pigment makes leaves green, chlorophyll?", "Chlorophyll"),  # answers itself
        qa("Where does photosynthesis happen?", "   "),  # empty
        qa("2. Which organelle holds chlorophyll?", "The chloroplast."),  # numbering stripped
        {"question": 3, "answer": "x"},
        "not a card",
    )
    cards, dropped = parse_cards(text, "basic")
    assert cards == [
        Card("What gas do plants take in?", "Carbon dioxide."),
        Card("Which organelle holds chlorophyll?", "The chloroplast."),
    ]
    assert dropped == {
        "duplicate": 2,
        "answer in the question": 1,
        "empty field": 1,
        "not text": 1,
        "not a card object": 1,
    }


def test_cards_already_in_the_deck_count_as_duplicates():
    cards, dropped = parse_cards(
        reply(qa("What is ATP?", "The cell's energy currency.")),
        "basic",
        existing=[Card("What is ATP ?", "Energy.")],
    )
    assert cards == [] and dropped == {"duplicate": 1}


@pytest.mark.parametrize(
    ("text", "expected_cards", "reason"),
    [
        ("", 0, "unreadable reply"),
        ("I cannot help with that.", 0, "unreadable reply"),
        ('{"cards": "none"}', 0, "JSON without a cards list"),
        ('{"cards": [{"question": "What is H2O?", "answer": "Water."}, {"question": "What is Na', 1, None),
        ("Q: What is H2O?\nA: Water.\n\nQ: What is NaCl?\nA: Table salt.", 2, None),
        ('[{"question": "What is H2O?", "answer": "Water."}]', 1, None),
    ],
)
def test_malformed_replies_never_raise_and_complete_cards_are_salvaged(text, expected_cards, reason):
    cards, dropped = parse_cards(text, "basic")
    assert len(cards) == expected_cards
    assert (reason in dropped) if reason else not dropped


def test_cloze_cards_need_a_real_deletion():
    text = json.dumps(
        {
            "cards": [
                {"text": "Plants release {{c1::oxygen}} during photosynthesis.", "extra": "As a by-product."},
                {"text": "Plants release oxygen during photosynthesis.", "extra": ""},
                {"text": "The key is {{c1::term}} here.", "extra": ""},
                {"text": "Water boils at {{c1::100}} degrees.", "extra": ""},
                {"text": "Leaves are {{c2::green}} because of {{c1::chlorophyll}}.", "extra": ""},
            ]
        }
    )
    cards, dropped = parse_cards(text, "cloze")
    assert [c.front for c in cards] == [
        "Plants release {{c1::oxygen}} during photosynthesis.",
        "Water boils at {{c1::100}} degrees.",
        "Leaves are {{c2::green}} because of {{c1::chlorophyll}}.",
    ]
    assert dropped == {"no cloze deletion": 1, "copied the rules' example": 1}


def test_odd_replies_are_dropped_not_raised():
    cards, dropped = parse_cards(
        reply(
            qa("Which family do big cats such as lions belong to?", "Cat"),  # "cat" only inside "cats": fine
            qa("What does a sponge absorb?", "sorb"),  # inside a word, not the answer repeated
            qa("........", "Dots."),
            qa("Why?", "Because."),
        ),
        "basic",
    )
    assert [c.back for c in cards] == ["Cat", "sorb"]
    assert dropped == {"empty field": 1, "too short": 1}
    assert parse_cards("[" * 5000, "basic") == ([], {"unreadable reply": 1})


def test_a_cut_off_answer_is_trimmed_to_its_last_sentence():
    long_answer = "Water evaporates. It condenses into clouds. It falls as rain and then " + "flows " * 30
    cards, _ = parse_cards(reply(qa("How does the water cycle work?", long_answer[:200])), "basic")
    assert cards[0].back == "Water evaporates. It condenses into clouds."


def test_the_schema_bounds_every_field_and_the_count():
    schema = card_schema(4, "basic")
    cards = schema["properties"]["cards"]
    assert (cards["minItems"], cards["maxItems"]) == (4, 4)
    question = cards["items"]["properties"]["question"]
    assert question["minLength"] >= 8 and question["maxLength"] <= 200
    cloze = card_schema(2, "cloze")["properties"]["cards"]["items"]["properties"]["text"]
    assert "{{c1::" in cloze["pattern"].replace("\\", "")


def test_the_prompt_states_the_rules_twice_and_grounds_notes():
    request = CardRequest(topic="cells", notes="Mitochondria make ATP.", count=3, difficulty="advanced")
    system, user = build_messages(request, 3, avoid=["What is ATP?"])
    assert "exactly 3 cards" in system["content"] and "exactly 3 cards" in user["content"]
    assert "use only facts stated in the notes" in user["content"]
    assert "Mitochondria make ATP." in user["content"] and "Focus on: cells" in user["content"]
    assert "Do not repeat these: What is ATP?" in user["content"] and "advanced" in user["content"]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (CardRequest(), "topic"),
        (CardRequest(topic="   ", notes="\n"), "topic"),
        (CardRequest(topic="x" * 301), "topic"),
        (CardRequest(topic="cells", count=0), "count"),
        (CardRequest(topic="cells", count=21), "count"),
        (CardRequest(topic="cells", difficulty="expert"), "difficulty"),
        (CardRequest(topic="cells", card_type="reverse"), "card_type"),
        (CardRequest(topic="cells", deck="d" * 101), "deck"),
    ],
)
def test_bad_requests_are_refused_by_field(request_, field):
    with pytest.raises(CardRequestError) as caught:
        validate_request(request_)
    assert field in caught.value.problems


def test_grounding_counts_answers_whose_words_come_from_the_notes():
    notes = "Mitochondria produce ATP through cellular respiration. They carry their own DNA."
    assert is_grounded(
        Card("What do mitochondria produce?", "ATP, through cellular respiration."), "basic", notes
    )
    assert not is_grounded(Card("Who discovered mitochondria?", "Albert Kölliker in 1857."), "basic", notes)
    assert is_grounded(Card("Mitochondria carry their own {{c1::DNA}}.", ""), "cloze", notes)


class ScriptedModel:
    """Stands in for llama.cpp where a test needs exact replies; real generation is tested below."""

    def __init__(self, replies: list[str], context: int = 4096):
        self.replies, self.prompts, self.context = list(replies), [], context

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def chat(self, messages, **options) -> ChatResult:
        self.prompts.append((messages, options))
        prompt = sum(self.count_tokens(m["content"]) for m in messages)
        if prompt + options["max_tokens"] > self.context:
            raise ModelError(f"Requested tokens ({prompt + options['max_tokens']}) exceed context window")
        return ChatResult(self.replies.pop(0), 10, 0.01)


def test_a_long_deck_to_avoid_is_cut_to_fit_the_context_and_errors_keep_the_cards_made():
    deck = [Card(f"What is fact number {n} about cells?", "A fact.") for n in range(300)]
    model = ScriptedModel([reply(qa("What is a ribosome?", "Where proteins are made."))], context=1200)
    result = generate_cards(model, CardRequest(topic="cells", count=1), avoid=deck)
    assert [c.front for c in result.cards] == ["What is a ribosome?"] and result.error is None
    listed = model.prompts[0][0][1]["content"]
    assert "fact number 299" in listed and "fact number 0 " not in listed  # the most recent are kept

    class Failing(ScriptedModel):
        def chat(self, messages, **options):
            if self.prompts:
                raise ModelError("llama.cpp could not answer: out of memory")
            return super().chat(messages, **options)

    failing = Failing([reply(qa("What is a cell?", "The unit of life."))])
    result = generate_cards(failing, CardRequest(topic="cells", count=3))
    assert [c.front for c in result.cards] == ["What is a cell?"]
    assert result.error == "llama.cpp could not answer: out of memory" and "stopped early" in result.summary()


def test_missing_cards_are_asked_for_again_within_the_attempt_budget():
    model = ScriptedModel(
        [
            reply(qa("What is a cell?", "The unit of life."), qa("What is a cell?", "Dup.")),
            "garbage",
            reply(
                qa("What is DNA?", "Genetic material."),
                qa("What is RNA?", "A messenger."),
                qa("Is there an extra card?", "Yes."),
            ),
        ]
    )
    result = generate_cards(model, CardRequest(topic="cells", count=3))
    assert [c.front for c in result.cards] == ["What is a cell?", "What is DNA?", "What is RNA?"]
    assert result.attempts == 3 == MAX_ATTEMPTS and len(result.raw_outputs) == 3
    assert result.dropped == {"duplicate": 1, "unreadable reply": 1, "more than asked": 1}
    second_messages, second_options = model.prompts[1]
    assert second_options["schema"]["properties"]["cards"]["minItems"] == 2
    assert "Do not repeat these: What is a cell?" in second_messages[1]["content"]
    assert "2 of 3" not in result.summary() and "3 of 3 cards in 3 attempt(s)" in result.summary()


def test_the_budget_is_bounded_when_the_model_never_delivers():
    model = ScriptedModel(["nothing"] * MAX_ATTEMPTS)
    result = generate_cards(model, CardRequest(topic="cells", count=2))
    assert result.cards == [] and result.attempts == MAX_ATTEMPTS and model.replies == []


@pytest.fixture(scope="module")
def smollm() -> GgufModel:
    return GgufModel(bundled_path())


def test_notes_too_long_for_the_context_are_refused_with_how_much_fits(smollm):
    notes = "Cells are the basic unit of life. " * 800
    with pytest.raises(CardRequestError) as caught:
        check_notes_fit(smollm, CardRequest(notes=notes, count=5))
    message = caught.value.problems["notes"]
    assert "tokens but only" in message and "fit this model's context (4096 tokens" in message
    check_notes_fit(smollm, CardRequest(notes=notes[:2000], count=5))


def test_real_generation_with_the_bundled_model_gives_valid_distinct_cards(smollm):
    result = generate_cards(smollm, CardRequest(topic="the water cycle", count=4), seed=7)
    assert len(result.cards) == 4
    for raw in result.raw_outputs:
        json.loads(raw)  # grammar-constrained: always valid JSON
    fronts = [card.front.lower() for card in result.cards]
    assert len(set(fronts)) == 4 and all(card.front and card.back for card in result.cards)
    assert result.tokens > 0 and result.seconds > 0


def test_real_generation_from_notes_reports_grounding(smollm):
    notes = (
        "The water cycle moves water between the oceans, the air and the land. Water evaporates from the "
        "oceans, condenses into clouds and falls as precipitation such as rain or snow."
    )
    result = generate_cards(smollm, CardRequest(notes=notes, count=3), seed=3)
    assert result.cards and result.grounded is not None
    assert (
        f"{result.grounded} of {len(result.cards)} answers share their content with the notes"
        in result.summary()
    )
    assert "use only facts stated in the notes" in build_messages(CardRequest(notes=notes), 3)[1]["content"]


def test_real_cloze_generation_is_held_to_the_cloze_grammar(smollm):
    result = generate_cards(smollm, CardRequest(topic="volcanoes", count=2, card_type="cloze"), seed=2)
    assert result.raw_outputs
    for raw in result.raw_outputs:
        texts = [card["text"] for card in json.loads(raw)["cards"]]
        assert len(texts) <= 2 and all("{{c1::" in text and "}}" in text for text in texts)
    assert all("{{c1::" in card.front for card in result.cards)
